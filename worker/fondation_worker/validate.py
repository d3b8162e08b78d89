"""Pure validation of repository URLs and branch names (docs/CONTRACT.md).

Convex validates at enqueue; the worker validates again before handing anything to git.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_BRANCH_LEN = 255

MAX_URL_LEN = 512
_REPO_URL = re.compile(
    r"^https://([A-Za-z0-9.\-]+)(?::([0-9]{1,5}))?/([A-Za-z0-9_.\-]+)/([A-Za-z0-9_.\-]+)$"
)
_HOST_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?$")
_NAME = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.\-]*$")
_BRANCH_FORBIDDEN_CHARS = set("~^:?*[\\")


def _printable_ascii_no_space(text: str) -> bool:
    return all(0x20 < ord(c) < 0x7F for c in text)


class ValidationError(ValueError):
    """The input breaks the contract; the message says which rule."""


@dataclass(frozen=True)
class RepoRef:
    url: str
    host: str
    port: int | None
    owner: str
    name: str

    @property
    def slug(self) -> str:
        return f"{self.owner}/{self.name}"


def parse_allowed_hosts(value: str | Iterable[str]) -> list[str]:
    """``"github.com, Example.org"`` -> ``["github.com", "example.org"]``."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [item.strip().lower() for item in items if item.strip()]


def validate_repo_url(url: str, allowed_hosts: Iterable[str]) -> RepoRef:
    """Check ``https://<host>[:port]/<owner>/<repo>[.git]`` with an allowed host.

    Same rules as convex/lib/validation.ts: with a port, ``host:port`` itself must be in
    the allowed list.
    """
    allowed = set(parse_allowed_hosts(allowed_hosts))
    if not isinstance(url, str) or not url:
        raise ValidationError("repository URL is empty")
    if len(url) > MAX_URL_LEN:
        raise ValidationError(f"repository URL is longer than {MAX_URL_LEN}")
    if not _printable_ascii_no_space(url):
        raise ValidationError("repository URL contains whitespace or control characters")
    if not url.startswith("https://"):
        raise ValidationError("repository URL must use https://")
    if "@" in url:
        raise ValidationError("repository URL must not contain credentials")
    if "?" in url or "#" in url:
        raise ValidationError("repository URL must not have a query or fragment")
    if ".." in url:
        raise ValidationError("repository URL must not contain '..'")
    if "%" in url or "\\" in url:
        raise ValidationError("repository URL must not contain escapes")
    match = _REPO_URL.match(url)
    if not match:
        raise ValidationError("repository URL must look like https://<host>/<owner>/<repo>")
    host, port_text, owner, name = match.groups()
    host = host.lower()
    if not all(_HOST_LABEL.match(label) for label in host.split(".")):
        raise ValidationError("repository URL has an invalid host")
    port: int | None = None
    if port_text is not None:
        port = int(port_text)
        if not 1 <= port <= 65535 or port_text.startswith("0"):
            raise ValidationError("repository URL has an invalid port")
    for value in (owner, name):
        if not _NAME.match(value) or value == "." or value.lower() == ".git":
            raise ValidationError("repository URL has an invalid owner or repository name")
    host_port = f"{host}:{port}" if port is not None else host
    if host_port not in allowed:
        raise ValidationError(f"repository host {host_port!r} is not in ALLOWED_REPO_HOSTS")
    short = name[: -len(".git")] if name.lower().endswith(".git") else name
    return RepoRef(
        url=f"https://{host_port}/{owner}/{name}", host=host, port=port, owner=owner, name=short
    )


def validate_branch(branch: str) -> str:
    """Check a branch name against git check-ref-format rules, not starting with '-'."""
    if not isinstance(branch, str) or not branch:
        raise ValidationError("branch is empty")
    if len(branch) > MAX_BRANCH_LEN:
        raise ValidationError(f"branch is longer than {MAX_BRANCH_LEN} characters")
    if branch.startswith("-"):
        raise ValidationError("branch must not start with '-'")
    if branch == "@":
        raise ValidationError("branch must not be '@'")
    if not _printable_ascii_no_space(branch):
        raise ValidationError("branch contains whitespace, control or non-ASCII characters")
    bad = sorted(set(branch) & _BRANCH_FORBIDDEN_CHARS)
    if bad:
        raise ValidationError(f"branch contains forbidden characters {''.join(bad)!r}")
    if ".." in branch:
        raise ValidationError("branch must not contain '..'")
    if "@{" in branch:
        raise ValidationError("branch must not contain '@{'")
    if branch.startswith("/") or branch.endswith("/") or "//" in branch:
        raise ValidationError("branch has an empty path component")
    if branch.endswith("."):
        raise ValidationError("branch must not end with '.'")
    for component in branch.split("/"):
        if component.startswith("."):
            raise ValidationError("a branch component must not start with '.'")
        if component.endswith(".lock"):
            raise ValidationError("a branch component must not end with '.lock'")
    return branch
