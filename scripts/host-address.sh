#!/usr/bin/env bash
# Print the IPv4 address that containers on the default Docker bridge reach this host on:
# the one address the local services containers call (the dev backend, the demo stand-ins)
# listen on. Every script that needs it calls this one.
#   - Docker CE reports it as the bridge network's IPAM gateway.
#   - Debian's docker.io 20.10 reports no gateway there (its IPAM config holds only the
#     subnet): it is then the address of the bridge's interface (docker0, or the name the
#     network's options give).
# When neither tells, it says so and exits 1: a service bound to loopback instead would
# look up and running to this host while every container fails to reach it.
# Env: FONDATION_HOST_ADDRESS  use this IPv4 address instead (an engine where neither
#      works, such as a remote DOCKER_HOST); it is checked for form only.
set -euo pipefail

fail() {
  printf 'host-address: %s\n' "$*" >&2
  exit 1
}

is_ipv4() {
  [[ $1 =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] || return 1
  local octet
  for octet in "${BASH_REMATCH[@]:1}"; do
    [ "$((10#$octet))" -le 255 ] || return 1
  done
}

if [ -n "${FONDATION_HOST_ADDRESS:-}" ]; then
  is_ipv4 "$FONDATION_HOST_ADDRESS" \
    || fail "FONDATION_HOST_ADDRESS=$FONDATION_HOST_ADDRESS is not an IPv4 address"
  echo "$FONDATION_HOST_ADDRESS"
  exit 0
fi

command -v docker >/dev/null \
  || fail "cannot tell the address containers reach this host on: no docker command (install an engine: scripts/docker-engine.sh)"
# One line: every IPAM gateway (IPv4 and IPv6 alike), then the bridge's interface name.
if ! inspected=$(timeout 30 docker network inspect bridge \
  --format '{{range .IPAM.Config}}{{.Gateway}} {{end}}|{{index .Options "com.docker.network.bridge.name"}}' 2>&1); then
  fail "cannot tell the address containers reach this host on: \`docker network inspect bridge\` failed: $inspected"
fi
gateways=${inspected%|*}
interface=${inspected##*|}
for gateway in $gateways; do
  if is_ipv4 "$gateway"; then
    echo "$gateway"
    exit 0
  fi
done

interface=${interface:-docker0}
address=
if command -v ip >/dev/null; then
  address=$(timeout 10 ip -4 -o addr show dev "$interface" 2>/dev/null \
    | awk '{ split($4, a, "/"); print a[1]; exit }') || true
fi
if [ -n "$address" ] && is_ipv4 "$address"; then
  echo "$address"
  exit 0
fi
fail "cannot tell the address containers reach this host on: the Docker bridge network reports" \
  "no IPv4 gateway and its interface $interface has no IPv4 address here$(command -v ip >/dev/null || echo ' (no ip command)')." \
  "Is the engine remote (DOCKER_HOST) or rootless? Set FONDATION_HOST_ADDRESS to an address of" \
  "this machine that its containers reach."
