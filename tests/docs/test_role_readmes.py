"""A role's README names the APIs the role calls: roles/scaleway_instance/README.md lists
the Scaleway API versions (`/instance/v1`, `/block/v1`, `/marketplace/v2`) the role's
tasks and variables call, no more and no fewer, and the fake Scaleway API the tests run the
role against serves each of them. (The README once named Block Storage `v1alpha1` after the
role had moved to `v1`.)
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "scaleway_instance"
FAKE = ROOT / "tests" / "support" / "fakes" / "scaleway_api.py"
# /<product>/<version>/ of Scaleway's API: /instance/v1/, /block/v1alpha1/, /marketplace/v2/.
API = re.compile(r"/(instance|block|marketplace)/(v\d+(?:(?:alpha|beta)\d+)?)/")


def apis(text: str) -> set[str]:
    return {f"{product}/{version}" for product, version in API.findall(text)}


def role_apis() -> set[str]:
    found: set[str] = set()
    for path in sorted(ROLE.rglob("*.yml")):
        code = "\n".join(
            line for line in path.read_text(encoding="utf-8").splitlines()
            if not line.lstrip().startswith("#")
        )  # fmt: skip
        found |= apis(code)
    return found


def test_the_scaleway_readme_names_the_api_versions_the_role_calls() -> None:
    called = role_apis()
    assert called == {"instance/v1", "block/v1", "marketplace/v2"}, called
    named = apis((ROLE / "README.md").read_text(encoding="utf-8"))
    assert named == called, f"README names {sorted(named)}, the role calls {sorted(called)}"


def test_the_fake_serves_the_api_versions_the_role_calls() -> None:
    served = apis(FAKE.read_text(encoding="utf-8"))
    assert role_apis() <= served, served


def test_a_stale_version_is_seen() -> None:
    assert apis("`/block/v1alpha1/zones/{zone}/volumes/{id}`") == {"block/v1alpha1"}
    assert apis("{{ root }}/block/v1/zones/x") == {"block/v1"}
