#!/usr/bin/env bash
# The monitoring files under test (monitoring/): the alert and recording rules with promtool,
# and the fleet dashboard regenerated and compared with the committed JSON.
#   monitoring.sh ensure      make sure promtool and prometheus are on PATH (Debian's
#                             `prometheus` package, installed when root on Debian)
#   monitoring.sh check       promtool check rules + promtool test rules, and the example
#                             scrape configuration's syntax
#   monitoring.sh dashboard   regenerate monitoring/dashboards/*.json (make dashboard)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
log() { printf 'monitoring: %s\n' "$*" >&2; }

ensure() {
  if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" != 0 ] || [ ! -f /etc/debian_version ]; then
    log "promtool/prometheus not found: install Prometheus (Debian/Ubuntu: apt-get install prometheus)"
    exit 1
  fi
  # The package's server is not started here (no systemd as PID 1 on CI): the tests run
  # their own, on a port of their own.
  log "installing Debian's prometheus package (promtool and the server)"
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get update -qq
  timeout 900 apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}

case ${1:-} in
  ensure) ensure ;;
  check)
    ensure
    promtool check rules "$root"/monitoring/rules/*.yml
    promtool check config --syntax-only "$root/monitoring/prometheus.example.yml"
    promtool test rules "$root"/monitoring/tests/*.yml
    ;;
  dashboard)
    "${PYTHON:-python}" "$root/monitoring/dashboard.py" --out "$root/monitoring/dashboards/fondation-fleet.json"
    ;;
  *) echo "usage: $0 ensure|check|dashboard" >&2; exit 2 ;;
esac
