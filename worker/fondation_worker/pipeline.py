"""The analysis pipeline, defined in one place: a course about the repository.

Each step is one ``claude -p`` run in the clone with its own prompt (``prompts/*.md``,
shipped in the package). Results go to ``<clone>/.claude-tutorial-output/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from string import Template

from .collect import OUTPUT_DIR_NAME


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    prompt_file: str
    expects: tuple[str, ...] = ()
    """Paths (relative to the output dir, globs allowed) the step must leave behind."""


STEPS: tuple[Step, ...] = (
    Step(
        "abstractions", "Identifying core abstractions", "abstractions.md", ("abstractions.yaml",)
    ),
    Step(
        "relationships",
        "Mapping relationships between abstractions",
        "relationships.md",
        ("relationships.yaml",),
    ),
    Step("chapter_order", "Ordering chapters", "chapter_order.md", ("chapter_order.yaml",)),
    Step("chapters", "Writing chapters", "chapters.md", ("chapters/*.md",)),
    Step("tutorials", "Writing tutorials", "tutorials.md", ()),
)

PROBE_PROMPT_FILE = "probe.md"


def load_prompt(name: str) -> str:
    return resources.files(__package__).joinpath("prompts", name).read_text(encoding="utf-8")


def render_prompt(step: Step, *, repo_name: str, branch: str, index: int, total: int) -> str:
    """The step's prompt with ``$placeholders`` filled; unknown ``$`` text is left alone."""
    values = {
        "repo_name": repo_name,
        "branch": branch,
        "output_dir": OUTPUT_DIR_NAME,
        "step_number": str(index),
        "total_steps": str(total),
    }
    common = Template(load_prompt("_common.md")).safe_substitute(values).strip()
    body = Template(load_prompt(step.prompt_file)).safe_substitute({**values, "common": common})
    return body.strip() + "\n"
