"""The commands a newcomer and an on-call operator type work as written.

- README "Deploying for real" is a complete transcript of a first deploy: every step is
  there, in order, and no command runs a program before the step that provides it (Ansible
  lives in `.venv`, the Convex CLI in `node_modules`).
- Every `ansible-playbook` command on the production inventory, in README.md and docs/*.md,
  can decrypt its vault: the production inventory carries an encrypted vault that Ansible
  decrypts while loading the inventory, so every play on it (the read-only status play
  included) stops with "Attempting to decrypt but no vault secrets found" without the
  password. Either the command carries a vault option, or the document sets
  ANSIBLE_VAULT_PASSWORD_FILE once, before its first such command.

Only code is read: fenced blocks and inline code spans, in document order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# What `make deps` installs into .venv/bin and node_modules/.bin, as a newcomer would call them.
VENV_TOOLS = {"ansible", "ansible-playbook", "ansible-vault", "ansible-galaxy", "fondation-worker"}
NODE_TOOLS = {"npx"}
ACTIVATE = re.compile(r"^(source|\.)\s+\.venv/bin/activate$")

# A first deploy, in order: each is a prefix of one command of the README section.
FIRST_DEPLOY = [
    "make deps",
    "source .venv/bin/activate",
    "npx convex deploy",
    # no shared WORKER_TOKEN: the deploy issues each replica its own credential
    "npx convex env set OPERATOR_TOKEN ",
    "npx convex env set ALLOWED_REPO_HOSTS ",
    "cp -r inventories/production.example inventories/production",
    "export ANSIBLE_VAULT_PASSWORD_FILE=",
    "ansible-vault encrypt inventories/production/group_vars/workers/vault.yml",
    "make image",
    "ansible-playbook -i inventories/production playbooks/deploy.yml",
]

VAULT_OPTION = re.compile(
    r"(?<!\S)(--ask-vault-pass(word)?|-J|--vault-password-file|--vault-pass-file|--vault-id)(?!\S)"
)
PRODUCTION = re.compile(r"(?<!\S)(-i|--inventory)[ =]inventories/production/?(?!\S)")
GLOBAL_VAULT = re.compile(r"^export ANSIBLE_VAULT_PASSWORD_FILE=\S+")


@dataclass(frozen=True)
class Command:
    doc: Path
    line: int
    text: str

    def where(self) -> str:
        name = self.doc.relative_to(ROOT) if self.doc.is_relative_to(ROOT) else self.doc
        return f"{name}:{self.line}"


CODE = re.compile(
    r"^[ \t]*(`{3,})[\w-]*\n(?P<block>.*?)^[ \t]*\1[ \t]*$|`(?P<span>[^`\n]+(?:\n[^`\n]+)*?)`",
    re.MULTILINE | re.DOTALL,
)


def commands_of(doc: Path, text: str | None = None) -> list[Command]:
    """Fenced lines (continuations joined, comments dropped) and inline spans, in order."""
    text = doc.read_text(encoding="utf-8") if text is None else text
    found: list[Command] = []
    for match in CODE.finditer(text):
        start = text.count("\n", 0, match.start()) + 1
        if match.group("block") is not None:
            pending, first = "", 0
            for offset, raw in enumerate(match.group("block").splitlines(), start=1):
                line = re.sub(r"(^|\s)#\s.*$", "", raw).strip()
                if not pending:
                    first = start + offset
                pending = f"{pending} {line}".strip() if pending else line
                if pending.endswith("\\"):
                    pending = pending[:-1].rstrip()
                    continue
                if pending:
                    found.append(Command(doc, first, pending))
                pending = ""
        else:
            found.append(Command(doc, start, " ".join(match.group("span").split())))
    return found


def section(text: str, heading: str) -> tuple[str, int]:
    """The text of a `## heading` section and the line it starts on."""
    match = re.search(
        rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL
    )
    assert match, f"no '## {heading}' section"
    return match.group(0), text.count("\n", 0, match.start())


def programs(command: str) -> list[str]:
    """The programs a shell line starts: the first word of each part, assignments skipped."""
    words = []
    for part in re.split(r"\|\||&&|[;|()]", command):
        tokens = [t for t in part.split() if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", t)]
        if tokens:
            words.append(tokens[0])
    return words


def transcript_problems(commands: list[Command]) -> list[str]:
    problems = []
    activated = deps = False
    for command in commands:
        for program in programs(command.text):
            if program in VENV_TOOLS and not activated:
                problems.append(
                    f"{command.where()}: `{command.text}` runs {program} before "
                    "`source .venv/bin/activate` (it lives in .venv/bin only)"
                )
            if program in NODE_TOOLS and not deps:
                problems.append(
                    f"{command.where()}: `{command.text}` runs {program} before `make deps`"
                )
        if ACTIVATE.match(command.text):
            activated = True
        if command.text == "make deps":
            deps = True
    texts = [c.text for c in commands]
    position = -1
    for step in FIRST_DEPLOY:
        at = next((i for i, t in enumerate(texts) if t.startswith(step)), None)
        if at is None:
            problems.append(f"the first deploy never says `{step}`")
        elif at < position:
            problems.append(f"`{step}` comes before the step it needs ({commands[at].where()})")
        else:
            position = at
    return problems


def vault_problems(commands: list[Command]) -> list[str]:
    problems = []
    global_setting = False
    for command in commands:
        if GLOBAL_VAULT.match(command.text):
            global_setting = True
        if "ansible-playbook" not in programs(command.text):
            continue
        if PRODUCTION.search(command.text) and not (
            global_setting or VAULT_OPTION.search(command.text)
        ):
            problems.append(
                f"{command.where()}: `{command.text}` needs the production vault's password: "
                "add --ask-vault-pass, or `export ANSIBLE_VAULT_PASSWORD_FILE=...` earlier in "
                "the document"
            )
    return problems


def test_the_readme_first_deploy_is_complete_and_in_order() -> None:
    readme = ROOT / "README.md"
    text, first_line = section(readme.read_text(encoding="utf-8"), "Deploying for real")
    commands = [Command(c.doc, c.line + first_line, c.text) for c in commands_of(readme, text)]
    problems = transcript_problems(commands)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_every_production_play_can_decrypt_the_vault(doc: Path) -> None:
    problems = vault_problems(commands_of(doc))
    assert not problems, "\n".join(problems)


def test_the_runbook_says_once_how_the_vault_password_is_given() -> None:
    commands = commands_of(ROOT / "docs" / "RUNBOOK.md")
    plays = [c for c in commands if PRODUCTION.search(c.text) and "ansible-playbook" in c.text]
    assert len(plays) >= 15, "the scanner should see the runbook's plays"
    setting = [c for c in commands if GLOBAL_VAULT.match(c.text)]
    assert setting, "RUNBOOK must say how every play gets the vault password"
    assert setting[0].line < plays[0].line
    assert "Attempting to decrypt but no vault secrets found" in (
        ROOT / "docs" / "RUNBOOK.md"
    ).read_text(encoding="utf-8")


def test_the_checks_catch_what_is_missing(tmp_path: Path) -> None:
    doc = tmp_path / "bad.md"
    doc.write_text(
        "Look first: `ansible-playbook -i inventories/production playbooks/status.yml`.\n\n"
        "```sh\n"
        "ansible-playbook -i inventories/production playbooks/deploy.yml \\\n"
        "  --ask-vault-pass\n"
        "npx convex deploy\n"
        "make deps\n"
        "ansible-playbook -i inventories/local playbooks/deploy.yml   # no vault there\n"
        "export ANSIBLE_VAULT_PASSWORD_FILE=~/.vault-pass\n"
        "ansible-playbook -i inventories/production playbooks/rollback.yml\n"
        "```\n",
        encoding="utf-8",
    )
    commands = commands_of(doc)
    assert [c.line for c in commands] == [1, 4, 6, 7, 8, 9, 10]
    assert vault_problems(commands) == [
        f"{doc}:1: `ansible-playbook -i inventories/production playbooks/status.yml` needs the "
        "production vault's password: add --ask-vault-pass, or `export "
        "ANSIBLE_VAULT_PASSWORD_FILE=...` earlier in the document"
    ]
    found = "\n".join(transcript_problems(commands))
    for missing in (
        f"{doc}:1: `ansible-playbook -i inventories/production playbooks/status.yml` runs "
        "ansible-playbook before `source .venv/bin/activate`",
        f"{doc}:6: `npx convex deploy` runs npx before `make deps`",
        "the first deploy never says `make image`",
        "`npx convex deploy` comes before the step it needs",
    ):
        assert missing in found, f"{missing!r} not reported:\n{found}"
