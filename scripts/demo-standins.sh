#!/usr/bin/env bash
# The stand-ins `make deploy`'s demo job uses when nothing real is reachable: a local HTTPS
# git server with one sample repository and the scripted Messages API the real claude CLI in
# the worker image talks to (scripts/demo_standins.py). Development only, like the dev backend.
#   demo-standins.sh start   start them (idempotent); print the state file's path
#   demo-standins.sh stop    stop them
# Env: DEMO_STANDINS_HOST (listen address; default: scripts/host-address.sh's),
#      DEMO_GIT_PORT (3211), DEMO_API_PORT (3212), DEMO_STANDINS_STATE (build/demo-standins).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state=${DEMO_STANDINS_STATE:-$root/build/demo-standins}
mkdir -p "$state"
log() { printf 'demo-standins: %s\n' "$*" >&2; }
# shellcheck source=scripts/lib/daemon.sh
. "$root/scripts/lib/daemon.sh"

python=${PYTHON:-$root/.venv/bin/python}

start() {
  # The address containers reach this host on: the worker container inside the local target
  # clones from here and calls the API here (scripts/host-address.sh fails with its reason
  # when it cannot tell; on loopback the demo job could not connect).
  local host
  host=${DEMO_STANDINS_HOST:-$("$root/scripts/host-address.sh")}
  if daemon_pid >/dev/null && [ -s "$state/standins.json" ]; then
    # Ones left listening elsewhere (on loopback, by an older checkout) no container reaches.
    if [ "$(cat "$state/host" 2>/dev/null)" = "$host" ]; then
      echo "$state/standins.json"; return 0
    fi
    log "restarting: they listen on $(cat "$state/host" 2>/dev/null || echo 'an unrecorded address'), not $host"
    stop
  fi
  rm -f "$state/standins.json"
  echo "$host" >"$state/host"
  # A module of the repository root: it imports the stand-ins from tests.support.
  (cd "$root" && daemon_spawn "$state/standins.log" "$python" -m scripts.demo_standins serve \
    --host "$host" --git-port "${DEMO_GIT_PORT:-3211}" --api-port "${DEMO_API_PORT:-3212}" \
    --state "$state")
  if daemon_wait test -s "$state/standins.json"; then
    log "git and Messages API stand-ins up on $host"; echo "$state/standins.json"; return 0
  fi
  log "did not start; last log lines:"; tail -n 20 "$state/standins.log" >&2
  stop; exit 1
}

stop() { daemon_stop "$state/standins.json" "$state/host"; }

case ${1:-} in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
