# Shared by scripts/test.sh and scripts/demo.sh: set-up on a fresh Debian
# machine (root) and stage timing. Source it; do not run it.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VMSTACK_VENV:-$ROOT/.venv}
export VMSTACK_IMAGE_DIR=${VMSTACK_IMAGE_DIR:-$ROOT/build/images}
export ANSIBLE_COLLECTIONS_PATH=$ROOT/tests/collections
export ANSIBLE_FORCE_COLOR=${ANSIBLE_FORCE_COLOR:-0}
export PY_COLORS=${PY_COLORS:-0}

declare -a __stage_names=() __stage_secs=() __stage_status=()

say() { printf '\n=== %s [%s]\n' "$*" "$(date +%T)"; }

# stage NAME CMD...: run CMD, record its duration and outcome, keep going.
stage() {
  local name=$1 start rc; shift
  say "stage $name"
  start=$(date +%s)
  if "$@"; then rc=0; else rc=$?; fi
  __stage_names+=("$name"); __stage_secs+=($(( $(date +%s) - start ))); __stage_status+=("$rc")
  printf '=== stage %s: %s in %ss\n' "$name" "$([ "$rc" = 0 ] && echo passed || echo "FAILED (rc=$rc)")" "${__stage_secs[-1]}"
  return "$rc"
}

# stage_record NAME SECONDS RC: a stage that ran elsewhere (a parallel lane).
stage_record() { __stage_names+=("$1"); __stage_secs+=("$2"); __stage_status+=("$3"); }

stage_report() {
  local i failed=0 total=0
  printf '\n%-14s %8s  %s\n' stage seconds result
  for i in "${!__stage_names[@]}"; do
    printf '%-14s %8s  %s\n' "${__stage_names[$i]}" "${__stage_secs[$i]}" \
      "$([ "${__stage_status[$i]}" = 0 ] && echo passed || echo FAILED)"
    total=$(( total + __stage_secs[i] ))
    [ "${__stage_status[$i]}" = 0 ] || failed=$(( failed + 1 ))
  done
  printf '%-14s %8s\n' total "$total"
  printf 'stages: %d passed, %d failed\n' $(( ${#__stage_names[@]} - failed )) "$failed"
  [ "$failed" = 0 ]
}

# Debian packages the host needs (idempotent: installs only what is missing).
host_packages() {
  local want=(python3-venv docker.io debootstrap busybox-static openssh-client "$@") missing=() p
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || { echo "need root to install: ${missing[*]}" >&2; return 1; }
  apt-get update -qq || return 1
  # Their daemons are not started here (policy-rc.d 101: "action forbidden"):
  # the tests start what they need themselves.
  local policy=/usr/sbin/policy-rc.d own_policy=0 rc=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=1
  [ "$own_policy" = 0 ] || rm -f "$policy"
  return $rc
}

# pip, quiet, less its notes about this machine's missing local indexes.
quiet_pip() {
  "$1" "${@:2}" -q --disable-pip-version-check 2>&1 | { grep -v "neither a file nor a directory" || true; } >&2
  return "${PIPESTATUS[0]}"
}

# The controller tooling, pinned, in a virtualenv.
tooling() {
  local stamp="$VENV/.requirements.sha256" want
  want=$(sha256sum "$ROOT/requirements-dev.txt" | cut -d' ' -f1)
  if [ ! -x "$VENV/bin/ansible-playbook" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    python3 -m venv "$VENV" &&
      quiet_pip "$VENV/bin/pip" install -r "$ROOT/requirements-dev.txt" &&
      echo "$want" >"$stamp" || return 1
  fi
  export PATH="$VENV/bin:$PATH"
  ansible --version | sed -n 1p
}

# The lowest declared dependencies (tests/lowest): ansible-core in its own
# virtualenv, each collection at its floor, extracted from the `ansible`
# package on PyPI that bundles that exact version (Galaxy is out of reach).
LOWEST=$ROOT/build/lowest
lowest_tooling() {
  local stamp="$LOWEST/.recipe.sha256" want name version bundle
  want=$(cat "$ROOT/tests/lowest/requirements.txt" "$ROOT/tests/lowest/collections.txt" | sha256sum | cut -d' ' -f1)
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
  rm -rf "$LOWEST" && mkdir -p "$LOWEST/wheels" "$LOWEST/collections" &&
    python3 -m venv "$LOWEST/venv" &&
    quiet_pip "$LOWEST/venv/bin/pip" install -r "$ROOT/tests/lowest/requirements.txt" || return 1
  while read -r name version bundle; do
    case $name in ''|'#'*) continue ;; esac
    [ -s "$LOWEST/wheels/ansible-$bundle-py3-none-any.whl" ] ||
      quiet_pip "$LOWEST/venv/bin/pip" download --no-deps -d "$LOWEST/wheels" "ansible==$bundle" || return 1
    python3 - "$LOWEST/wheels/ansible-$bundle-py3-none-any.whl" "$name" "$version" "$LOWEST/collections" <<'PY' || return 1
import json, sys, zipfile
wheel, name, version, dest = sys.argv[1:]
prefix = "ansible_collections/" + name.replace(".", "/") + "/"
with zipfile.ZipFile(wheel) as bundle:
    got = json.loads(bundle.read(prefix + "MANIFEST.json"))["collection_info"]["version"]
    if got != version:
        sys.exit(f"{wheel} bundles {name} {got}, not {version}")
    bundle.extractall(dest, [n for n in bundle.namelist() if n.startswith(prefix)])
PY
  done <"$ROOT/tests/lowest/collections.txt"
  echo "$want" >"$stamp"
}

# Run CMD with the lowest tooling and collections first on the paths.
with_lowest() {
  PATH="$LOWEST/venv/bin:$PATH" ANSIBLE_COLLECTIONS_PATH="$ROOT/tests/collections:$LOWEST/collections" \
    VMSTACK_LOWEST_COLLECTIONS=":$LOWEST/collections" "$@"
}
