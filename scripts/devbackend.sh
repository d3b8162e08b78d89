#!/usr/bin/env bash
# Run the local Convex dev backend (devbackend/server.ts: our real convex/ functions under
# convex-test) where both this host and containers can reach it: on the address containers
# reach this host on (scripts/host-address.sh). A development stand-in, never production.
#   devbackend.sh start   start it (idempotent) and print its CONVEX_URL
#   devbackend.sh stop    stop it
#   devbackend.sh url     print the URL of the running one (exit 1 when none runs)
# Env: DEV_BACKEND_HOST (listen address; default: scripts/host-address.sh's), DEV_BACKEND_PORT
#      (3210), WORKER_TOKEN, OPERATOR_TOKEN and METRICS_SCRAPE_TOKEN (fixed local test
#      values; the operator functions accept only OPERATOR_TOKEN, the Prometheus endpoint
#      /http/metrics only METRICS_SCRAPE_TOKEN), ALLOWED_REPO_HOSTS, RECLAIM_INTERVAL_MS,
#      DEV_BACKEND_STATE (state dir; one per concurrent backend).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
state=${DEV_BACKEND_STATE:-$root/build/devbackend}
mkdir -p "$state"
log() { printf 'devbackend: %s\n' "$*" >&2; }
# shellcheck source=scripts/lib/daemon.sh
. "$root/scripts/lib/daemon.sh"

port=${DEV_BACKEND_PORT:-3210}

healthy() { curl -fsS --max-time 2 "$1/health" >/dev/null 2>&1; }

start() {
  # The address containers reach this host on (scripts/host-address.sh says how); it fails
  # with its reason rather than fall back to loopback, which no container reaches.
  local host url
  host=${DEV_BACKEND_HOST:-$("$root/scripts/host-address.sh")}
  url="http://$host:$port"
  # A backend already running with other repository hosts would refuse this caller's jobs;
  # one on another address (loopback, left by an older checkout) no container reaches.
  local settings="allowed_repo_hosts=${ALLOWED_REPO_HOSTS:-github.com} host=$host:$port"
  if daemon_pid >/dev/null && healthy "$(cat "$state/url")"; then
    if [ "$(cat "$state/settings" 2>/dev/null)" = "$settings" ]; then
      cat "$state/url"; return 0
    fi
    log "restarting: it runs with other settings ($(cat "$state/settings" 2>/dev/null))"
    stop
  fi
  # Not ours, yet answering: starting would fail on the port while the health check below
  # passed against the stranger (a backend left by another checkout, say).
  if healthy "$url"; then
    log "something else already answers on $url (not $state's backend): stop it or set DEV_BACKEND_PORT"
    exit 1
  fi
  echo "$settings" >"$state/settings"
  # The test tokens are public on purpose: they only ever guard this local stand-in.
  daemon_spawn "$state/devbackend.log" env \
    WORKER_TOKEN="${WORKER_TOKEN:-local-dev-token-not-secret}" \
    OPERATOR_TOKEN="${OPERATOR_TOKEN:-local-operator-token-not-secret}" \
    METRICS_SCRAPE_TOKEN="${METRICS_SCRAPE_TOKEN:-local-scrape-token-not-secret}" \
    ALLOWED_REPO_HOSTS="${ALLOWED_REPO_HOSTS:-github.com}" \
    DEV_BACKEND_HOST="$host" DEV_BACKEND_PORT="$port" \
    "$root/node_modules/.bin/tsx" "$root/devbackend/server.ts"
  if daemon_wait healthy "$url"; then
    echo "$url" >"$state/url"; log "up at $url"; echo "$url"; return 0
  fi
  log "did not become healthy at $url; last log lines:"; tail -n 20 "$state/devbackend.log" >&2
  stop; exit 1
}

stop() { daemon_stop "$state/url"; }

case ${1:-} in
  start) start ;;
  stop) stop ;;
  url)
    if daemon_pid >/dev/null && [ -s "$state/url" ]; then cat "$state/url"
    else log "none runs from $state (scripts/devbackend.sh start)"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
