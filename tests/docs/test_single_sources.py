"""Values written once, read everywhere else: a copy that drifts fails here.

- The contract's enumerations (job statuses and their groups, error kinds, drop reasons,
  retry and reclaim outcomes, stuck reasons, document kinds): convex/lib/policy.ts declares
  each one. Convex's validators are built from its arrays (convex/lib/validators.ts); the
  worker's worker/fondation_worker/contract.py is generated from them (``python -m
  scripts.contract``) and must be fresh; no other Python or validator code spells out an
  enumeration; the docs name every value.
- The Claude CLI version: worker/claude-cli.lock is the only file that names it. The image
  build, scripts/claude-cli.sh and the tests read the lock; the image carries it in its
  ``org.fondation.claude-cli.version`` label and ``CLAUDE_CLI_VERSION`` (checked in
  tests/image), which the status play and ``/healthz`` report.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from fondation_worker import contract
from scripts import contract as generator
from tests.support import REPO_ROOT

ENUMERATIONS = {
    enum.name: enum
    for enum in generator.parse((REPO_ROOT / generator.SOURCE).read_text(encoding="utf-8"))
}

LOCK = REPO_ROOT / "worker" / "claude-cli.lock"


def _lock() -> dict[str, str]:
    lines = LOCK.read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _tracked_text_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True, timeout=60
    ).stdout.decode()
    return [name for name in listed.split("\0") if name]


def test_the_claude_cli_version_is_written_only_in_its_lock() -> None:
    version = _lock()["CLAUDE_CLI_VERSION"]
    assert version.count(".") == 2, version
    named_in = []
    for name in _tracked_text_files():
        path = REPO_ROOT / name
        if name == "worker/claude-cli.lock" or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if version in text:
            named_in.append(name)
    assert named_in == [], (
        f"the Claude CLI version {version} is written outside worker/claude-cli.lock: "
        f"{named_in}; read the lock (or name it) instead"
    )


# --- the contract's enumerations ------------------------------------------------------------


def _values(name: str) -> tuple[str, ...]:
    return tuple(value for value, _ in ENUMERATIONS[name].values)


def test_the_workers_enumerations_are_generated_from_policy_ts_and_fresh() -> None:
    path = REPO_ROOT / generator.OUTPUT
    assert path.read_text(encoding="utf-8") == generator.python(list(ENUMERATIONS.values())), (
        f"{generator.OUTPUT} is stale: run `python -m scripts.contract`"
    )
    assert generator.main(["--check", str(REPO_ROOT)]) == 0
    for name in generator.ENUMERATIONS:
        assert getattr(contract, name) == _values(name)


def test_every_status_group_is_made_of_job_statuses() -> None:
    statuses = set(contract.JOB_STATUSES)
    for group in ("QUEUED", "LEASED", "TERMINAL", "ACTIVE"):
        assert set(getattr(contract, f"{group}_STATUSES")) <= statuses, group
    assert set(contract.RETRY_OUTCOMES) <= statuses
    assert set(contract.RECLAIM_OUTCOMES) <= statuses


# Quoted words in brackets (a list, tuple, set or Literal): a copy when they are exactly the
# values of an enumeration (a subset picked for one purpose, such as the statuses a test
# waits for, is not).
_RUN = re.compile(r'[\[({]((?:\s*"[a-z_]+"\s*,?\s*(?:#[^\n]*)?)+)[\])}]')
_TS_UNION = re.compile(r"v\.union\(((?:\s*v\.literal\(\"[a-z_]+\"\),?)+)\s*\)")
PYTHON_SOURCES = [
    "worker/fondation_worker",
    "chaos",
    "tests/support",
    "bench",
    "scripts",
    "plugins",
]


def _copies(text: str, runs: re.Pattern[str]) -> list[tuple[str, list[str]]]:
    copies = []
    for run in runs.finditer(text):
        words = re.findall(r'"([a-z_]+)"', run.group(1))
        for name, enum in ENUMERATIONS.items():
            if len(words) >= 2 and set(words) == {value for value, _ in enum.values}:
                copies.append((name, words))
                break
    return copies


def _python_files() -> list[Path]:
    files = [f for d in PYTHON_SOURCES for f in sorted((REPO_ROOT / d).rglob("*.py"))]
    return [f for f in files if f != REPO_ROOT / generator.OUTPUT]


@pytest.mark.parametrize("path", _python_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_python_code_spells_out_an_enumeration(path: Path) -> None:
    copies = _copies(path.read_text(encoding="utf-8"), _RUN)
    assert copies == [], (
        f"{path.relative_to(REPO_ROOT)} writes out values of the contract's enumerations "
        f"{copies}: import them from fondation_worker.contract instead"
    )


def test_no_convex_validator_spells_out_an_enumeration() -> None:
    for path in sorted((REPO_ROOT / "convex").rglob("*.ts")):
        if "_generated" in path.parts:
            continue
        copies = _copies(path.read_text(encoding="utf-8"), _TS_UNION)
        assert copies == [], (
            f"{path.relative_to(REPO_ROOT)} builds a validator from written-out values "
            f"{copies}: use the policy.ts array (oneOf in convex/lib/validators.ts)"
        )


def test_the_copy_detector_finds_a_copy() -> None:
    assert _copies('ENDED = ("completed", "dead",\n  "canceled")  # ended', _RUN) == [
        ("TERMINAL_STATUSES", ["completed", "dead", "canceled"])
    ]
    union = 'v.union(v.literal("lease_expired"), v.literal("running_too_long"))'
    assert _copies(union, _TS_UNION) == [("STUCK_REASONS", ["lease_expired", "running_too_long"])]
    assert _copies('wait_status(job, {"completed", "dead", "failed"})', _RUN) == []


def _doc(name: str) -> str:
    return (REPO_ROOT / "docs" / name).read_text(encoding="utf-8")


def test_the_contract_doc_lists_the_statuses_it_counts() -> None:
    counts = re.search(r"counts: \{([a-z,\s]+)\}", _doc("CONTRACT.md"))
    assert counts, "docs/CONTRACT.md: metrics:queue's counts"
    assert tuple(re.findall(r"[a-z]+", counts.group(1))) == contract.JOB_STATUSES


def test_the_state_machine_draws_every_status() -> None:
    diagram = _doc("ARCHITECTURE.md").split("stateDiagram-v2", 1)[1].split("```", 1)[0]
    drawn = set(re.findall(r"(?m)^\s*(?:\[\*\]|([a-z]+)) --> (?:\[\*\]|([a-z]+))", diagram))
    states = {state for pair in drawn for state in pair if state}
    assert states == set(contract.JOB_STATUSES)


@pytest.mark.parametrize(
    ("doc", "name"),
    [
        ("CONTRACT.md", "ERROR_KINDS"),
        ("CONTRACT.md", "DROP_REASONS"),
        ("CONTRACT.md", "STUCK_REASONS"),
        ("CONTRACT.md", "DOC_KINDS"),
        ("CONTRACT.md", "RETRY_OUTCOMES"),
        ("OPERATIONS.md", "DROP_REASONS"),
    ],
)
def test_the_docs_name_every_value(doc: str, name: str) -> None:
    text = _doc(doc)
    missing = [v for v in _values(name) if not re.search(rf"(?<![A-Za-z_]){v}(?![A-Za-z_])", text)]
    assert missing == [], f"docs/{doc} does not name the {name} {missing}"
