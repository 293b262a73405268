#!/usr/bin/env bash
# The test bed: everything Molecule scenarios and the local demo need on a
# fresh Debian machine with root, built here because no registry is reachable.
#
#   tests/bed/testbed.sh engine     install docker.io/debootstrap if missing, start dockerd
#   tests/bed/testbed.sh platforms  + systemd platform images (Debian 12, 13) via debootstrap
#   tests/bed/testbed.sh fixtures   + stack images (busybox, postgres, redis, agent-app), saved as tarballs
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

ensure_engine() {
  if docker info >/dev/null 2>&1; then return; fi
  need_root
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
base_id() { docker image inspect -f '{{.Id}}' vmstack/debian:bookworm; }
recipe_hash() { cat "$@" | sha256sum | cut -c1-12; }

image_current() { # image hash
  [ "$(docker image inspect -f '{{ index .Config.Labels "vmstack.recipe" }}' "$1" 2>/dev/null)" = "$2" ]
}

build_platform() { # suite
  local suite=$1 tag="vmstack/debian:$1" hash rootfs mirror
  hash=$(recipe_hash <(declare -f build_platform) <(echo "$suite"))
  if image_current "$tag" "$hash"; then log "$tag is cached"; return; fi
  need_root
  mirror=$(debian_mirror)
  rootfs=$(mktemp -d /var/tmp/vmstack-rootfs.XXXXXX)
  log "debootstrap $suite (minbase + systemd, python3) -> $tag"
  debootstrap --variant=minbase \
    --include=python3,python3-apt,systemd,systemd-sysv,sudo,iproute2,ca-certificates,procps \
    "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -30 "$rootfs.log" >&2; die "debootstrap $suite failed"; }
  # A container is not a VM: no getty, no udev trigger, no first-boot machine id.
  : >"$rootfs/etc/machine-id"
  rm -f "$rootfs"/etc/systemd/system/getty.target.wants/* "$rootfs"/var/cache/apt/archives/*.deb
  ln -sf /dev/null "$rootfs/etc/systemd/system/systemd-udevd.service"
  ln -sf /dev/null "$rootfs/etc/systemd/system/systemd-udev-trigger.service"
  ln -sf /dev/null "$rootfs/etc/systemd/system/getty@tty1.service"
  tar -C "$rootfs" -c . | docker import \
    -c 'ENV container=docker' -c 'CMD ["/lib/systemd/systemd"]' \
    -c "LABEL vmstack.recipe=$hash" - "$tag" >/dev/null
  rm -rf "$rootfs" "$rootfs.log"
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

build_dockerfile() { # tag context [extra hash inputs...]
  local tag=$1 ctx=$2 hash; shift 2
  hash=$(recipe_hash "$ctx/Dockerfile" $(find "$ctx" -maxdepth 1 -type f -name '*.sh' | sort) <(base_id) "$@")
  if image_current "$tag" "$hash"; then log "$tag is cached"; return; fi
  log "building $tag"
  docker build -q --label "vmstack.recipe=$hash" -t "$tag" "$ctx" >/dev/null
  log "built $tag"
}

build_app() {
  local version
  version=$(sed -nE 's/^version *= *"([^"]+)".*/\1/p' "$APP_DIR/pyproject.toml" | head -1)
  [ -n "$version" ] || die "no version in $APP_DIR/pyproject.toml"
  # Wheels are built on this host (PyPI is not reachable from containers),
  # the air-gapped path: the image build installs from them with --no-index.
  local hash
  hash=$(cd "$APP_DIR" && find pyproject.toml requirements.txt Dockerfile src -type f | sort | xargs cat | sha256sum | cut -c1-12)
  if image_current "vmstack/agent-app:$version" "$hash"; then log "vmstack/agent-app:$version is cached"; echo "$version"; return; fi
  log "building wheels for agent-app $version"
  rm -rf "$APP_DIR/wheelhouse"
  "$PY" -m pip wheel -q --disable-pip-version-check -w "$APP_DIR/wheelhouse" \
    -r "$APP_DIR/requirements.txt" "$APP_DIR" 2>&1 | { grep -v "neither a file nor a directory" || true; } >&2
  log "building vmstack/agent-app:$version"
  docker build -q --label "vmstack.recipe=$hash" --build-arg "APP_VERSION=$version" \
    -t "vmstack/agent-app:$version" "$APP_DIR" >/dev/null
  log "built vmstack/agent-app:$version"
  echo "$version"
}

# docker save is slow for big images: only when the image changed.
save_image() { # tag file
  local tag=$1 out="$IMAGE_DIR/$2" id
  id=$(docker image inspect -f '{{.Id}}' "$tag")
  if [ -s "$out" ] && [ "$(cat "$out.id" 2>/dev/null)" = "$id" ]; then return; fi
  mkdir -p "$IMAGE_DIR"
  docker save -o "$out.tmp" "$tag" && mv "$out.tmp" "$out" && echo "$id" >"$out.id"
  log "saved $tag -> $out ($(du -h "$out" | cut -f1))"
}

platforms() {
  build_platform bookworm
  build_platform trixie
}

fixtures() {
  build_busybox && save_image vmstack/busybox:1 busybox.tar
  build_dockerfile vmstack/postgres:15 "$BED/images/postgres" && save_image vmstack/postgres:15 postgres.tar
  build_dockerfile vmstack/redis:7 "$BED/images/redis" && save_image vmstack/redis:7 redis.tar
  if [ "${VMSTACK_SKIP_APP_IMAGE:-}" != 1 ]; then
    local app_version
    app_version=$(build_app)
    save_image "vmstack/agent-app:$app_version" agent-app.tar
  fi
}

main() {
  local what=${1:-all}
  case $what in
    engine) ensure_packages; ensure_engine ;;
    platforms) ensure_packages; ensure_engine; platforms ;;
    fixtures) ensure_packages; ensure_engine; platforms; fixtures ;;
    all) ensure_packages; ensure_engine; platforms; fixtures ;;
    mirror) debian_mirror ;;
    *) die "usage: $0 [engine|platforms|fixtures|all|mirror]" ;;
  esac
}

main "$@"
