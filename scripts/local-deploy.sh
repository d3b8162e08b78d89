#!/usr/bin/env bash
# `make deploy` after the image is built: the local target up, the dev backend, the demo
# stand-ins for whatever real service this machine cannot reach, the deploy play, the demo job.
#   - Claude: CLAUDE_CODE_OAUTH_TOKEN or ANTHROPIC_API_KEY exported -> Anthropic's API;
#     otherwise the scripted Messages API stand-in (the real claude CLI still runs).
#   - Repository: DEMO_REPO exported -> that one (it needs internet from the target);
#     otherwise the stand-in git server's sample repository.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${FONDATION_LOCAL_TARGET:-fondation-local}
python=${PYTHON:-$root/.venv/bin/python}

scripts/local-target.sh up
info=$(scripts/demo-standins.sh start)
field() { "$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$info" "$1"; }

# The stand-in's certificate must be a file on the target: the worker container mounts it.
ca=/opt/fondation-demo/ca.pem
timeout 60 docker exec "$target" mkdir -p /opt/fondation-demo
timeout 60 docker cp "$(field ca_file)" "$target:$ca"
timeout 60 docker exec "$target" chmod 0644 "$ca"

export ALLOWED_REPO_HOSTS=${ALLOWED_REPO_HOSTS:-github.com,$(field git_host)}
export FONDATION_DEMO_GIT_CA=$ca
export FONDATION_DEMO_ANTHROPIC_URL=$(field anthropic_base_url)
export DEMO_REPO=${DEMO_REPO:-$(field repo_url)}
FONDATION_CONVEX_URL=$(scripts/devbackend.sh start)
export FONDATION_CONVEX_URL
if [ -n "${CLAUDE_CODE_OAUTH_TOKEN:-}${ANTHROPIC_API_KEY:-}" ]; then
  echo "==> Claude: your credentials (Anthropic's API)"
else
  echo "==> Claude: no credentials exported; the worker's real claude CLI talks to the scripted"
  echo "    Messages API stand-in at $FONDATION_DEMO_ANTHROPIC_URL (export CLAUDE_CODE_OAUTH_TOKEN for the real one)"
fi
echo "==> repository: $DEMO_REPO"

timeout 1800 ansible-playbook -i inventories/local playbooks/deploy.yml
DEMO_WAIT_SECONDS=${DEMO_WAIT_SECONDS:-180} "$python" scripts/demo_job.py
