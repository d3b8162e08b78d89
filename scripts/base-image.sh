#!/usr/bin/env bash
# Provide the Debian base images every build and test here starts from, without a registry:
#   debian:bookworm, debian:trixie                 plain Debian (worker image build)
#   fondation/debian-systemd:12, :13               systemd as PID 1 (Molecule, local target)
#   fondation/debian-systemd-docker:12             that, with Docker already installed (the
#                                                  Molecule fleet and runbooks hosts)
# For each: use the local image if present, else try to pull, else build it (debootstrap +
# docker import for plain Debian, a local Dockerfile for the systemd flavour). Built images
# carry a label with the hash of their recipe, so a changed recipe rebuilds and an unchanged
# one is a cache hit in well under a second.
#
# usage: base-image.sh [all | bookworm | trixie | systemd-12 | systemd-13 | systemd-docker-12]...
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
recipe_label=org.fondation.recipe

log() { printf 'base-image: %s\n' "$*" >&2; }

image_label() {  # image label -> value (empty when the image is absent)
  docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true
}

has_image() { docker image inspect "$1" >/dev/null 2>&1; }

try_pull() {  # a missing registry fails fast ("no such host"), so trying costs nothing
  timeout 120 docker pull -q "$1" >/dev/null 2>&1
}

ensure_debootstrap() {
  command -v debootstrap >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ]; then
    # One install at a time (`all` builds the Debian 12 and 13 chains side by side).
    (
      flock 9
      command -v debootstrap >/dev/null 2>&1 && exit 0
      log "installing debootstrap"
      DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq debootstrap >/dev/null \
        || { timeout 600 apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
             timeout 600 apt-get install -y -qq debootstrap >/dev/null; }
    ) 9>"${TMPDIR:-/tmp}/fondation-base-image-apt.lock"
  else
    log "debootstrap is missing and we cannot install it: install it or provide $1 yourself"
    exit 1
  fi
}

plain_debian() {  # suite -> debian:<suite>
  local suite=$1 tag="debian:$1" rootfs
  if has_image "$tag"; then log "$tag: present"; return 0; fi
  if try_pull "$tag"; then log "$tag: pulled"; return 0; fi
  ensure_debootstrap "$tag"
  rootfs=$(mktemp -d "${TMPDIR:-/tmp}/rootfs-$suite.XXXXXX")
  trap 'rm -rf "$rootfs"' RETURN
  log "$tag: building with debootstrap (about 30 s)"
  timeout 900 debootstrap --variant=minbase "$suite" "$rootfs" >"$rootfs.log" 2>&1 \
    || { tail -n 20 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
  rm -f "$rootfs.log"
  # apt caches and lists only make the image bigger; `apt-get update` refreshes them.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import \
    --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$tag" >/dev/null
  log "$tag: imported"
}

flavour() {  # tag base dockerfile: <base> plus a local Dockerfile, rebuilt when either changes
  local tag=$1 base=$2 dockerfile=$here/images/$3 want build_log
  want=$( (cat "$dockerfile"; docker image inspect --format '{{.Id}}' "$base") | sha256sum | cut -c1-16)
  if [ "$(image_label "$tag" "$recipe_label")" = "$want" ]; then
    log "$tag: present (recipe $want)"; return 0
  fi
  log "$tag: building (recipe $want)"
  build_log=$(mktemp)
  timeout 1200 docker build --build-arg "BASE=$base" --label "$recipe_label=$want" \
    -t "$tag" -f "$dockerfile" "$here/images" >"$build_log" 2>&1 \
    || { tail -n 30 "$build_log" >&2; rm -f "$build_log"; exit 1; }
  rm -f "$build_log"
  log "$tag: built"
}

systemd_debian() {  # version suite -> fondation/debian-systemd:<version>
  plain_debian "$2"
  flavour "fondation/debian-systemd:$1" "debian:$2" systemd.Dockerfile
}

systemd_docker_debian() {  # version suite -> fondation/debian-systemd-docker:<version>
  systemd_debian "$1" "$2"
  flavour "fondation/debian-systemd-docker:$1" "fondation/debian-systemd:$1" systemd-docker.Dockerfile
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(all)
for target in "${targets[@]}"; do
  case $target in
    all)
      # The Debian 12 and 13 chains side by side: each is mostly downloads and dpkg.
      systemd_docker_debian 12 bookworm &  # builds debian:bookworm and :12 on the way
      chain12=$!
      systemd_debian 13 trixie &
      chain13=$!
      failed=0
      wait "$chain12" || failed=1
      wait "$chain13" || failed=1
      [ "$failed" = 0 ] || { log "a base image failed to build (above)"; exit 1; } ;;
    bookworm|trixie) plain_debian "$target" ;;
    systemd-12) systemd_debian 12 bookworm ;;
    systemd-13) systemd_debian 13 trixie ;;
    systemd-docker-12) systemd_docker_debian 12 bookworm ;;
    *) log "unknown image '$target' (all, bookworm, trixie, systemd-12, systemd-13, systemd-docker-12)"; exit 2 ;;
  esac
done
