#!/usr/bin/env bash
# Ensure a working Docker engine. On a workstation where Docker already runs this does
# nothing. On a bare Debian machine where we are root (CI, the dev sandbox) it installs
# Debian's docker.io, starts dockerd in the background (PID 1 is not systemd there), waits
# for the socket and proves the engine can run a container.
set -euo pipefail

log() { printf 'docker-engine: %s\n' "$*" >&2; }

engine_ok() { docker info >/dev/null 2>&1; }

prove_engine() {
  # Running a container proves more than `docker info`: storage driver, runc, cgroups.
  # Debian's ldconfig is statically linked, so a one-file image made from it needs no
  # registry and no base image.
  local probe=fondation/engine-probe:1 ctx
  if ! docker image inspect "$probe" >/dev/null 2>&1; then
    ctx=$(mktemp -d)
    cp "$(command -v ldconfig || echo /sbin/ldconfig)" "$ctx/probe"
    tar -C "$ctx" -c probe | docker import --change 'ENTRYPOINT ["/probe"]' - "$probe" >/dev/null
    rm -rf "$ctx"
  fi
  docker run --rm --network none "$probe" --version >/dev/null
  log "engine proven: ran a container"
}

if engine_ok; then
  log "engine already running"
  prove_engine
  exit 0
fi

if [ "$(id -u)" != 0 ] || [ ! -f /etc/debian_version ]; then
  log "no Docker engine reachable and not root on Debian: start Docker yourself, then retry"
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
  log "installing docker.io from the Debian mirror"
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get update -qq
  timeout 900 apt-get install -y -qq --no-install-recommends docker.io iptables ca-certificates >/dev/null
fi

log "starting dockerd in the background (log: /var/log/dockerd.log)"
# setsid detaches it from our process group so `make` finishing does not stop it.
setsid nohup dockerd >/var/log/dockerd.log 2>&1 </dev/null &

for _ in $(seq 1 60); do
  if [ -S /var/run/docker.sock ] && engine_ok; then
    prove_engine
    exit 0
  fi
  sleep 1
done
log "dockerd did not come up within 60 s; last lines of /var/log/dockerd.log:"
tail -n 20 /var/log/dockerd.log >&2 || true
exit 1
