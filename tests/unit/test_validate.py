from __future__ import annotations

import pytest

from fondation_worker.validate import ValidationError, validate_branch, validate_repo_url

HOSTS = ["github.com", "127.0.0.1:8443"]


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/acme/repo",
        "https://github.com/acme/repo.git",
        "https://GitHub.com/Acme/Repo.git",
        "https://github.com/a_b/c.d-e",
        "https://github.com/.dotowner/repo",
        "https://127.0.0.1:8443/acme/repo.git",
    ],
)
def test_good_urls(url: str) -> None:
    ref = validate_repo_url(url, HOSTS)
    assert ref.url.startswith("https://")
    assert not ref.name.endswith(".git")


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http://github.com/acme/repo",
        "git@github.com:acme/repo.git",
        "ssh://github.com/acme/repo",
        "file:///etc/passwd",
        "ext::sh -c touch% /tmp/pwned",
        "https://gitlab.com/acme/repo",
        "https://127.0.0.1/acme/repo",  # the allowed entry has a port
        "https://127.0.0.1:9999/acme/repo",
        "https://github.com:443/acme/repo",
        "https://github.com:0443/acme/repo",
        "https://user:pass@github.com/acme/repo",
        "https://x-access-token@github.com/acme/repo",
        "https://github.com/acme/repo?ref=main",
        "https://github.com/acme/repo#frag",
        "https://github.com/acme/../etc/repo",
        "https://github.com/acme/repo/",
        "https://github.com/acme",
        "https://github.com/acme/repo/tree/main",
        "https://github.com/acme/-repo",
        "https://github.com/acme/.",
        "https://github.com/acme/.git",
        "https://github.com/acme/re po",
        "https://github.com/acme/re%20po",
        "https://github.com/acme/repo\n",
        "https://github.com/acme/rép",
        "https://-bad.com/acme/repo",
        "https://github.com/" + "a" * 600 + "/repo",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValidationError):
        validate_repo_url(url, [*HOSTS, "gitlab.example"])


@pytest.mark.parametrize(
    "branch", ["main", "feature/x", "release-1.2", "a.b", "v1@2", "x" * 255, "UPPER_case"]
)
def test_good_branches(branch: str) -> None:
    assert validate_branch(branch) == branch


@pytest.mark.parametrize(
    "branch",
    [
        "",
        "-main",
        "--upload-pack=evil",
        "@",
        "a..b",
        "a b",
        "a~1",
        "a^",
        "a:b",
        "a?",
        "a*",
        "a[",
        "a\\b",
        "a@{1}",
        "/main",
        "main/",
        "a//b",
        "main.",
        ".hidden",
        "a/.hidden",
        "x.lock",
        "a/b.lock/c",
        "tab\there",
        "new\nline",
        "dél",
        "x" * 256,
    ],
)
def test_bad_branches(branch: str) -> None:
    with pytest.raises(ValidationError):
        validate_branch(branch)
