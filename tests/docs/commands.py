"""The commands README.md, docs/OPERATIONS.md and docs/RUNBOOK.md tell a newcomer or an
operator to type, and what vouches for each one (issue 26).

A command is
- a line of a shell code block (```sh, ```bash, ```console or no language), its continuation
  lines joined and its comments dropped;
- an inline code span of two words or more whose first word (after ``NAME=value``
  assignments) is a program the docs have you run (PROGRAMS), unless MENTIONS lists it: those
  name a step a tool takes (`docker build`), not something to type.

Each command is
- run: RUN_BY names what runs it: a test under tests/docs, which gets the command from here
  (``DocShell.run`` refuses a command that is not documented or not in RUN_BY, and the test
  fails unless it ran every command RUN_BY gives it), `make test` (its recipe reaches the
  target) or `.ci/run`; or
- marked in the document as needing what no test has here, with an HTML comment right above
  its code block, or in the paragraph (the lines between blank lines) of its inline span:
      <!-- needs: a real VPS -->
      <!-- needs: a real Convex deployment, a real VPS; a note for the reader -->
  Each need is a key of NEEDS; the text after ";" is free. The comment is invisible once
  rendered and reads as a plain note in the source; or
- one of LONG_RUNS: local, but too long for `make test`, with the reason.

tests/docs/test_docs_commands.py holds the docs to this; the tests named in RUN_BY run the
commands.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "docs/OPERATIONS.md", "docs/RUNBOOK.md")

# What a marking may say a command needs: infrastructure no test here has.
NEEDS = {
    "a real VPS": "a Debian host over SSH: the production inventory's hosts, or a shell on one",
    "a Scaleway account": "Scaleway's API with a real secret key",
    "a real Convex deployment": "the Convex CLI against your deployment (CONVEX_DEPLOY_KEY)",
    "Anthropic credentials": "a Claude login, OAuth token or API key, and Anthropic's API",
}

# The first words of the inline spans that are commands to type.
PROGRAMS = frozenset(
    {
        "make",
        "npx",
        "ansible-playbook",
        "ansible-vault",
        "fondation-worker",
        "docker",
        "sudo",
        "systemctl",
        "journalctl",
        "claude",
        "source",
        "export",
        "read",
        "unset",
        "cp",
        "mkdir",
        "cat",
        "df",
        "tar",
        "openssl",
        "ssh-keygen",
        "python",
        "python3",
        "$EDITOR",
    }
)
PROGRAM_PATHS = (".venv/bin/", "scripts/", "./")

# Inline spans that start like a command but name what a tool or the system does.
MENTIONS = {
    "docker build": "a step of `make image` (scripts/build-image.sh)",
    "docker save": "a step of `make image`",
    "docker load": "what the deploy runs on a host",
    "docker pussh": "another project's command, for comparison",
    "docker run": "the production unit's command",
    "docker stop": "what systemd runs when a replica stops",
    "systemctl restart": "what the deploy does to each replica",
    "claude -p": "the Claude call `fondation-worker check` makes",
    "docker exec -e OPERATOR_TOKEN": "how the stuck-jobs play hands the token over",
    "docker run -it ... claude auth login": "the command the auth-refresh play prints",
}

# Local commands too long for `make test`, and why.
LONG_RUNS = {
    "make chaos": "200 jobs under faults, about 14 minutes; `make test` runs the same harness "
    "as `make chaos-short` (60 jobs)",
    "make bench": "the performance report: every bench script, about 30 minutes",
    "make flake SCENARIO=runbooks N=5": "five Molecule runs of one scenario",
    ".venv/bin/python -m bench.image": "builds the worker image twice, cold and warm",
    "make claude-cli-bump": "fetches the CLI (about 200 MB) from the npm registry, rebuilds the "
    "image and runs every real-CLI suite; tests/unit/test_claude_cli_bump.py runs its logic",
    "make claude-cli-bump VERSION=2.1.337": "the same, for a given version",
}

MAKE_TEST = "make test"
CI = ".ci/run"
_LOCAL = "tests/docs/test_docs_commands_local.py::"
_FIRST_DEPLOY = _LOCAL + "test_the_first_deploy_prepares_the_inventory_and_its_vault"
_MAKE = _LOCAL + "test_the_make_targets_outside_make_test"
_BACKEND = "tests/docs/test_docs_commands_backend.py::"
_OPERATOR = _BACKEND + "test_the_operator_commands_on_an_operators_machine"
_CHECK = _BACKEND + "test_check_and_status_as_a_replica_runs_them"
_ENQUEUE = _BACKEND + "test_enqueue_wait_follows_a_job_to_its_documents"
_SCALEWAY = "tests/docs/test_docs_commands_scaleway.py::test_provisioning_a_scaleway_instance"
_HOST = "tests/docs/test_docs_commands_on_the_host.py::"
_ON_THE_HOST = _HOST + "test_the_commands_on_a_worker_host"
_RESTARTS = _HOST + "test_the_restarts_on_a_worker_host"

# What runs each documented command: a test (path::function), `make test` or `.ci/run`.
RUN_BY: dict[str, str] = {
    # make targets: `make test` reaches them (Makefile), or a test runs them.
    MAKE_TEST: CI,
    "make deps": MAKE_TEST,
    "make image": MAKE_TEST,
    "make lint": MAKE_TEST,
    "make pytest": MAKE_TEST,
    "make convex-test": MAKE_TEST,
    "make molecule": MAKE_TEST,
    "make chaos-short": MAKE_TEST,
    "make deploy": MAKE_TEST,
    "make clean-local": MAKE_TEST,
    "make monitoring": MAKE_TEST,
    "make dashboard": _MAKE,
    "make help": _MAKE,
    "make pytest-fast": _MAKE,
    # README "Deploying for real" steps 0 and 2, OPERATIONS and RUNBOOK: the toolchain, the
    # inventory, the vault password file and the vault, in a scratch copy of the repository.
    "source .venv/bin/activate": _FIRST_DEPLOY,
    "cp -r inventories/production.example inventories/production": _FIRST_DEPLOY,
    "$EDITOR inventories/production/hosts.yml inventories/production/group_vars/workers/main.yml": (
        _FIRST_DEPLOY
    ),
    "$EDITOR inventories/production/group_vars/workers/vault.yml": _FIRST_DEPLOY,
    "mkdir -p ~/.config/fondation-worker": _FIRST_DEPLOY,
    "(umask 077; openssl rand -base64 32 > ~/.config/fondation-worker/vault-pass)": (_FIRST_DEPLOY),
    "export ANSIBLE_VAULT_PASSWORD_FILE=~/.config/fondation-worker/vault-pass": _FIRST_DEPLOY,
    "ansible-vault encrypt inventories/production/group_vars/workers/vault.yml": _FIRST_DEPLOY,
    "ansible-vault edit inventories/production/group_vars/workers/vault.yml": _FIRST_DEPLOY,
    # The CLI against a dev backend of the test's own.
    "export CONVEX_URL=https://<deployment>.convex.cloud": _OPERATOR,
    "read -rs OPERATOR_TOKEN && export OPERATOR_TOKEN": _OPERATOR,
    "fondation-worker status": _OPERATOR,
    "fondation-worker stuck": _OPERATOR,
    "fondation-worker cancel <job id>": _OPERATOR,
    "fondation-worker cancel <job id> --yes": _OPERATOR,
    "fondation-worker check": _CHECK,
    "fondation-worker enqueue --wait": _ENQUEUE,
    # OPERATIONS "Provisioning a Scaleway instance", against the fake Scaleway API.
    "export SCW_SECRET_KEY=...": _SCALEWAY,
    "export SCW_DEFAULT_PROJECT_ID=...": _SCALEWAY,
    "ansible-playbook playbooks/provision.yml -e \"scaleway_instance_ssh_public_key='$(cat "
    "~/.ssh/id_ed25519.pub)'\"": _SCALEWAY,
    # On a worker host: the local target once `make deploy` converged it.
    "systemctl status 'fondation-worker@*'": _ON_THE_HOST,
    "journalctl -u fondation-worker@1 -n 50 --no-pager": _ON_THE_HOST,
    "docker logs --tail 50 fondation-worker-1": _ON_THE_HOST,
    "docker logs fondation-worker-<i>": _ON_THE_HOST,
    "journalctl -u fondation-worker@<i>": _ON_THE_HOST,
    "docker exec fondation-worker-1 fondation-worker check": _ON_THE_HOST,
    "sudo docker exec fondation-worker-1 fondation-worker check": _ON_THE_HOST,
    "docker exec fondation-worker-1 fondation-worker status": _ON_THE_HOST,
    "docker exec -e OPERATOR_TOKEN fondation-worker-1 fondation-worker cancel <job id>": (
        _ON_THE_HOST
    ),
    "docker exec -e OPERATOR_TOKEN fondation-worker-1 fondation-worker cancel <job id> --yes": (
        _ON_THE_HOST
    ),
    "df -h / /var/lib/docker": _ON_THE_HOST,
    "docker system df": _ON_THE_HOST,
    "cat /var/lib/fondation-worker/releases": _ON_THE_HOST,
    "docker images fondation-worker": _ON_THE_HOST,
    "sudo tar -C /srv -czf claude-creds-$(date +%F).tgz claude-creds": _ON_THE_HOST,
    "systemctl restart fondation-worker@<i>": _RESTARTS,
    "sudo systemctl restart 'fondation-worker@*'": _RESTARTS,
}

# Tests that run only on a deployed local target: `make test` runs them in its deploy stage.
NEEDS_THE_DEPLOYED_TARGET = ("tests/docs/test_docs_commands_on_the_host.py",)

# Commands and tests `make test` does not reach yet, each waiting for a stage that will run
# it; test_docs_commands.py fails as soon as one is reached, so that it leaves this list.
# Empty: the deploy stage (scripts/first-deploy-check.sh) runs `make deploy`, the on-the-host
# tests and `make clean-local`.
AWAITING_THE_DEPLOY_STAGE: tuple[str, ...] = ()


# --- reading the documents ----------------------------------------------------------------


@dataclass(frozen=True)
class Mark:
    """A ``<!-- needs: ... -->`` comment."""

    doc: str
    line: int
    needs: tuple[str, ...]
    note: str

    def where(self) -> str:
        return f"{self.doc}:{self.line}"


@dataclass(frozen=True)
class DocCommand:
    doc: str
    line: int
    text: str
    fenced: bool
    mark: Mark | None = None

    def where(self) -> str:
        return f"{self.doc}:{self.line}"


SHELL_FENCES = frozenset({"", "sh", "bash", "shell", "console"})
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w-]*)")
MARK = re.compile(r"<!--\s*needs:(?P<needs>[^;]*?)(?:;(?P<note>.*?))?\s*-->", re.DOTALL)
INLINE = re.compile(r"(`+)((?:(?!\n[ \t]*\n).)+?)\1", re.DOTALL)
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def is_command(span: str) -> bool:
    """Whether an inline code span is a command to type."""
    if span in MENTIONS or len(span.split()) < 2:
        return False
    words = span.split()
    while words and ASSIGNMENT.match(words[0]):
        words = words[1:]
    return bool(words) and (words[0] in PROGRAMS or words[0].startswith(PROGRAM_PATHS))


def shell_lines(block: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The commands of a shell block: (line, text), continuations joined, comments dropped."""
    found: list[tuple[int, str]] = []
    pending, first = "", 0
    for number, raw in block:
        line = re.sub(r"(^|\s)#(\s.*)?$", "", raw).strip()
        if not pending:
            first = number
        pending = f"{pending} {line}".strip() if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        if pending:
            found.append((first, " ".join(pending.split())))
        pending = ""
    return found


def read_doc(doc: str, text: str | None = None) -> tuple[list[DocCommand], list[Mark]]:
    """Every command of ``doc`` (a path relative to the repository) with the marking that
    covers it, and every marking, in document order."""
    source = (ROOT / doc).read_text(encoding="utf-8") if text is None else text
    rows = source.splitlines()
    prose: list[str] = []
    blocks: list[tuple[int, str, list[tuple[int, str]]]] = []  # (fence line, language, lines)
    fence: str | None = None
    for number, line in enumerate(rows, start=1):
        opening = FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)
            blocks.append((number, opening.group(2), []))
            prose.append("")
            continue
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            else:
                blocks[-1][2].append((number, line))
            prose.append("")
            continue
        prose.append(line)
    # Paragraphs: runs of non-blank prose lines (a code block ends one), numbered from 1.
    paragraph = [0] * (len(prose) + 2)
    current, blank_before = 0, True
    for number, line in enumerate(prose, start=1):
        if line.strip():
            current += 1 if blank_before else 0
            paragraph[number] = current
        blank_before = not line.strip()
    text_ = "\n".join(prose)
    marks: list[Mark] = []
    block_marks: dict[int, Mark] = {}
    paragraph_marks: dict[int, Mark] = {}
    for match in MARK.finditer(text_):
        start = text_.count("\n", 0, match.start()) + 1
        end = text_.count("\n", 0, match.end()) + 1
        needs = tuple(n.strip() for n in match.group("needs").split(",") if n.strip())
        mark = Mark(doc, start, needs, (match.group("note") or "").strip())
        marks.append(mark)
        fenced_next = [b for b in blocks if b[0] == end + 1]
        if fenced_next:
            block_marks[fenced_next[0][0]] = mark
        else:
            paragraph_marks[paragraph[start]] = mark
    found: list[DocCommand] = []
    for fence_line, language, block in blocks:
        if language not in SHELL_FENCES:
            continue
        for number, command in shell_lines(block):
            found.append(DocCommand(doc, number, command, True, block_marks.get(fence_line)))
    for match in INLINE.finditer(text_):
        span = " ".join(match.group(2).split())
        if not is_command(span):
            continue
        start = text_.count("\n", 0, match.start()) + 1
        found.append(DocCommand(doc, start, span, False, paragraph_marks.get(paragraph[start])))
    found.sort(key=lambda c: c.line)
    return found, marks


def documented() -> list[DocCommand]:
    """Every command of the three documents."""
    return [command for doc in DOCS for command in read_doc(doc)[0]]


# --- the Makefile: what `make test` reaches -------------------------------------------------


def makefile_recipes(text: str) -> dict[str, tuple[list[str], list[str]]]:
    """target -> (prerequisites, recipe lines) of a Makefile's explicit rules."""
    rules: dict[str, tuple[list[str], list[str]]] = {}
    current: list[str] = []
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        if line.startswith("\t"):
            for target in current:
                rules[target][1].append(line.strip())
            continue
        match = re.match(r"^([A-Za-z0-9_.%/ -]+?)\s*:(?![:=])(.*)$", line)
        if match and not line.startswith((" ", "#")):
            current = match.group(1).split()
            prerequisites = match.group(2).split("##")[0].split()
            for target in current:
                rules.setdefault(target, ([], []))[0].extend(prerequisites)
        elif line.strip() and not line.startswith("#"):
            current = []
    return rules


def _code(text: str) -> str:
    """A script's text without its comment lines."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def reached_by(target: str, root: Path = ROOT) -> tuple[set[str], set[str]]:
    """(make targets, files) that `make <target>` runs: prerequisites, `$(MAKE) <t>` and
    `make <t>` in recipes, and the scripts/ files recipes (and those scripts) call."""
    rules = makefile_recipes((root / "Makefile").read_text(encoding="utf-8"))
    targets: set[str] = set()
    files: set[str] = set()
    todo = [target]
    scripts: list[str] = []
    make_call = re.compile(r"(?:\$\(MAKE\)|make)(?:\s+-{1,2}[\w-]+(?:=\S+)?)*\s+([a-z][\w-]*)")
    while todo or scripts:
        while todo:
            name = todo.pop()
            if name in targets:
                continue
            targets.add(name)
            prerequisites, recipe = rules.get(name, ([], []))
            todo.extend(p for p in prerequisites if p in rules)
            for line in recipe:
                todo.extend(m.group(1) for m in make_call.finditer(line) if m.group(1) in rules)
                scripts.extend(re.findall(r"(?:^|[\s\"'])((?:scripts|\.ci)/[\w.-]+)", line))
        while scripts:
            path = scripts.pop()
            if path in files or not (root / path).is_file():
                continue
            files.add(path)
            code = _code((root / path).read_text(encoding="utf-8"))
            todo.extend(m.group(1) for m in make_call.finditer(code) if m.group(1) in rules)
            scripts.extend(re.findall(r"(?:^|[\s\"'/])(scripts/[\w.-]+)", code))
    return targets, files


def make_target(command: str) -> str | None:
    """The target of a `make [VAR=value ...] <target>` command."""
    match = re.fullmatch(r"make(?:\s+[A-Za-z_]\w*=\S*)*\s+([a-z][\w-]*)(?:\s+\S+=\S*)*", command)
    return match.group(1) if match else None


def run_by_make_test(runner: str, root: Path = ROOT) -> bool:
    """Whether `make test` runs ``runner``: a make target, or a test module that `make
    pytest` runs, or (a test module of NEEDS_THE_DEPLOYED_TARGET) one a script of it names."""
    targets, files = reached_by("test", root)
    if runner.startswith("make "):
        return make_target(runner) in targets
    module = runner.split("::")[0]
    if module in NEEDS_THE_DEPLOYED_TARGET:
        return any(module in _code((root / f).read_text(encoding="utf-8")) for f in files)
    return module.startswith("tests/") and "pytest" in targets


# --- running documented commands ---------------------------------------------------------


def runner_id(nodeid: str) -> str:
    """`path::function` of a pytest node id (parameters dropped)."""
    return nodeid.split("[")[0]


def commands_of(test: str) -> set[str]:
    """The commands RUN_BY gives to ``test``."""
    return {command for command, runner in RUN_BY.items() if runner == test}


@dataclass(frozen=True)
class Ran:
    """One documented command, as it ran."""

    command: str
    typed: str
    returncode: int
    output: str


@dataclass
class DocShell:
    """Runs documented commands, as written, in one bash: an `export` or a `source` carries
    over to the next command, as in the reader's shell. Placeholders (`<job id>`, `...`) are
    replaced as the test says; every replacement must be used."""

    test: str
    ran: set[str] = field(default_factory=set)

    def run(
        self,
        commands: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path | None = None,
        replace: Mapping[str, str] | None = None,
        stdin: str = "",
        prefix: Sequence[str] = (),
        timeout: float = 300,
    ) -> list[Ran]:
        """Run ``commands`` in order (``prefix``: the argv that runs bash elsewhere, such as
        `docker exec -i <target>`); one Ran each. Fails at once on a command that is not
        documented or not in RUN_BY."""
        texts = {c.text for c in documented()}
        replace = dict(replace or {})
        used: set[str] = set()
        typed_commands = []
        for command in commands:
            assert command in texts, f"`{command}` is not a command of {', '.join(DOCS)}"
            assert command in RUN_BY, f"`{command}` is not in RUN_BY: say which test runs it"
            typed = command
            for placeholder, value in replace.items():
                if placeholder in typed:
                    typed = typed.replace(placeholder, value)
                    used.add(placeholder)
            typed_commands.append(typed)
        assert used == set(replace), f"replacements never used: {set(replace) - used}"
        nonce = secrets.token_hex(8)
        script = []
        for index, typed in enumerate(typed_commands):
            script.append(f"printf '\\n@@{nonce} start {index}\\n'")
            script.append(f"{{ {typed}\n}} 2>&1")
            script.append(f"printf '\\n@@{nonce} end {index} %s\\n' \"$?\"")
        proc = subprocess.run(
            [*prefix, "bash", "--noprofile", "--norc", "-c", "\n".join(script)],
            input=stdin,
            env=dict(env),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        results = []
        for index, (command, typed) in enumerate(zip(commands, typed_commands, strict=True)):
            match = re.search(
                rf"\n@@{nonce} start {index}\n(.*?)\n@@{nonce} end {index} (\d+)\n",
                proc.stdout,
                re.DOTALL,
            )
            assert match, (
                f"`{typed}` did not finish (bash exited {proc.returncode}):\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
            )
            results.append(Ran(command, typed, int(match.group(2)), match.group(1)))
            self.ran.add(command)
        return results

    def missing(self) -> set[str]:
        """The commands RUN_BY gives to this test that it has not run."""
        return commands_of(self.test) - self.ran


def shell_env(extra: Mapping[str, str] | None = None, *, home: Path) -> dict[str, str]:
    """A reader's shell: the system PATH without this clone's venv and node_modules (make
    adds them; `source .venv/bin/activate` provides the venv), HOME of the test's own,
    nothing of the worker's settings."""
    ours = (str(ROOT), str(Path(sys.executable).parent))
    path = ":".join(
        p
        for p in os.environ.get("PATH", "/usr/bin:/bin").split(":")
        if p and not p.startswith(ours)
    )
    return {"PATH": path, "HOME": str(home), "LANG": "C.UTF-8", **(extra or {})}


def lines_of(results: Iterable[Ran]) -> dict[str, Ran]:
    return {ran.command: ran for ran in results}
