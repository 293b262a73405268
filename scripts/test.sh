#!/usr/bin/env bash
# Everything CI checks, from a fresh Debian machine (root): installs what is
# missing, builds the test bed, then lints, unit-tests, tests the reference
# app, builds and installs the collection, and runs every Molecule scenario.
#
#   scripts/test.sh                 all stages
#   scripts/test.sh lint unit       only these stages
#   VMSTACK_SCENARIOS="docker" scripts/test.sh molecule
set -Eeuo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

setup() { host_packages postgresql redis-server && tooling; }

# Stage bodies run under `if` (errexit is off there): chain with && or
# collect the status explicitly.
lint() {
  local rc=0
  yamllint -s . || rc=1
  ansible-lint --offline -q || rc=1
  return $rc
}

unit() { pytest -c tests/pytest.ini -q tests/unit; }

app() {
  local env_lines venv=examples/agent-app/.venv
  env_lines=$(bash examples/agent-app/scripts/test-services.sh | grep '^export ') &&
    eval "$env_lines" &&
    { [ -x "$venv/bin/pytest" ] || python3 -m venv "$venv"; } &&
    "$venv/bin/pip" install -q --disable-pip-version-check \
      -e examples/agent-app -r examples/agent-app/requirements-test.txt &&
    (cd examples/agent-app && .venv/bin/pytest -q tests)
}

bed() { bash tests/bed/testbed.sh all; }

collection() { pytest -c tests/pytest.ini -q tests/integration; }

molecule_all() {
  local scenarios=${VMSTACK_SCENARIOS:-} s rc=0
  if [ -z "$scenarios" ]; then
    scenarios=$(find molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' | xargs -n1 basename | sort)
  fi
  for s in $scenarios; do
    stage "molecule:$s" molecule test -s "$s" || rc=1
  done
  return $rc
}

all_stages=(setup lint unit app bed collection molecule)
selected=("$@")
[ ${#selected[@]} -gt 0 ] || selected=("${all_stages[@]}")
[ "${selected[0]}" = setup ] || setup >/dev/null   # tooling on PATH for partial runs

overall=0
for s in "${selected[@]}"; do
  case $s in
    molecule) molecule_all || overall=1 ;;
    setup|lint|unit|app|bed|collection) stage "$s" "$s" || overall=1 ;;
    *) echo "unknown stage: $s (one of: ${all_stages[*]})" >&2; exit 2 ;;
  esac
  # Nothing after a failed set-up or test bed can pass.
  if [ $overall != 0 ] && { [ "$s" = setup ] || [ "$s" = bed ]; }; then break; fi
done
stage_report && [ $overall = 0 ]
