#!/usr/bin/env bash
# The embedded default deploy target: a Debian 12 container booting systemd, standing in for
# a fresh VPS. Ansible reaches it with the Docker connection (inventories/local).
#   local-target.sh up     start it (idempotent: an existing running target is kept)
#   local-target.sh down   remove it and its Docker volume
set -euo pipefail

name=${FONDATION_LOCAL_TARGET:-fondation-local}
image=${FONDATION_LOCAL_IMAGE:-fondation/debian-systemd:12}
here=$(cd "$(dirname "$0")" && pwd)

log() { printf 'local-target: %s\n' "$*" >&2; }

state() {
  if docker container inspect "$name" >/dev/null 2>&1; then
    docker container inspect --format '{{.State.Status}}' "$name"
  else
    echo absent
  fi
}

up() {
  bash "$here/base-image.sh" systemd-12
  case $(state) in
    running) log "$name already running" ;;
    absent)
      # --privileged fails in some sandboxes: this explicit capability set is enough for
      # systemd as PID 1 and for a Docker engine inside (SYS_PTRACE lets `docker exec` enter
      # the non-root worker container, which Docker health checks need; /var/lib/docker is a volume
      # because overlay on overlay is refused).
      docker run -d --name "$name" --hostname "$name" \
        --cap-add SYS_ADMIN --cap-add NET_ADMIN --cap-add MKNOD --cap-add NET_RAW --cap-add SYS_PTRACE \
        --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
        --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
        --tmpfs /run --tmpfs /run/lock \
        -v "$name-docker:/var/lib/docker" \
        --label org.fondation.local-target=1 \
        "$image" /lib/systemd/systemd >/dev/null
      log "$name started from $image" ;;
    *) log "$name is $(state): starting it"; docker start "$name" >/dev/null ;;
  esac
  for _ in $(seq 1 60); do
    status=$(docker exec "$name" systemctl is-system-running 2>/dev/null || true)
    case $status in
      running|degraded) log "$name: systemd is $status"; return 0 ;;
    esac
    sleep 1
  done
  log "$name: systemd did not finish booting (state: ${status:-unknown})"
  docker exec "$name" systemctl --failed --no-pager >&2 || true
  exit 1
}

down() {
  if [ "$(state)" != absent ]; then docker rm -f "$name" >/dev/null; log "$name removed"; fi
  if docker volume inspect "$name-docker" >/dev/null 2>&1; then
    docker volume rm "$name-docker" >/dev/null; log "volume $name-docker removed"
  fi
}

case ${1:-} in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
