#!/usr/bin/env bash
# Everything CI checks, from a fresh Debian machine (root): installs what is
# missing, builds the test bed, then lints, unit-tests, tests the reference
# app, builds and installs the collection, and runs every Molecule scenario.
#
#   scripts/test.sh                 all stages
#   scripts/test.sh lint unit       only these stages
#   VMSTACK_SCENARIOS="docker" scripts/test.sh molecule
#
# The scenarios in VMSTACK_LOWEST_SCENARIOS (default: harden nginx) run with
# the lowest ansible-core and collections the collection declares
# (tests/lowest); the others, stack included, with requirements-dev.txt.
set -Eeuo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

LOWEST_SCENARIOS=${VMSTACK_LOWEST_SCENARIOS-harden nginx}

setup() { host_packages postgresql redis-server prometheus prometheus-alertmanager && tooling && { [ -z "$LOWEST_SCENARIOS" ] || lowest_tooling; }; }

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

# One scenario: `molecule test`, its output through phase_times.py, which
# times each action for the report (build/timings/SCENARIO.json). Its stdin
# is its own /dev/null: while an ssh client that inherited stdin runs, the
# open file is non-blocking, and an ansible-playbook sharing it (the other
# lane's scenario) refuses to start.
molecule_one() {
  local run=()
  if grep -qwF -- "$1" <<<"$LOWEST_SCENARIOS"; then
    run=(with_lowest)
    echo "($1 runs with the lowest declared dependencies: $(with_lowest ansible --version | sed -n 1p))"
  fi
  "${run[@]}" molecule test -s "$1" </dev/null 2>&1 | python3 tests/bed/phase_times.py record "$ROOT/build/timings/$1.json"
}

# The scenarios, longest first (what runs in parallel lanes starts with the
# scenario that would otherwise finish last).
scenario_order() {
  local known=(stack multihost supervisor monitoring app harden nginx docker) s
  local all
  all=$(find molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' | xargs -n1 basename | sort)
  for s in "${known[@]}"; do grep -qx "$s" <<<"$all" && echo "$s"; done
  grep -vxF -f <(printf '%s\n' "${known[@]}") <<<"$all" || true
}

# Two scenarios at a time by default (their instance names differ; on two
# cores this took the wall time of stack + harden + nginx from 1479 s one
# after another to 1050 s, docs/benchmarks.md); VMSTACK_JOBS=1 runs them one
# by one, as the per-scenario budgets are measured. Each scenario's output
# is printed whole when it ends.
molecule_all() {
  local scenarios=${VMSTACK_SCENARIOS:-} jobs=${VMSTACK_JOBS:-2} s rc=0 queue lane
  [ -n "$scenarios" ] || scenarios=$(scenario_order)
  rm -rf "$ROOT/build/timings"
  if [ "$jobs" -le 1 ]; then
    for s in $scenarios; do stage "molecule:$s" molecule_one "$s" || rc=1; done
    return $rc
  fi
  queue=$(mktemp -d)
  printf "%s\n" $scenarios >"$queue/todo" && : >"$queue/results"
  for lane in $(seq "$jobs"); do
    (
      while :; do
        s=$(flock "$queue/todo" sh -c 'head -1 "$1" && sed -i 1d "$1"' _ "$queue/todo")
        [ -n "$s" ] || break
        start=$(date +%s)
        if molecule_one "$s" >"$queue/$s.log" 2>&1; then r=0; else r=$?; fi
        secs=$(( $(date +%s) - start ))
        {
          flock 9
          say "stage molecule:$s (ran in lane $lane)"
          cat "$queue/$s.log"
          printf '=== stage molecule:%s: %s in %ss\n' "$s" "$([ "$r" = 0 ] && echo passed || echo "FAILED (rc=$r)")" "$secs"
          echo "molecule:$s $secs $r" >>"$queue/results"
        } 9>"$queue/print.lock"
      done
    ) &
  done
  wait
  while read -r s secs r; do
    stage_record "$s" "$secs" "$r"
    [ "$r" = 0 ] || rc=1
  done <"$queue/results"
  rm -rf "$queue"
  return $rc
}

all_stages=(setup bed lint unit app collection molecule)
selected=("$@")
[ ${#selected[@]} -gt 0 ] || selected=("${all_stages[@]}")
[ "${selected[0]}" = setup ] || setup >/dev/null   # tooling on PATH for partial runs

# The test bed builds in the background while the stages that do not need
# it (lint, unit, app, collection) run; Molecule waits for it. Its output is
# printed whole when it ends.
bed_dir=
bed_start() {
  bed_dir=$(mktemp -d)
  (
    start=$(date +%s)
    if bed >"$bed_dir/log" 2>&1; then r=0; else r=$?; fi
    echo "$(( $(date +%s) - start )) $r" >"$bed_dir/result"
  ) &
  echo "$!" >"$bed_dir/pid"
  say "stage bed (started in the background)"
}
bed_join() {
  local secs r
  [ -n "$bed_dir" ] || return 0
  wait "$(cat "$bed_dir/pid")" || true
  read -r secs r <"$bed_dir/result" || { secs=0; r=1; }
  say "stage bed (ran in the background)"
  cat "$bed_dir/log"
  printf '=== stage bed: %s in %ss\n' "$([ "$r" = 0 ] && echo passed || echo "FAILED (rc=$r)")" "$secs"
  stage_record bed "$secs" "$r"
  rm -rf "$bed_dir" && bed_dir=
  return "$r"
}

overall=0
for s in "${selected[@]}"; do
  case $s in
    bed) if [ "$s" != "${selected[-1]}" ] && [ "${VMSTACK_BED_BACKGROUND:-1}" = 1 ]; then bed_start
         else stage bed bed || overall=1; fi ;;
    molecule) bed_join || { overall=1; break; }   # nothing on a failed test bed can pass
              molecule_all || overall=1 ;;
    setup|lint|unit|app|collection) stage "$s" "$s" || overall=1 ;;
    *) echo "unknown stage: $s (one of: ${all_stages[*]})" >&2; exit 2 ;;
  esac
  # Nothing after a failed set-up or test bed can pass.
  if [ $overall != 0 ] && { [ "$s" = setup ] || [ "$s" = bed ]; }; then break; fi
done
bed_join || overall=1
stage_report
[ -d build/timings ] && python3 tests/bed/phase_times.py report build/timings
[ $overall = 0 ]
