#!/usr/bin/env bash
# Repeat one check N times to pin a flaky one down: a Molecule scenario or a pytest node.
# Every run keeps its whole output; the closing lines say which runs failed and where to read.
#   flake.sh scenario NAME N     e.g. flake.sh scenario runbooks 5
#   flake.sh pytest NODE N       e.g. flake.sh pytest tests/worker/test_integration.py::test_x 10
# Exit status: 0 when all N runs passed, 1 otherwise.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
kind=${1:-}; target=${2:-}; runs=${3:-5}
case $kind in
  scenario) cmd=("$root/scripts/molecule.sh" "$target") ;;
  pytest) cmd=(env "REAL_CLAUDE_BIN=$("$root/scripts/claude-cli.sh" binary)" pytest -p no:cacheprovider "$target") ;;
  *) echo "usage: $0 scenario NAME N | pytest NODE N" >&2; exit 2 ;;
esac
[ -n "$target" ] || { echo "usage: $0 scenario NAME N | pytest NODE N" >&2; exit 2; }

out=$root/build/flake/$(printf '%s' "$target" | tr -c 'A-Za-z0-9_.-' '_')
rm -rf "$out"; mkdir -p "$out"
passed=0; failed=0; failures=()
for i in $(seq 1 "$runs"); do
  start=$(date +%s)
  if (cd "$root" && "${cmd[@]}") >"$out/run-$i.log" 2>&1; then
    passed=$((passed + 1)); verdict=passed
  else
    failed=$((failed + 1)); verdict=FAILED; failures+=("$out/run-$i.log")
  fi
  printf 'flake: %s run %d/%d %s in %d s (log: %s)\n' "$target" "$i" "$runs" "$verdict" \
    $(($(date +%s) - start)) "$out/run-$i.log"
done
for log in "${failures[@]}"; do
  printf '\n--- %s: first failure lines ---\n' "$log"
  grep -E -m 8 'FAILED|Error|error:|fatal:|AssertionError' "$log" || tail -n 20 "$log"
done
printf '\nflake: %s\n%d passed, %d failed\n' "$target" "$passed" "$failed"
[ "$failed" -eq 0 ]
