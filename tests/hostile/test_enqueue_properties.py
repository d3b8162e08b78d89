"""Property-based tests of repository URL and branch validation, on both sides.

The same generated inputs go to the worker's own ``validate.py`` (pure functions: many
examples) and to the real ``jobs:enqueue`` mutation of the dev backend over HTTP (fewer
examples: one round trip each). Four kinds of properties:

- valid GitHub-style URLs and branch names are accepted, and normalised as documented;
- hostile variants (other transports, local paths, option-like text, credentials, ``..``,
  control characters, hosts outside ALLOWED_REPO_HOSTS, ...) are refused;
- whatever is accepted passes an independent safety oracle: ``urllib.parse`` for URLs, real
  ``git check-ref-format`` for branches;
- Convex and the worker agree on every input (defence in depth with one rule set).

Hypothesis runs derandomized with bounded example counts, so the run time is stable.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fondation_worker.convex_client import ConvexClient
from fondation_worker.errors import InvalidArgument
from fondation_worker.validate import (
    ValidationError,
    parse_allowed_hosts,
    validate_branch,
    validate_repo_url,
)
from tests.support import TEST_OPERATOR_TOKEN, DevBackend

pytestmark = pytest.mark.integration

# Fixed profiles: derandomized, no deadline (the machine is shared and slow), no example
# database (a run does not depend on earlier runs).
PURE = settings(derandomize=True, deadline=None, database=None, max_examples=1000)
PURE_GIT = settings(derandomize=True, deadline=None, database=None, max_examples=400)
BACKEND = settings(
    derandomize=True,
    deadline=None,
    database=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# The pure tests' allow list; the backend tests use the dev backend's own.
ALLOWED = ["github.com", "git.example.org:8443"]

# --- strategies ------------------------------------------------------------------------

NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"

segments = (
    st.text(alphabet=NAME_CHARS, min_size=1, max_size=39)
    .filter(lambda s: not s.startswith("-") and ".." not in s)
    # '.' alone and '.git' are not names; a trailing '.' would meet '.git' as '..'
    .filter(lambda s: not s.endswith(".") and s.lower() != ".git")
)


def host_case(host: str) -> st.SearchStrategy[str]:
    """The host with any letters upper-cased: hosts are case-insensitive."""
    return st.lists(st.booleans(), min_size=len(host), max_size=len(host)).map(
        lambda flags: "".join(c.upper() if f else c for c, f in zip(host, flags, strict=True))
    )


def valid_urls(allowed: list[str]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda host, owner, repo, git: f"https://{host}/{owner}/{repo}{git}",
        st.sampled_from(allowed).flatmap(host_case),
        segments,
        segments,
        st.sampled_from(["", ".git"]),
    )


SCHEMES = [
    "http://", "file://", "ssh://", "git://", "git+ssh://", "ssh+git://", "ftp://",
    "ext::", "fd::", "https:/", "https:", "https:///", "//", "HTTPS://", "https ://",
]  # fmt: skip
LOCAL_AND_OPTIONS = [
    "/etc/passwd",
    "/tmp/repo.git",
    "./repo",
    "../repo",
    "~/repo",
    "repo",
    "C:\\repo",
    "file:///etc",
    "ext::sh -c touch% /tmp/pwned",
    "ext::git-remote-evil",
    "--upload-pack=touch /tmp/pwned",
    "-uhttps://github.com/a/b",
    "--config=core.sshCommand=touch /tmp/pwned",
    "git@github.com:acme/repo.git",
    "github.com:acme/repo",
    "github.com/acme/repo",
    "::1/acme/repo",
]
OTHER_HOSTS = [
    "gitlab.com",
    "github.com.evil.com",
    "evilgithub.com",
    "github.co",
    "localhost",
    "127.0.0.1",
    "[::1]",
    "169.254.169.254",
    "github.com:443",
    "github.com:22",
    "git.example.org",
    "git.example.org:8444",
    "git.example.org:08443",
    "github.com.",
    "-github.com",
    "github..com",
    "xn--ggle-0nd.com",
]
BAD_CHARS = [
    *[chr(c) for c in range(0x20)],
    " ", "\x7f", "\x85", "\xa0", "é", "\u202e", "\u2028", "\ufeff", "\uff0f", "\u2215",
]  # fmt: skip


@st.composite
def hostile_urls(draw: st.DrawFn, allowed: list[str]) -> str:
    """A URL that must be refused: a valid one with one hostile change."""
    host = draw(st.sampled_from(allowed))
    owner, repo = draw(segments), draw(segments)
    rest = f"{host}/{owner}/{repo}"
    kind = draw(st.integers(0, 11))
    if kind == 0:  # another transport or a broken scheme
        return draw(st.sampled_from(SCHEMES)) + rest
    if kind == 1:  # local paths, options, scp-like syntax
        return draw(st.sampled_from(LOCAL_AND_OPTIONS))
    if kind == 2:  # credentials, or a host hidden behind an '@'
        user = draw(st.sampled_from(["user:pw@", "x-access-token:ghp_abc@", "tok@", "@"]))
        return draw(st.sampled_from([f"https://{user}{rest}", f"https://{rest}@evil.com"]))
    if kind == 3:  # dot segments
        where = draw(st.sampled_from(["owner", "repo", "extra", "encoded"]))
        return {
            "owner": f"https://{host}/../{repo}",
            "repo": f"https://{host}/{owner}/..",
            "extra": f"https://{host}/{owner}/../../{repo}",
            "encoded": f"https://{host}/{owner}/%2e%2e",
        }[where]
    if kind == 4:  # one control, whitespace or non-ASCII character anywhere
        url = f"https://{rest}"
        at = draw(st.integers(0, len(url)))
        return url[:at] + draw(st.sampled_from(BAD_CHARS)) + url[at:]
    if kind == 5:  # a host that is not allowed
        other = draw(st.sampled_from(OTHER_HOSTS).filter(lambda h: h not in allowed))
        return f"https://{other}/{owner}/{repo}"
    if kind == 6:  # query, fragment, escapes, backslashes
        tail = draw(st.sampled_from(["?x=1", "#main", "?", "#", "%20", "%2F", "\\", "/x\\y"]))
        return f"https://{rest}{tail}"
    if kind == 7:  # not exactly owner/repo
        return draw(
            st.sampled_from(
                [
                    f"https://{host}/{owner}",
                    f"https://{host}/{owner}/{repo}/",
                    f"https://{host}/{owner}/{repo}/tree/main",
                    f"https://{host}//{repo}",
                    f"https://{host}/",
                    f"https://{host}",
                ]
            )
        )
    if kind == 8:  # option-like owner or repository
        return draw(
            st.sampled_from([f"https://{host}/-{owner}/{repo}", f"https://{host}/{owner}/-{repo}"])
        )
    if kind == 9:  # the same text with a leading dash or space: git would read an option
        return draw(st.sampled_from(["-", "--", " ", "\t"])) + f"https://{rest}"
    if kind == 10:  # too long
        return f"https://{host}/{owner}/{repo}{'a' * 520}"
    return draw(st.sampled_from([f"https://{host}/{owner}/.", f"https://{host}/{owner}/.git"]))


URL_ALPHABET = "htps:/.@?#%-_~\\ \t\n\x00gitubcomexaple0123456789:[]!$&'()*+,;=ABC"


@st.composite
def near_urls(draw: st.DrawFn, allowed: list[str]) -> str:
    """Text around the boundary: valid pieces glued with random ones."""
    pieces = draw(
        st.lists(
            st.one_of(
                st.sampled_from(["https://", "http://", "file://", "ext::", "/", "//", "@", ":"]),
                st.sampled_from(allowed),
                st.sampled_from(OTHER_HOSTS),
                segments,
                st.sampled_from(["..", ".", ".git", "-", "%2e", "?", "#", ":8443", ":0"]),
                st.text(alphabet=URL_ALPHABET, max_size=6),
            ),
            max_size=8,
        )
    )
    text = "".join(pieces)
    if draw(st.booleans()):
        text = f"https://{draw(st.sampled_from(allowed))}/" + text
    return text


BRANCH_COMPONENT = (
    st.text(alphabet=NAME_CHARS.replace(".", "") + "+=,@!'\"$&%", min_size=1, max_size=30)
    .filter(lambda s: not s.endswith(".lock") and "@{" not in s)
    .map(lambda s: s.replace("@", "a") if s == "@" else s)
)
valid_branches = (
    st.lists(BRANCH_COMPONENT, min_size=1, max_size=4)
    .map("/".join)
    .filter(lambda b: not b.startswith("-") and len(b) <= 255 and b != "@")
)

BRANCH_ALPHABET = NAME_CHARS + "/@{}~^:?*[\\ \t\n\x00\x7f+=,!é"
any_branches = st.text(alphabet=BRANCH_ALPHABET, min_size=0, max_size=40)


@st.composite
def hostile_branches(draw: st.DrawFn) -> str:
    base: str = draw(valid_branches)
    kind = draw(st.integers(0, 8))
    if kind == 0:  # git would read it as an option
        return draw(st.sampled_from(["-", "--", "--upload-pack=", "-c", "--config="])) + base
    if kind == 1:  # a character git forbids, or a control/space/non-ASCII one
        at = draw(st.integers(0, len(base)))
        bad: str = draw(st.sampled_from([*"~^:?*[\\", *BAD_CHARS]))
        return base[:at] + bad + base[at:]
    if kind == 2:
        at = draw(st.integers(0, len(base)))
        return base[:at] + draw(st.sampled_from(["..", "@{", "//"])) + base[at:]
    if kind == 3:
        return draw(st.sampled_from([f"/{base}", f"{base}/", f"{base}.", f"{base}.lock"]))
    if kind == 4:
        return draw(st.sampled_from([f".{base}", f"{base}/.x", f"{base}/x.lock/y"]))
    if kind == 5:
        return base + "x" * 256
    if kind == 6:
        return draw(st.sampled_from(["", "@", ".", "..", "/", "-"]))
    if kind == 7:
        return draw(st.sampled_from(["HEAD@{1}", "main@{upstream}", "@{-1}", "a\nb"]))
    return base + draw(st.sampled_from(["\n", "\r", "\x00", " ", "\t"]))


# --- oracles ---------------------------------------------------------------------------


def url_is_safe(url: str, allowed: list[str]) -> bool:
    """An oracle independent of validate.py: what git may safely be handed."""
    if not url or url.startswith("-") or not all(0x20 < ord(c) < 0x7F for c in url):
        return False
    if any(c in url for c in "@%\\?#"):
        return False
    parts = urlsplit(url)
    if parts.scheme != "https" or parts.query or parts.fragment or not parts.hostname:
        return False
    if parts.username is not None or parts.password is not None:
        return False
    try:
        port = parts.port
    except ValueError:
        return False
    host = parts.hostname.lower() + (f":{port}" if port is not None else "")
    if host not in parse_allowed_hosts(allowed):
        return False
    path = parts.path.split("/")
    return (
        len(path) == 3
        and path[0] == ""
        and all(p not in ("", ".", "..") and not p.startswith("-") for p in path[1:])
    )


def git_accepts_branch(branch: str) -> bool:
    if "\x00" in branch:
        return False  # cannot even be an argument
    proc = subprocess.run(
        ["git", "check-ref-format", f"refs/heads/{branch}"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return proc.returncode == 0


def accepted(validator: Any, *args: Any) -> bool:
    try:
        validator(*args)
    except ValidationError:
        return False
    return True


# --- the worker's validate.py ------------------------------------------------------------


@PURE
@given(valid_urls(ALLOWED))
def test_worker_accepts_valid_urls(url: str) -> None:
    ref = validate_repo_url(url, ALLOWED)
    scheme_host, owner, repo = url.rsplit("/", 2)
    assert ref.url == f"{scheme_host.lower()}/{owner}/{repo}"
    assert ref.owner == owner
    assert ref.name == (repo[:-4] if repo.endswith(".git") else repo)
    assert url_is_safe(ref.url, ALLOWED)


@PURE
@given(hostile_urls(ALLOWED))
def test_worker_refuses_hostile_urls(url: str) -> None:
    with pytest.raises(ValidationError):
        validate_repo_url(url, ALLOWED)


@PURE
@given(st.one_of(near_urls(ALLOWED), st.text(max_size=60)))
def test_whatever_the_worker_accepts_is_safe(url: str) -> None:
    if accepted(validate_repo_url, url, ALLOWED):
        assert url_is_safe(url, ALLOWED), url
        assert url_is_safe(validate_repo_url(url, ALLOWED).url, ALLOWED)


@PURE
@given(valid_branches)
def test_worker_accepts_valid_branches(branch: str) -> None:
    assert validate_branch(branch) == branch


@PURE
@given(hostile_branches())
def test_worker_refuses_hostile_branches(branch: str) -> None:
    with pytest.raises(ValidationError):
        validate_branch(branch)


@PURE_GIT
@given(st.one_of(any_branches, valid_branches, hostile_branches()))
def test_whatever_the_worker_accepts_git_accepts_too(branch: str) -> None:
    if accepted(validate_branch, branch):
        assert not branch.startswith("-")
        assert all(0x20 < ord(c) < 0x7F for c in branch)
        assert git_accepts_branch(branch), branch


# --- the real jobs:enqueue in the dev backend ---------------------------------------------


@pytest.fixture
def enqueue_client(dev_backend: DevBackend) -> Iterator[tuple[ConvexClient, list[str]]]:
    with dev_backend.operator_client() as client:
        yield client, parse_allowed_hosts(dev_backend.allowed_hosts)


def backend_accepts(client: ConvexClient, url: str, branch: str | None = None) -> bool:
    args: dict[str, Any] = {"token": TEST_OPERATOR_TOKEN, "repoUrl": url}
    if branch is not None:
        args["branch"] = branch
    try:
        reply = client.call("mutation", "jobs:enqueue", args, retries=0)
    except InvalidArgument:
        return False
    assert isinstance(reply["jobId"], str)
    assert reply["created"] is True
    return True


@BACKEND
@given(data=st.data())
def test_backend_accepts_valid_urls_and_branches(
    enqueue_client: tuple[ConvexClient, list[str]], data: st.DataObject
) -> None:
    client, allowed = enqueue_client
    url = data.draw(valid_urls(allowed))
    branch = data.draw(st.none() | valid_branches)
    assert backend_accepts(client, url, branch), (url, branch)


@BACKEND
@given(data=st.data())
def test_backend_refuses_hostile_urls(
    enqueue_client: tuple[ConvexClient, list[str]], data: st.DataObject
) -> None:
    client, allowed = enqueue_client
    url = data.draw(hostile_urls(allowed))
    assert not backend_accepts(client, url), url


@BACKEND
@given(data=st.data())
def test_backend_refuses_hostile_branches(
    enqueue_client: tuple[ConvexClient, list[str]], data: st.DataObject
) -> None:
    client, allowed = enqueue_client
    url = data.draw(valid_urls(allowed))
    branch = data.draw(hostile_branches())
    assert not backend_accepts(client, url, branch), branch


@BACKEND
@given(data=st.data())
def test_backend_and_worker_agree(
    enqueue_client: tuple[ConvexClient, list[str]], data: st.DataObject
) -> None:
    client, allowed = enqueue_client
    url = data.draw(st.one_of(near_urls(allowed), valid_urls(allowed), hostile_urls(allowed)))
    worker = accepted(validate_repo_url, url, allowed)
    assert backend_accepts(client, url) == worker, url
    if worker:
        assert url_is_safe(url, allowed)
    branch = data.draw(st.one_of(any_branches, valid_branches, hostile_branches()))
    good_url = f"https://{allowed[0]}/acme/repo"
    assert backend_accepts(client, good_url, branch) == accepted(validate_branch, branch), branch
