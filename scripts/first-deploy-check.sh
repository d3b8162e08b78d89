#!/usr/bin/env bash
# The newcomer's path, as README's "The two commands" tells it, on this clone and this engine
# (the `deploy` stage of `make test`):
#   1. nothing of the demo runs yet: no local target, no dev backend or stand-ins, none of
#      their ports listening;
#   2. `make deploy`, with no variable of ours set, completes the demo job with documents
#      (checked in the dev backend, not only in what the demo printed);
#   3. the commands README, OPERATIONS and RUNBOOK give for a worker host run there as
#      written (tests/docs/test_docs_commands_on_the_host.py, which skips anywhere else);
#   4. `make deploy` again changes nothing on the target (changed=0), even after those
#      commands restarted replicas, and completes a job;
#   5. `make clean-local` leaves no container, volume, process or listening port of the demo.
# Exits non-zero at the first step that fails, after printing what it saw; a failed run
# cleans up behind itself (make clean-local), so the next one starts clean again.
# Each make's whole output: build/logs/deploy/<step>.log.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
logs=${STAGE_LOG_DIR:-$root/build/logs}/deploy
mkdir -p "$logs"
target=fondation-local
ports=(3210 3211 3212)  # the dev backend, the git and the Messages API stand-ins
operator_token=local-operator-token-not-secret  # scripts/devbackend.sh's public test value

say() { printf '==> first deploy: %s\n' "$*"; }
fail() {
  printf '==> first deploy: FAILED: %s\n' "$*" >&2
  exit 1
}

# What of the demo is left on this machine, one line each (nothing: a clean machine): the
# target and its volume, the daemons of this clone's pid files, and anything listening on
# the demo's ports (a daemon of another checkout, or one that escaped its pid file).
leftovers() {
  local name pid state
  docker container inspect "$target" >/dev/null 2>&1 && echo "container $target"
  docker volume inspect "$target-docker" >/dev/null 2>&1 && echo "volume $target-docker"
  for name in devbackend demo-standins; do
    pid=$(cat "build/$name/pid" 2>/dev/null) || continue
    state=$(ps -o stat= -p "$pid") && [[ $state != Z* ]] && echo "process $pid ($name, build/$name/pid)"
  done
  ss -Hltn | awk -v ports=" ${ports[*]} " \
    '{ n = split($4, a, ":"); if (index(ports, " " a[n] " ")) print "listening " $4 }'
}

# The process groups of the running daemons (each runs in a session of its own).
daemon_groups() {
  local name pid
  for name in devbackend demo-standins; do
    pid=$(cat "build/$name/pid" 2>/dev/null) || fail "no build/$name/pid after make deploy"
    kill -0 "$pid" 2>/dev/null || fail "$name (pid $pid) is not running after make deploy"
    echo "$pid"
  done
}

expect_clean() {
  local left
  left=$(leftovers)
  [ -z "$left" ] || fail "$1:"$'\n'"$left"
}

# `make` as a newcomer's shell starts it: a top-level make, none of the variables `make test`
# or the user's shell may carry that change what `make deploy` does, no venv on PATH.
newcomer_make() {
  local path=":$PATH:"
  path=${path//":$root/.venv/bin:"/:}
  path=${path//":$root/node_modules/.bin:"/:}
  path=${path#:}; path=${path%:}
  env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u ANSIBLE_CONFIG -u VIRTUAL_ENV \
    -u DEMO_REPO -u CLAUDE_CODE_OAUTH_TOKEN -u ANTHROPIC_API_KEY -u ALLOWED_REPO_HOSTS \
    -u WORKER_TOKEN -u OPERATOR_TOKEN -u FONDATION_HOST_ADDRESS -u FONDATION_CONVEX_URL \
    -u FONDATION_LOCAL_TARGET -u FONDATION_LOCAL_IMAGE -u DEV_BACKEND_HOST -u DEV_BACKEND_PORT \
    -u DEV_BACKEND_STATE -u DEMO_STANDINS_HOST -u DEMO_STANDINS_STATE -u DEMO_GIT_PORT \
    -u DEMO_API_PORT -u DEMO_WAIT_SECONDS -u PYTHON \
    PATH="$path" make --no-print-directory "$@"
}

# One Convex query to the running dev backend, as the operator; prints the JSON value.
query() {
  local url
  url=$(scripts/devbackend.sh url)
  curl -fsS --max-time 10 -H 'Content-Type: application/json' -X POST "$url/api/query" \
    --data "{\"path\": \"$1\", \"format\": \"json\", \"args\": $2}" \
    | .venv/bin/python -c 'import json, sys; r = json.load(sys.stdin); assert r["status"] == "success", r; print(json.dumps(r["value"]))'
}

# A run of `make deploy`: it passed, its play recap, and its demo job completed with
# documents that the dev backend holds. Prints the play recap's changed count.
deploy() {
  local step=$1 log="$logs/$1.log" rc=0 job docs job_json listed recap
  say "$step: make deploy (output: $log)"
  newcomer_make deploy >"$log" 2>&1 || rc=$?
  [ "$rc" = 0 ] || fail "$step: make deploy exited $rc; its last lines:"$'\n'"$(tail -n 40 "$log")"
  recap=$(grep -E "^$target +: ok=" "$log" | tail -n 1)
  [ -n "$recap" ] || fail "$step: no play recap for $target in $log"
  [[ $recap =~ failed=0 ]] || fail "$step: $recap"
  read -r job docs < <(sed -nE 's/^job ([^ ]+) completed: ([0-9]+) documents.*/\1 \2/p' "$log" | tail -n 1) \
    || fail "$step: the demo job did not complete; the demo's last lines:"$'\n'"$(tail -n 20 "$log")"
  [ "$docs" -gt 0 ] || fail "$step: job $job completed with $docs documents"
  job_json=$(query jobs:get "{\"jobId\": \"$job\", \"token\": \"$operator_token\"}")
  [[ $job_json =~ \"status\":\ \"completed\" ]] || fail "$step: the dev backend has job $job as $job_json"
  listed=$(query docs:listByJob "{\"jobId\": \"$job\", \"token\": \"$operator_token\"}" \
    | .venv/bin/python -c 'import json, sys; print(len(json.load(sys.stdin)))')
  [ "$listed" = "$docs" ] || fail "$step: the demo printed $docs documents, the dev backend lists $listed"
  say "$step: job $job completed, $docs documents in the dev backend; $recap"
  [[ $recap =~ changed=([0-9]+) ]] && echo "${BASH_REMATCH[1]}" >"$logs/$step.changed"
}

cleanup_on_failure() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    say "cleaning up after the failure (make clean-local)"
    newcomer_make clean-local >"$logs/cleanup.log" 2>&1 || cat "$logs/cleanup.log" >&2
  fi
  exit "$rc"
}

expect_clean "not a clean start: the demo (of this or another checkout) is already here; make clean-local where it was started"
trap cleanup_on_failure EXIT

deploy first

# The documented host commands, on the target make deploy just built. A skip would pass
# unseen, so the run must report passes and no skip.
say "the documented commands on $target (output: $logs/docs-on-the-host.log)"
rc=0
FONDATION_DOCS_TARGET=$target timeout 900 .venv/bin/python -m pytest -q -rs -p no:cacheprovider \
  tests/docs/test_docs_commands_on_the_host.py >"$logs/docs-on-the-host.log" 2>&1 || rc=$?
summary=$(tail -n 1 "$logs/docs-on-the-host.log")
[ "$rc" = 0 ] || fail "the documented host commands failed (exit $rc):"$'\n'"$(tail -n 40 "$logs/docs-on-the-host.log")"
[[ $summary =~ passed ]] && ! [[ $summary =~ skipped ]] \
  || fail "the documented host commands did not all run: $summary"
say "the documented commands on $target: $summary"

deploy again
changed=$(cat "$logs/again.changed")
[ "$changed" = 0 ] || fail "again: the second make deploy changed $changed things on $target: $(grep -E "^(changed|TASK)" "$logs/again.log" | grep -B1 '^changed' | head -n 40)"

groups=$(daemon_groups)
say "make clean-local"
newcomer_make clean-local >"$logs/clean-local.log" 2>&1 \
  || fail "make clean-local exited non-zero:"$'\n'"$(tail -n 20 "$logs/clean-local.log")"
expect_clean "make clean-local left these behind"
for group in $groups; do
  # Zombies are gone already (only their exit status waits for a reaper).
  left=$(ps -e -o pid=,pgid=,stat=,args= | awk -v g="$group" '$2 == g && $3 !~ /^Z/')
  [ -z "$left" ] || fail "make clean-local left processes of the daemon group $group:"$'\n'"$left"
done
say "passed: two deploys (the second changed nothing), two jobs with documents, nothing left after make clean-local"
