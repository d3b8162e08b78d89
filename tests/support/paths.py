"""Where things are, and the fixed test credentials: what every harness (tests, bench, chaos)
points its processes at."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SUPPORT = Path(__file__).resolve().parent
FAKES = SUPPORT / "fakes"
# The fake `claude` of the process tests and bench, and the one mounted into chaos containers.
FAKE_CLAUDE = FAKES / "claude"
CHAOS_CLAUDE = FAKES / "chaos_claude"
# The success path only, in sh: for load benches (bench/scale.py).
LIGHT_CLAUDE = FAKES / "light_claude"
VENV_BIN = Path(sys.executable).parent
WORKER_BIN = VENV_BIN / "fondation-worker"
DEV_BACKEND = REPO_ROOT / "devbackend" / "server.ts"
TSX = REPO_ROOT / "node_modules" / ".bin" / "tsx"

TEST_WORKER_TOKEN = "test-worker-token-" + "0123456789abcdef"
# The dev backend's OPERATOR_TOKEN: the only credential its operator functions accept
# (enqueue/get/list/cancel with a token, docs reads, operator:*). The worker token has none.
TEST_OPERATOR_TOKEN = "test-operator-token-" + "fedcba9876543210"
# The dev backend's METRICS_SCRAPE_TOKEN: what a Prometheus sends to GET /http/metrics.
TEST_SCRAPE_TOKEN = "test-scrape-token-" + "0a1b2c3d4e5f6789"
