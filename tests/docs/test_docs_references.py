"""Every command the operator docs quote exists: make targets, repository paths (playbooks
included), ``fondation-worker`` subcommands and environment variables.

Scanned: README.md and docs/*.md. Only code is read (inline code spans and fenced blocks,
mermaid diagrams excepted), so prose such as "GNU make and git" is not a command. Each
failure names the document, the line and the missing thing.

- ``make <target>``: a target of the Makefile.
- Repository paths in code whose first part is a top-level entry of the repository
  (``roles/...``, ``worker/Dockerfile``, ``scripts/local-target.sh``) and every
  ``playbooks/*.yml``: the path exists; a glob (``playbooks/runbook-*.yml``) matches a file.
  Paths the operator creates are listed in OPERATOR_PATHS.
- ``fondation-worker <subcommand>``: a subcommand of the real typer app (imported).
- Environment variables: an inline code span that is one ALL_CAPS name with an underscore
  (``LEASE_MS``), and ``NAME=`` or ``$NAME`` in code. Each must be a worker setting (a
  pydantic Settings field or alias), a name the worker, the image, the Makefile, scripts/,
  the dev backend, convex/ (its env vars, error codes and constants) or the Ansible content
  uses, or one of EXTERNAL_NAMES (read by another program, with the reason).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

from fondation_worker.cli import app
from fondation_worker.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Names other programs read; the docs may quote them although nothing here defines them.
EXTERNAL_NAMES = {
    "ANTHROPIC_API_KEY": "read by the Claude CLI (also a worker setting)",
    "CLAUDE_CODE_OAUTH_TOKEN": "read by the Claude CLI (also a worker setting)",
    "CONVEX_DEPLOY_KEY": "read by `npx convex deploy`",
    "SCW_SECRET_KEY": "read by the Scaleway API tooling the provision play stands in for",
    "SCW_DEFAULT_PROJECT_ID": "Scaleway's standard project variable",
    "ANSIBLE_CONFIG": "read by ansible-playbook",
    "ANSIBLE_VAULT_PASSWORD_FILE": "read by ansible-playbook",
    "FONDATION_DOCS_TARGET": "read by tests/docs/test_docs_commands_on_the_host.py",
}

# Paths (and everything under them) that exist only once an operator or a build made them.
OPERATOR_PATHS = {
    "inventories/production": "the operator's inventory, copied from production.example",
    "build": "written by `make image`, `make deploy` and `make bench`",
    "bench/results.md": "written by `make bench`",
}

# Where names the docs may quote are defined or used.
NAME_SOURCES = [
    "Makefile",
    "scripts",
    "worker/fondation_worker",
    "worker/Dockerfile",
    "worker/image",
    "devbackend",
    "convex",
    "roles",
    "playbooks",
    "inventories",
    "molecule",
    ".config/molecule",
    "bench",
    "package.json",
]
SOURCE_SUFFIXES = {"", ".py", ".sh", ".ts", ".yml", ".yaml", ".j2", ".json", ".cfg", ".toml"}

ENV_SPAN = re.compile(r"^\$?\{?([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)\}?$")
ENV_IN_CODE = re.compile(r"(?<![A-Za-z0-9_$-])\$?\{?([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)(?:=|\}|\b)")
MAKE = re.compile(r"(?<![\w/.-])make[ \t]+((?:[A-Za-z_][A-Za-z0-9_]*=\S*[ \t]+)*)([a-z][\w-]*)")
CLI = re.compile(r"(?<![\w/.@:-])fondation-worker[ \t]+([a-z][a-z-]*)")
PLAYBOOK = re.compile(r"(?<![\w/.-])(playbooks/[\w*.-]+\.ya?ml)")


@dataclass(frozen=True)
class Code:
    """A piece of code in a document: its text, the line it starts on, and its kind."""

    doc: Path
    line: int
    text: str
    fenced: bool

    def where(self, offset: int = 0) -> str:
        name = self.doc.relative_to(ROOT) if self.doc.is_relative_to(ROOT) else self.doc
        return f"{name}:{self.line + self.text.count(chr(10), 0, offset)}"


def code_of(doc: Path) -> list[Code]:
    lines = doc.read_text(encoding="utf-8").splitlines()
    found: list[Code] = []
    prose: list[str] = []
    fence: str | None = None
    skip = False
    for number, line in enumerate(lines, start=1):
        marker = re.match(r"^\s*(`{3,}|~{3,})\s*([\w-]*)", line)
        if fence is None and marker:
            fence, skip = marker.group(1), marker.group(2) == "mermaid"
            prose.append("")
            continue
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            elif not skip:
                found.append(Code(doc, number, line, fenced=True))
            prose.append("")
            continue
        prose.append(line)
    text = "\n".join(prose)
    # Inline spans may wrap onto the next line, never across a blank line.
    for match in re.finditer(r"(`+)((?:(?!\n\s*\n).)+?)\1", text, re.DOTALL):
        start = text.count("\n", 0, match.start()) + 1
        found.append(Code(doc, start, match.group(2).strip(), fenced=False))
    return found


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets: set[str] = set()
    for match in re.finditer(r"^([A-Za-z0-9_.%/ -]+?)\s*:(?!=)", text, re.MULTILINE):
        targets.update(match.group(1).split())
    return targets


def cli_commands() -> set[str]:
    group = typer.main.get_command(app)
    commands = getattr(group, "commands", {})
    return set(commands)


def source_words() -> set[str]:
    words: set[str] = set()
    for name in NAME_SOURCES:
        path = ROOT / name
        files = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
        for file in files:
            if not file.is_file() or file.suffix not in SOURCE_SUFFIXES:
                continue
            if "node_modules" in file.parts or "__pycache__" in file.parts:
                continue
            try:
                words.update(re.findall(r"[A-Z][A-Z0-9_]+", file.read_text(encoding="utf-8")))
            except (UnicodeDecodeError, OSError):
                continue
    return words


def settings_names() -> set[str]:
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        names.add(field_name.upper())
        for alias in (field.alias, field.validation_alias):
            if isinstance(alias, str):
                names.add(alias.upper())
    return names


def path_exists(path: str) -> bool:
    if any(path.rstrip("/") == p or path.startswith(p + "/") for p in OPERATOR_PATHS):
        return True
    if any(c in path for c in "*?["):
        return any(ROOT.glob(path))
    return (ROOT / path).exists()


TOP_LEVEL = {p.name for p in ROOT.iterdir()} - {"node_modules", ".venv", "build", ".git"}
REPO_PATH = re.compile(r"^([\w.-]+)/[\w./*-]*$")


def check_make(doc: Path) -> list[str]:
    targets = makefile_targets()
    problems = []
    for code in code_of(doc):
        for match in MAKE.finditer(code.text):
            if match.group(2) not in targets:
                problems.append(
                    f"{code.where(match.start())}: `make {match.group(2)}`: "
                    "no such target in the Makefile"
                )
    return problems


def check_paths(doc: Path) -> list[str]:
    problems = []
    for code in code_of(doc):
        candidates = [(m.start(), m.group(1)) for m in PLAYBOOK.finditer(code.text)]
        for token in re.finditer(r"[^\s`'\"=(),;]+", code.text):
            path = token.group(0).rstrip(".:")
            match = REPO_PATH.match(path)
            if match and match.group(1) in TOP_LEVEL and not PLAYBOOK.fullmatch(path):
                candidates.append((token.start(), path))
        for offset, path in candidates:
            if not path_exists(path):
                problems.append(f"{code.where(offset)}: path `{path}` does not exist in the repo")
    return problems


def check_cli(doc: Path) -> list[str]:
    commands = cli_commands()
    problems = []
    for code in code_of(doc):
        for match in CLI.finditer(code.text):
            if match.group(1) not in commands:
                problems.append(
                    f"{code.where(match.start())}: `fondation-worker {match.group(1)}`: not a "
                    f"subcommand (the CLI has {', '.join(sorted(commands))})"
                )
    return problems


def check_env(doc: Path) -> list[str]:
    known = settings_names() | source_words() | set(EXTERNAL_NAMES)
    problems = []
    for code in code_of(doc):
        names: list[tuple[int, str]] = []
        span = ENV_SPAN.match(code.text) if not code.fenced else None
        if span:
            names.append((0, span.group(1)))
        for match in ENV_IN_CODE.finditer(code.text):
            if match.group(0).endswith("=") or match.group(0).startswith("$"):
                names.append((match.start(), match.group(1)))
        for offset, name in names:
            if name not in known:
                problems.append(
                    f"{code.where(offset)}: environment variable {name} is neither a worker "
                    "setting, nor used by the Makefile, scripts, image, convex/ or Ansible, "
                    "nor in EXTERNAL_NAMES"
                )
    return sorted(set(problems))


CHECKS = {"make": check_make, "paths": check_paths, "cli": check_cli, "env": check_env}


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
@pytest.mark.parametrize("kind", list(CHECKS))
def test_docs_reference_real_things(doc: Path, kind: str) -> None:
    problems = CHECKS[kind](doc)
    assert not problems, "\n".join(problems)


def test_the_scanner_sees_commands() -> None:
    """Guard against a scanner that passes by finding nothing."""
    readme = code_of(ROOT / "README.md")
    texts = " ".join(c.text for c in readme)
    assert "make deploy" in texts
    assert "playbooks/deploy.yml" in texts
    assert {"deploy", "test", "bench"} <= makefile_targets()
    assert {"run", "check", "enqueue", "status"} <= cli_commands()
    assert {"LEASE_MS", "CONVEX_URL", "WORKER_TOKEN"} <= settings_names()


def test_the_checks_catch_what_is_missing(tmp_path: Path) -> None:
    doc = tmp_path / "bad.md"
    doc.write_text(
        "Run `make no-such-target` and `fondation-worker no-such-command`.\n\n"
        "```sh\nNO_SUCH_SETTING=1 ansible-playbook playbooks/no-such.yml\n```\n\n"
        "Set `ANOTHER_MISSING_VAR`; see `roles/no_such_role/README.md`. GNU make and git.\n",
        encoding="utf-8",
    )
    found = "\n".join(problem for check in CHECKS.values() for problem in check(doc))
    for missing in (
        "bad.md:1: `make no-such-target`",
        "bad.md:1: `fondation-worker no-such-command`",
        "bad.md:4: environment variable NO_SUCH_SETTING",
        "bad.md:4: path `playbooks/no-such.yml`",
        "bad.md:7: environment variable ANOTHER_MISSING_VAR",
        "bad.md:7: path `roles/no_such_role/README.md`",
    ):
        assert missing in found, f"{missing!r} not reported:\n{found}"
    assert "`make and`" not in found
