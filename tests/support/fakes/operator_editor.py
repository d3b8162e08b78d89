"""A scripted ``$EDITOR``: what an operator types into the production inventory's files
when the docs say ``$EDITOR <file>...`` or ``ansible-vault edit <file>``.

Run as ``EDITOR="python operator_editor.py"``. Each file it is given gets the edit its
content calls for, and the edit is appended to ``$OPERATOR_EDITOR_LOG`` (one JSON object
a line: which file, what it set) so the test can read the values back:

- hosts.yml: the example host becomes ``worker-a.example.org`` at ``198.51.100.7``;
- group_vars/workers/main.yml: the example Convex URL becomes a real-looking one;
- a vault with ``CHANGE-ME`` placeholders: each becomes a random value;
- a vault without placeholders (``ansible-vault edit``): the worker token is rotated.

A file that matches none of these exits 1: the docs sent the editor somewhere unexpected.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
from pathlib import Path

HOST = ("worker-1.example.com", "worker-a.example.org")
ADDRESS = ("203.0.113.10", "198.51.100.7")
CONVEX_URL = ("https://your-deployment.convex.cloud", "https://happy-otter-123.convex.cloud")
PLACEHOLDER = re.compile(r"^(vault_\w+): CHANGE-ME\S*$", re.MULTILINE)
WORKER_TOKEN = re.compile(r"^(vault_fondation_worker_token): \S+$", re.MULTILINE)


def edit(text: str) -> tuple[str, str, dict[str, str]]:
    """(new text, what the file was, the values set); ValueError when nothing applies."""
    if HOST[0] in text:
        text = text.replace(*HOST).replace(*ADDRESS)
        return text, "hosts", {"host": HOST[1], "address": ADDRESS[1]}
    if CONVEX_URL[0] in text:
        return text.replace(*CONVEX_URL), "main", {"convex_url": CONVEX_URL[1]}
    if PLACEHOLDER.search(text):
        values: dict[str, str] = {}

        def fill(match: re.Match[str]) -> str:
            values[match.group(1)] = f"docs-test-{secrets.token_hex(16)}"
            return f"{match.group(1)}: {values[match.group(1)]}"

        return PLACEHOLDER.sub(fill, text), "vault", values
    if WORKER_TOKEN.search(text):
        rotated = f"docs-rotated-{secrets.token_hex(16)}"
        text = WORKER_TOKEN.sub(lambda m: f"{m.group(1)}: {rotated}", text)
        return text, "vault-edit", {"vault_fondation_worker_token": rotated}
    raise ValueError("nothing to edit")


def main(files: list[str]) -> int:
    log = Path(os.environ["OPERATOR_EDITOR_LOG"])
    for name in files:
        path = Path(name)
        try:
            text, kind, values = edit(path.read_text(encoding="utf-8"))
        except ValueError:
            print(f"operator_editor: nothing to edit in {name}", file=sys.stderr)
            return 1
        path.write_text(text, encoding="utf-8")
        with log.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"file": path.name, "kind": kind, "values": values}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
