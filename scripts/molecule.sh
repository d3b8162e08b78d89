#!/usr/bin/env bash
# Run Molecule scenarios with the dev backend they need: its own state dir and port (a
# `make deploy` backend on the default port is left alone), allowing the scenarios' git
# fixture, stopped again whatever the outcome.
#   molecule.sh              every scenario (molecule/*/molecule.yml), as molecule test --all
#   molecule.sh NAME [NAME]  those scenarios, one after the other; stops at the first failure
# Each scenario gets a fresh dev backend: the workers of the hosts an earlier scenario
# destroyed (killed, as a crashed host is) leave their slots offered, and the dispatcher would
# hand the next scenario's jobs to those slots until their accept window ran out.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export DEV_BACKEND_STATE=$root/build/devbackend-molecule
export DEV_BACKEND_PORT=${MOLECULE_BACKEND_PORT:-3290}
export ALLOWED_REPO_HOSTS=github.com,10.213.0.1:8443
# Jobs of killed workers come back through the stuck-jobs runbook under test (runbooks
# scenario), not through the reclaim cron racing it: the cron runs hourly here.
export RECLAIM_INTERVAL_MS=3600000

# The operator token the scenarios hand to the operator commands (.config/molecule/config.yml)
# and their tests read jobs with: the backend's OPERATOR_TOKEN, the only one it accepts.
export FONDATION_TEST_OPERATOR_TOKEN=${FONDATION_TEST_OPERATOR_TOKEN:-local-operator-token-not-secret}

# Each host's /var/lib/docker is an anonymous volume that Molecule's destroy keeps (its
# docker_container removal keeps volumes): a run left ~30 GB behind. Remove the volumes
# this run orphaned, and only those (the dangling ones it did not find at its start).
dangling_before=$(docker volume ls -q --filter dangling=true | sort)
remove_orphaned_volumes() {
  comm -13 <(echo "$dangling_before") <(docker volume ls -q --filter dangling=true | sort) \
    | xargs -r docker volume rm >/dev/null 2>&1 || true
}

fresh_backend() {
  "$root/scripts/devbackend.sh" stop
  FONDATION_TEST_CONVEX_URL=$(OPERATOR_TOKEN=$FONDATION_TEST_OPERATOR_TOKEN "$root/scripts/devbackend.sh" start)
  export FONDATION_TEST_CONVEX_URL
}
trap '"$root/scripts/devbackend.sh" stop; remove_orphaned_volumes' EXIT

cd "$root"
if [ $# -eq 0 ]; then
  scenarios=()
  for file in molecule/*/molecule.yml; do
    scenarios+=("$(basename "$(dirname "$file")")")
  done
  set -- "${scenarios[@]}"
fi
for scenario in "$@"; do
  fresh_backend
  molecule test -s "$scenario"
done
