#!/usr/bin/env bash
# The test bed: everything Molecule scenarios and the local demo need on a
# fresh Debian machine with root, built here because no registry is reachable.
#
#   tests/bed/testbed.sh engine     install docker.io/debootstrap if missing, start dockerd
#   tests/bed/testbed.sh platforms  + systemd platform images (Debian 12, 13) via debootstrap,
#                                   bare and seeded with the packages the role scenarios install
#   tests/bed/testbed.sh fixtures   + stack images (busybox, postgres, redis, agent-app), saved as tarballs
#   tests/bed/testbed.sh wheels     wheelhouses of agent-app 0.1.0 and 0.2.0 with their dependencies
#                                   for Debian 12's Python 3.11 and Debian 13's 3.13 (Supervisor runtime)
#   tests/bed/testbed.sh all        all of the above (default)
#
# Images are cached by tag and by a recipe hash label: a second run rebuilds
# nothing unless a recipe changed. Tarballs land in $VMSTACK_IMAGE_DIR
# (default: build/images). Set VMSTACK_DEBIAN_MIRROR to override the Debian
# mirror, which is otherwise read from this host's apt sources.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BED="$ROOT/tests/bed"
IMAGE_DIR=${VMSTACK_IMAGE_DIR:-$ROOT/build/images}
APP_DIR="$ROOT/examples/agent-app"
PY=${PYTHON:-python3}

log() { printf '[testbed %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() { [ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts dockerd)"; }

ensure_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed" \
    || missing+=(busybox-static)
  if [ ${#missing[@]} -gt 0 ]; then
    need_root
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# A machine restarted without clearing /run keeps dockerd's pid files; when
# their PID now belongs to another process, dockerd believes its containerd
# still runs and waits for a socket that never comes.
clear_stale_pidfiles() {
  local f pid
  for f in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null || true)
    case "$(cat "/proc/${pid:-0}/comm" 2>/dev/null || true)" in
      dockerd | containerd) ;;
      *)
        log "removing stale $f (PID ${pid:-?} is not dockerd or containerd)"
        rm -f "$f"
        ;;
    esac
  done
}

ensure_engine() {
  if docker info >/dev/null 2>&1; then return; fi
  need_root
  clear_stale_pidfiles
  log "starting dockerd (log: /var/log/dockerd.log)"
  nohup dockerd >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && { log "dockerd is up"; return; }
    sleep 1
  done
  tail -20 /var/log/dockerd.log >&2 || true
  die "dockerd did not answer within 60 s"
}

# The Debian mirror this host already uses (one-line or deb822 sources).
debian_mirror() {
  if [ -n "${VMSTACK_DEBIAN_MIRROR:-}" ]; then echo "$VMSTACK_DEBIAN_MIRROR"; return; fi
  local m
  m=$(set +o pipefail; { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^[[:space:]]*URIs:/ {print $2}';
         cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
           | sed -E 's/\[[^]]*\]//' | awk '$1 == "deb" {print $2}'; } | awk '!/-security/' | head -1)
  [ -n "$m" ] || die "no Debian mirror in /etc/apt sources; set VMSTACK_DEBIAN_MIRROR"
  echo "$m"
}

# Short hash of the files a recipe depends on, stored as an image label.
base_id() { docker image inspect -f '{{.Id}}' vmstack/base:bookworm; }
recipe_hash() { cat "$@" | sha256sum | cut -c1-12; }

image_current() { # image hash
  [ "$(docker image inspect -f '{{ index .Config.Labels "vmstack.recipe" }}' "$1" 2>/dev/null)" = "$2" ]
}

# Strip what no container needs from a debootstrapped root: downloaded
# packages, documentation, man pages, locales but C.UTF-8, and with `lists`
# the apt lists too. (A VM keeps its lists: emptied, their directory looks
# freshly updated to apt's cache_valid_time, and nothing could be installed.)
slim_rootfs() { # dir [lists]
  rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/usr/share/doc/* \
    "$1"/usr/share/man/* "$1"/usr/share/info/* "$1"/var/cache/debconf/*-old
  [ "${2:-}" != lists ] || rm -rf "$1"/var/lib/apt/lists/*
  find "$1/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} + 2>/dev/null || true
}

debootstrap_to() { # suite dir include-list
  local mirror
  mirror=$(debian_mirror)
  debootstrap --variant=minbase ${3:+--include=$3} "$1" "$2" "$mirror" >"$2.log" 2>&1 \
    || { tail -30 "$2.log" >&2; die "debootstrap $1 failed"; }
  # Containers reach the archive over plain http (see TESTBED notes).
  [ -s "$2/etc/apt/sources.list" ] || echo "deb $mirror $1 main" >"$2/etc/apt/sources.list"
  rm -f "$2.log"
}

# The "VMs": systemd as PID 1, python3 for Ansible, and sshd with its host
# keys made at first boot, as on a cloud image.
build_platform() { # suite
  local suite=$1 tag="vmstack/debian:$1" hash rootfs
  hash=$(recipe_hash <(declare -f build_platform slim_rootfs debootstrap_to) <(echo "$suite"))
  if image_current "$tag" "$hash"; then log "$tag is cached"; return; fi
  need_root
  rootfs=$(mktemp -d /var/tmp/vmstack-rootfs.XXXXXX)
  log "debootstrap $suite (minbase + systemd, python3, sshd) -> $tag"
  debootstrap_to "$suite" "$rootfs" \
    python3,python3-apt,systemd,systemd-sysv,sudo,iproute2,ca-certificates,procps,openssh-server
  # A container is not a VM: no getty, no udev trigger, no first-boot machine id.
  : >"$rootfs/etc/machine-id"
  rm -f "$rootfs"/etc/systemd/system/getty.target.wants/* "$rootfs"/etc/ssh/ssh_host_*
  ln -sf /dev/null "$rootfs/etc/systemd/system/systemd-udevd.service"
  ln -sf /dev/null "$rootfs/etc/systemd/system/systemd-udev-trigger.service"
  ln -sf /dev/null "$rootfs/etc/systemd/system/getty@tty1.service"
  mkdir -p "$rootfs/etc/systemd/system/ssh.service.d"
  printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
    >"$rootfs/etc/systemd/system/ssh.service.d/vmstack-bed-hostkeys.conf"
  slim_rootfs "$rootfs"
  tar -C "$rootfs" -c . | docker import \
    -c 'ENV container=docker' -c 'CMD ["/lib/systemd/systemd"]' \
    -c "LABEL vmstack.recipe=$hash" - "$tag" >/dev/null
  rm -rf "$rootfs"
  log "built $tag"
}

# Seeded platforms for the role scenarios: the bare image plus the packages
# the roles and the scenarios' probes install, so a role scenario spends its
# time on the role and not on apt. The stack and docker scenarios keep the
# bare images: the install path stays tested from nothing. Each package is
# left as apt leaves it on a VM (its service enabled), so the roles also meet
# hosts where a package ran before they configured it.
SEED_COMMON="sudo openssh-server fail2ban python3-systemd unattended-upgrades auditd libpam-pwquality
  cracklib-runtime systemd-timesyncd apt-listchanges apt-show-versions debsums libpam-tmpdir needrestart
  acct sysstat curl openssh-client"
SEED_trixie="$SEED_COMMON nftables aide aide-common nginx certbot python3-cryptography openssl pebble
  testssl.sh hey sshpass ssh-audit netcat-openbsd"
SEED_bookworm="$SEED_COMMON ufw docker.io python3-docker"
# The docker role installs with apt's default, Recommends included.
SEED_RECOMMENDS_trixie="docker.io docker-compose python3-requests"
SEED_RECOMMENDS_bookworm=""

build_seeded() { # suite
  local suite=$1 tag="vmstack/debian:$1-seeded" packages recommends hash ctx
  packages="SEED_$suite" && packages=$(echo ${!packages})
  recommends="SEED_RECOMMENDS_$suite" && recommends=$(echo ${!recommends})
  hash=$(recipe_hash <(declare -f build_seeded) <(echo "$packages + $recommends") \
    <(docker image inspect -f '{{.Id}}' "vmstack/debian:$suite"))
  if image_current "$tag" "$hash"; then log "$tag is cached"; return; fi
  log "seeding vmstack/debian:$suite with $(wc -w <<<"$packages $recommends") packages -> $tag"
  ctx=$(mktemp -d)
  cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM vmstack/debian:$suite
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d \\
 && apt-get update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages >/dev/null \\
 && { [ -z "$recommends" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $recommends >/dev/null; } \\
 && rm -f /usr/sbin/policy-rc.d /var/cache/apt/archives/*.deb \\
 && rm -rf /usr/share/doc/* /usr/share/man/*
LABEL vmstack.recipe=$hash
DOCKERFILE
  docker build -q -t "$tag" "$ctx" >/dev/null || { rm -rf "$ctx"; die "seeding $tag failed"; }
  rm -rf "$ctx"
  log "built $tag"
}

# The base of the fixture images (PostgreSQL, Redis, the app): minbase and
# python3, no systemd. One shared base layer keeps the stack tarball small.
build_image_base() {
  local tag=vmstack/base:bookworm hash rootfs
  hash=$(recipe_hash <(declare -f build_image_base slim_rootfs debootstrap_to))
  if image_current "$tag" "$hash"; then log "$tag is cached"; return; fi
  need_root
  rootfs=$(mktemp -d /var/tmp/vmstack-rootfs.XXXXXX)
  log "debootstrap bookworm (minbase, python3) -> $tag"
  debootstrap_to bookworm "$rootfs" python3,ca-certificates
  slim_rootfs "$rootfs" lists
  tar -C "$rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' \
    -c "LABEL vmstack.recipe=$hash" - "$tag" >/dev/null
  rm -rf "$rootfs"
  log "built $tag"
}

build_busybox() {
  local tag=vmstack/busybox:1 hash ctx
  hash=$(recipe_hash <(declare -f build_busybox) /bin/busybox)
  if image_current "$tag" "$hash"; then log "$tag is cached"; return; fi
  ctx=$(mktemp -d)
  cp /bin/busybox "$ctx/busybox"
  cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
LABEL vmstack.recipe=$hash
CMD ["/bin/sh"]
DOCKERFILE
  docker build -q -t "$tag" "$ctx" >/dev/null
  rm -rf "$ctx"
  log "built $tag"
}

build_dockerfile() { # tag context [BASE_IMAGE=... and other build arguments]
  local tag=$1 ctx=$2 hash base=vmstack/base:bookworm arg build_args=(); shift 2
  for arg in "$@"; do
    build_args+=(--build-arg "$arg")
    [[ $arg != BASE_IMAGE=* ]] || base=${arg#BASE_IMAGE=}
  done
  hash=$(recipe_hash "$ctx/Dockerfile" $(find "$ctx" -maxdepth 1 -type f -name '*.sh' | sort) \
         <(docker image inspect -f '{{.Id}}' "$base") <([ $# -eq 0 ] || echo "$@"))
  if image_current "$tag" "$hash"; then log "$tag is cached"; return; fi
  log "building $tag"
  docker build -q "${build_args[@]}" --label "vmstack.recipe=$hash" -t "$tag" "$ctx" >/dev/null
  log "built $tag"
}

build_app() {
  local version
  version=$(sed -nE 's/^version *= *"([^"]+)".*/\1/p' "$APP_DIR/pyproject.toml" | head -1)
  [ -n "$version" ] || die "no version in $APP_DIR/pyproject.toml"
  # Wheels are built on this host (PyPI is not reachable from containers),
  # the air-gapped path: the image build installs from them with --no-index.
  local hash
  hash=$( (cd "$APP_DIR" && find pyproject.toml requirements.txt Dockerfile src -type f | sort | xargs cat; base_id) | sha256sum | cut -c1-12)
  if image_current "vmstack/agent-app:$version" "$hash"; then log "vmstack/agent-app:$version is cached"; echo "$version"; return; fi
  log "building wheels for agent-app $version"
  rm -rf "$APP_DIR/wheelhouse"
  "$PY" -m pip wheel -q --disable-pip-version-check -w "$APP_DIR/wheelhouse" \
    -r "$APP_DIR/requirements.txt" "$APP_DIR" 2>&1 | { grep -v "neither a file nor a directory" || true; } >&2
  log "building vmstack/agent-app:$version"
  docker build -q --label "vmstack.recipe=$hash" --build-arg "APP_VERSION=$version" \
    --build-arg BASE_IMAGE=vmstack/base:bookworm \
    -t "vmstack/agent-app:$version" "$APP_DIR" >/dev/null
  log "built vmstack/agent-app:$version"
  echo "$version"
}

# docker save is slow for big images: only when an image changed. Several
# images in one tarball share their common layers.
save_images() { # file tag...
  local out="$IMAGE_DIR/$1" ids; shift
  ids=$(docker image inspect -f '{{.Id}}' "$@" | tr '\n' ' ')
  if [ -s "$out" ] && [ "$(cat "$out.id" 2>/dev/null)" = "$ids" ]; then return; fi
  mkdir -p "$IMAGE_DIR"
  docker save -o "$out.tmp" "$@" && mv "$out.tmp" "$out" && echo "$ids" >"$out.id"
  log "saved $* -> $out ($(du -h "$out" | cut -f1))"
}

platforms() {
  build_platform bookworm
  build_platform trixie
  build_seeded bookworm
  build_seeded trixie
}

stack_images() {
  local images=(vmstack/busybox:1 vmstack/postgres:15 vmstack/redis:7) app_version
  build_busybox && save_images busybox.tar vmstack/busybox:1
  build_image_base
  build_dockerfile vmstack/postgres:15 "$BED/images/postgres"
  build_dockerfile vmstack/redis:7 "$BED/images/redis"
  if [ "${VMSTACK_SKIP_APP_IMAGE:-}" != 1 ]; then
    app_version=$(build_app)
    images+=("vmstack/agent-app:$app_version")
  fi
  # Everything a stack VM runs, in one tarball (the air-gapped path).
  save_images stack.tar "${images[@]}"
  rm -f "$IMAGE_DIR"/postgres.tar* "$IMAGE_DIR"/redis.tar* "$IMAGE_DIR"/agent-app.tar*
}

# The next PostgreSQL major from Debian 13's packages, for the upgrade through
# dump and restore (molecule/app); its own tarball, loaded only there.
postgres17() {
  build_dockerfile vmstack/postgres:17 "$BED/images/postgres" BASE_IMAGE=vmstack/debian:trixie PG_MAJOR=17
  save_images postgres17.tar vmstack/postgres:17
}

fixtures() { stack_images; postgres17; }

# Everything, in four chains at once: each debootstrap waits on the mirror
# and each seeding on apt inside its container, so on two cores they overlap
# (a cold build: 336 s one after another). Each chain is a subshell under
# errexit (not an && list, which would turn errexit off inside the
# functions): it stops at its first failure.
everything() {
  local pids=() pid rc=0
  (build_platform bookworm; build_seeded bookworm) & pids+=($!)
  # (PostgreSQL 17 builds on the bare Debian 13 image, beside its seeding)
  (build_platform trixie; build_seeded trixie & seeded=$!; postgres17; wait "$seeded") & pids+=($!)
  (stack_images) & pids+=($!)
  (wheels) & pids+=($!)
  for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
  [ $rc = 0 ] || die "the test bed is incomplete (see the errors above)"
}

# The Supervisor runtime's air-gapped install: per target Python, a
# directory of wheels (two app versions, for upgrades and rollbacks), built
# or downloaded here since no target reaches PyPI. Cached by a stamp of
# the app's sources and pins.
WHEEL_DIR=${VMSTACK_WHEEL_DIR:-$ROOT/build/wheelhouse}
wheels() {
  local hash stamp="$WHEEL_DIR/.recipe" src py version
  hash=$( (cd "$APP_DIR" && find pyproject.toml requirements.txt src -type f -name '*.py' -o -name '*.toml' -o -name '*.txt' \
            | grep -v egg-info | sort | xargs cat; declare -f wheels) | sha256sum | cut -c1-12)
  if [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ]; then log "wheelhouses are cached"; return; fi
  rm -rf "$WHEEL_DIR" && mkdir -p "$WHEEL_DIR/cp311" "$WHEEL_DIR/cp313"
  src=$(mktemp -d)
  for version in 0.1.0 0.2.0; do
    rm -rf "$src/app" && cp -r "$APP_DIR" "$src/app" && rm -rf "$src/app/build" "$src/app/wheelhouse" "$src/app/.venv"
    sed -i -E "s/^version = \"[^\"]+\"/version = \"$version\"/" "$src/app/pyproject.toml"
    sed -i -E "s/^__version__ = \"[^\"]+\"/__version__ = \"$version\"/" "$src/app/src/agent_app/__init__.py"
    "$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w "$WHEEL_DIR/cp311" "$src/app" 2>&1 \
      | { grep -v "neither a file nor a directory" || true; } >&2
  done
  rm -rf "$src"
  cp "$WHEEL_DIR"/cp311/agent_app-*.whl "$WHEEL_DIR/cp313/"
  for py in 311 313; do
    "$PY" -m pip download -q --disable-pip-version-check --only-binary=:all: --python-version "3.${py#3}" \
      --implementation cp --abi "cp$py" --abi abi3 --abi none --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_5_x86_64 \
      --platform manylinux1_x86_64 --platform any -d "$WHEEL_DIR/cp$py" -r "$APP_DIR/requirements.txt" 2>&1 \
      | { grep -v "neither a file nor a directory" || true; } >&2 || die "downloading the cp$py wheels failed"
  done
  echo "$hash" >"$stamp"
  log "wheelhouses: $(ls "$WHEEL_DIR/cp311" | wc -l) wheels for cp311, $(ls "$WHEEL_DIR/cp313" | wc -l) for cp313"
}

main() {
  local what=${1:-all}
  case $what in
    engine) ensure_packages; ensure_engine ;;
    platforms) ensure_packages; ensure_engine; platforms ;;
    fixtures) ensure_packages; ensure_engine; platforms; fixtures ;;
    wheels) wheels ;;
    all) ensure_packages; ensure_engine; everything ;;
    mirror) debian_mirror ;;
    *) die "usage: $0 [engine|platforms|fixtures|wheels|all|mirror]" ;;
  esac
}

main "$@"
