"""Every command README.md, docs/OPERATIONS.md and docs/RUNBOOK.md have a reader type is run
by a test or `make test`, or marked in the document as needing real infrastructure
(tests/docs/commands.py says how commands and markings are read, and holds RUN_BY).

- Each command is in RUN_BY, in LONG_RUNS, or under a `<!-- needs: ... -->` marking.
- A marking names known needs, covers a command, and covers one that no test runs (a marking
  over commands that all run is stale: remove it).
- RUN_BY, LONG_RUNS and MENTIONS name only commands the documents have.
- What RUN_BY names runs them: `make test` reaches the make target (its recipe, the targets
  and scripts it calls), `.ci/run` runs `make test`, a named test exists in a module that
  `make test` runs. The named tests themselves fail unless they ran their commands.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.docs.commands import (
    AWAITING_THE_DEPLOY_STAGE,
    CI,
    DOCS,
    LONG_RUNS,
    MAKE_TEST,
    MENTIONS,
    NEEDS,
    ROOT,
    RUN_BY,
    DocCommand,
    Mark,
    documented,
    is_command,
    make_target,
    reached_by,
    read_doc,
    run_by_make_test,
)


def unvouched(commands: list[DocCommand]) -> list[str]:
    return [
        f"{c.where()}: `{c.text}` is neither run by a test (RUN_BY, tests/docs/commands.py) "
        "nor marked as needing real infrastructure (<!-- needs: ... --> above its block or in "
        "its paragraph)"
        for c in commands
        if c.text not in RUN_BY and c.text not in LONG_RUNS and c.mark is None
    ]


def mark_problems(commands: list[DocCommand], marks: list[Mark]) -> list[str]:
    problems = []
    for mark in marks:
        unknown = [n for n in mark.needs if n not in NEEDS]
        if not mark.needs or unknown:
            problems.append(
                f"{mark.where()}: needs {unknown or 'nothing'}; a marking names one or more of: "
                f"{', '.join(NEEDS)}"
            )
        covered = [c for c in commands if c.mark == mark]
        if not covered:
            problems.append(
                f"{mark.where()}: the marking covers no command (put it right above a code "
                "block, or in the paragraph of an inline command)"
            )
        elif all(c.text in RUN_BY for c in covered):
            problems.append(
                f"{mark.where()}: every command it marks is run by a test: remove the marking"
            )
    return problems


def test_every_command_is_run_or_marked() -> None:
    problems = unvouched(documented())
    assert not problems, "\n".join(problems)


def test_every_marking_names_known_needs_and_marks_a_command_no_test_runs() -> None:
    problems = []
    for doc in DOCS:
        problems += mark_problems(*read_doc(doc))
    assert not problems, "\n".join(problems)


def test_the_lists_name_only_documented_commands() -> None:
    texts = {c.text for c in documented()}
    stale = sorted((set(RUN_BY) | set(LONG_RUNS)) - texts)
    assert not stale, f"RUN_BY/LONG_RUNS name commands no document has any more: {stale}"
    assert not set(RUN_BY) & set(LONG_RUNS), "a command is both run and a long run"
    spans = set()
    for doc in DOCS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        prose = re.sub(r"^\s*```.*?^\s*```", "", text, flags=re.MULTILINE | re.DOTALL)
        spans |= {" ".join(m.split()) for m in re.findall(r"`([^`]+)`", prose)}
    assert set(MENTIONS) <= spans, f"MENTIONS no document has: {set(MENTIONS) - spans}"


def _functions(module: Path) -> set[str]:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_what_run_by_names_runs_the_commands() -> None:
    problems = []
    ci = (ROOT / CI).read_text(encoding="utf-8")
    for command, runner in RUN_BY.items():
        if runner == CI:
            code = [line for line in ci.splitlines() if not line.lstrip().startswith("#")]
            if not any(re.search(rf"(^|\s){re.escape(command)}(\s|$)", line) for line in code):
                problems.append(f"`{command}`: {CI} does not run it")
            continue
        if runner == MAKE_TEST:
            if make_target(command) is None:
                problems.append(f"`{command}`: not a make command, so `make test` cannot run it")
            elif not run_by_make_test(command) and command not in AWAITING_THE_DEPLOY_STAGE:
                problems.append(f"`{command}`: `make test` does not reach that target")
            continue
        module, _, function = runner.partition("::")
        path = ROOT / module
        if not path.is_file() or function not in _functions(path):
            problems.append(f"`{command}`: {runner} does not exist")
        elif not run_by_make_test(runner) and module not in AWAITING_THE_DEPLOY_STAGE:
            problems.append(f"`{command}`: `make test` does not run {module}")
    assert not problems, "\n".join(problems)


def test_the_deploy_stage_still_awaited() -> None:
    """The deploy stage (issue 26 item 2) runs these once it is merged: then this fails, and
    AWAITING_THE_DEPLOY_STAGE in tests/docs/commands.py is to be emptied."""
    now_run = [item for item in AWAITING_THE_DEPLOY_STAGE if run_by_make_test(item)]
    assert not now_run, (
        f"`make test` now runs {now_run}: remove them from AWAITING_THE_DEPLOY_STAGE "
        "(tests/docs/commands.py)"
    )


def test_make_test_is_seen_reaching_its_stages() -> None:
    """Guard against a reachability check that passes by finding nothing."""
    targets, files = reached_by("test")
    assert {"deps", "lint", "image", "convex-test", "chaos-short", "molecule", "pytest"} <= targets
    assert {"scripts/docker-engine.sh", "scripts/build-image.sh", "scripts/molecule.sh"} <= files
    assert "chaos" not in targets
    assert "bench" not in targets
    assert make_target("make flake SCENARIO=runbooks N=5") == "flake"
    assert make_target("make image") == "image"
    assert make_target("make -C x image") is None


def test_the_scanner_sees_the_commands() -> None:
    """Guard against a scanner that passes by finding nothing."""
    commands = documented()
    texts = {c.text for c in commands}
    assert len(commands) > 100
    assert {"make deploy", "fondation-worker status", "docker system df"} <= texts
    assert "ansible-playbook -i inventories/production playbooks/status.yml" in texts
    marked = [c for c in commands if c.mark is not None]
    assert len(marked) > 40
    assert all(c.mark is not None for c in commands if "inventories/production playbooks" in c.text)
    assert not any(c.text.startswith("groups:") for c in commands), "a yaml block is not shell"


def test_the_checks_catch_what_is_wrong(tmp_path: Path) -> None:
    doc = "bad.md"
    text = (
        "Run `make deploy`, then `fondation-worker status` and `npx convex deploy`.\n"  # 1
        "<!-- needs: a real Convex deployment -->\n"  # 2
        "\n"
        "```sh\n"  # 4
        "ansible-playbook -i inventories/production playbooks/status.yml   # comment\n"
        "```\n"
        "\n"
        "<!-- needs: a real VPS -->\n"  # 8
        "```sh\n"
        "make deps\n"
        "```\n"
        "\n"
        "<!-- needs: a cloud; nothing -->\n"  # 13
        "```yaml\n"
        "groups: []\n"
        "```\n"
        "\n"
        "`docker build` builds it; `make image`\n"  # 18
        "  --long and `fondation-worker\n"
        "  cancel <job id>` too. <!-- needs: a real VPS -->\n"
    )
    commands, marks = read_doc(doc, text)
    assert [(c.line, c.text) for c in commands] == [
        (1, "make deploy"),
        (1, "fondation-worker status"),
        (1, "npx convex deploy"),
        (5, "ansible-playbook -i inventories/production playbooks/status.yml"),
        (10, "make deps"),
        (18, "make image"),
        (19, "fondation-worker cancel <job id>"),
    ]
    assert [m.needs for m in marks] == [
        ("a real Convex deployment",),
        ("a real VPS",),
        ("a cloud",),
        ("a real VPS",),
    ]
    assert commands[2].mark == marks[0]
    assert commands[3].mark is None
    assert unvouched(commands) == [
        "bad.md:5: `ansible-playbook -i inventories/production playbooks/status.yml` is neither "
        "run by a test (RUN_BY, tests/docs/commands.py) nor marked as needing real "
        "infrastructure (<!-- needs: ... --> above its block or in its paragraph)"
    ]
    found = "\n".join(mark_problems(commands, marks))
    for expected in (
        "bad.md:8: every command it marks is run by a test",
        "bad.md:13: needs ['a cloud']",
        "bad.md:13: the marking covers no command",
        "bad.md:20: every command it marks is run by a test",
    ):
        assert expected in found, f"{expected!r} not reported:\n{found}"
    assert "bad.md:2:" not in found
    assert not is_command("docker build")
    assert not is_command("--ask-vault-pass")
    assert not is_command("DEMO_REPO=<https URL>")
    assert is_command("FOO=1 make image")
