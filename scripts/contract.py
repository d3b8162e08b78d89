"""The worker's copy of the contract's enumerations, generated from their one source.

convex/lib/policy.ts declares each enumeration once (job statuses and their groups, error
kinds, drop reasons, retry and reclaim outcomes, stuck reasons, document kinds), every value
with its comment. Convex's validators are built from those arrays; the worker's are this
generator's output, worker/fondation_worker/contract.py: a ``Literal`` type and a tuple per
enumeration.

``python -m scripts.contract [--check] [ROOT]``, run at the repository's root, writes (or,
with ``--check``, compares) that file. tests/docs/test_single_sources.py fails when it is
stale. A development tool, like scripts/reference.py: not part of the worker package.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path("convex/lib/policy.ts")
OUTPUT = Path("worker/fondation_worker/contract.py")

# policy.ts array -> the worker's Literal type, in the order they are written out.
ENUMERATIONS = {
    "JOB_STATUSES": "JobStatus",
    "QUEUED_STATUSES": "QueuedStatus",
    "LEASED_STATUSES": "LeasedStatus",
    "TERMINAL_STATUSES": "TerminalStatus",
    "ACTIVE_STATUSES": "ActiveStatus",
    "ERROR_KINDS": "ErrorKind",
    "DROP_REASONS": "DropReason",
    "RETRY_OUTCOMES": "RetryOutcome",
    "STUCK_REASONS": "StuckReason",
    "RECLAIM_OUTCOMES": "ReclaimOutcome",
    "DOC_KINDS": "DocKind",
}

_ARRAY = re.compile(
    r"(?:/\*\*\s*(?P<doc>[^\n]*?)\s*\*/\n)?"
    r"export const (?P<name>[A-Z_]+) = \[(?P<body>[^\]]*)\] as const"
    r"(?: satisfies [^;]+)?;"
)
_VALUE = re.compile(r'"([a-z_]+)"')


@dataclass(frozen=True)
class Enumeration:
    name: str  # as in policy.ts: JOB_STATUSES
    type_name: str  # the worker's: JobStatus
    doc: str
    values: tuple[tuple[str, str], ...]  # (value, its comment)


def parse(source: str) -> list[Enumeration]:
    """The enumerations of ENUMERATIONS as policy.ts declares them (each one required)."""
    found: dict[str, Enumeration] = {}
    for match in _ARRAY.finditer(source):
        name = match.group("name")
        if name not in ENUMERATIONS:
            continue
        values: list[tuple[str, str]] = []
        for line in match.group("body").splitlines() or [match.group("body")]:
            code, _, comment = line.partition("//")
            names = _VALUE.findall(code)
            if len(names) > 1 and comment:
                raise ValueError(f"{name}: one value per line when it has a comment: {line!r}")
            values += [(value, comment.strip()) for value in names]
        if not values:
            raise ValueError(f"{SOURCE}: {name} has no values")
        if len({value for value, _ in values}) != len(values):
            raise ValueError(f"{SOURCE}: {name} lists a value twice")
        found[name] = Enumeration(name, ENUMERATIONS[name], match.group("doc") or "", tuple(values))
    missing = [name for name in ENUMERATIONS if name not in found]
    if missing:
        raise ValueError(f"{SOURCE}: no `export const NAME = [...] as const;` for {missing}")
    return [found[name] for name in ENUMERATIONS]


def python(enumerations: list[Enumeration]) -> str:
    """contract.py: what ``ruff format`` leaves as is."""
    lines = [
        '"""The contract\'s enumerations (docs/CONTRACT.md), generated from convex/lib/policy.ts',
        "by ``python -m scripts.contract``: edit policy.ts, then run it, never this file.",
        'tests/docs/test_single_sources.py fails when this file is stale."""',
        "",
        "from __future__ import annotations",
        "",
        "from typing import Literal",
    ]
    for index, enum in enumerate(enumerations):
        lines += [""] if index == 0 else ["", ""]
        if enum.doc:
            lines.append(f"# {enum.doc}")
        lines.append(f"{enum.type_name} = Literal[")
        for value, comment in enum.values:
            lines.append(f'    "{value}",' + (f"  # {comment}" if comment else ""))
        lines.append("]")
        lines.append(f"{enum.name}: tuple[{enum.type_name}, ...] = (")
        lines += [f'    "{value}",' for value, _ in enum.values]
        lines.append(")")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    root = Path(args[0] if args else ".")
    wanted = python(parse((root / SOURCE).read_text(encoding="utf-8")))
    path = root / OUTPUT
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    if current == wanted:
        return 0
    if check:
        print(f"stale, run `python -m scripts.contract`: {path}", file=sys.stderr)
        return 1
    path.write_text(wanted, encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
