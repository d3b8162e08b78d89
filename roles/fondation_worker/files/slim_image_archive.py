"""Write a `docker save` archive holding only the image layers a host lacks.

Run on the controller by roles/fondation_worker/tasks/lib/image_archive.yml (and by
scripts/build-image.sh with --index-only). Standard input is a JSON list of the host's
images' layer lists (each image's RootFS.Layers, diff IDs in order). Docker stores a layer
under its chain ID (the layer and every layer under it), so a layer of the archive's image
is present on the host when a host image starts with the same diff IDs up to that layer.
The slim archive keeps every metadata member (manifest.json, image config, per-layer json,
repositories) and drops the layer tars of that present prefix: `docker load` finds each of
them by chain ID and does not read its file.

Reading a 230 MB archive takes seconds, so what the decision needs (manifest, config, member
list, the small members (base64)) is kept in <archive>.index.json, written next to the archive
when the directory allows; the needed layers are then read with GNU tar, which stops once
it has them.

Prints one JSON object: layers (in the image), sent (layers written), full (true when the
host shares no layer, or the archive is not one image: ship the original), bytes (of what to
ship) and path (what to ship).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

SMALL = 1 << 20  # metadata members (json, VERSION, repositories) are far below this
TIMEOUT_S = 600


def present_prefix(diff_ids: list[str], host_images: list[list[str]]) -> int:
    """How many leading layers of the image the host already stores (longest shared prefix)."""
    best = 0
    for layers in host_images:
        shared = 0
        for ours, theirs in zip(diff_ids, layers, strict=False):
            if ours != theirs:
                break
            shared += 1
        best = max(best, shared)
    return best


def norm(name: str) -> str:
    parts: list[str] = []
    for part in PurePosixPath(name).parts:
        if part == "..":
            if parts:
                parts.pop()
        elif part not in (".", "/"):
            parts.append(part)
    return "/".join(parts)


def scan(archive: Path) -> dict[str, Any]:
    """One streaming pass: member list, small members (base64), the image's layers."""
    members: list[dict[str, Any]] = []
    small: dict[str, str] = {}
    with subprocess.Popen(["gzip", "-dcf", str(archive)], stdout=subprocess.PIPE) as unzip:
        assert unzip.stdout is not None
        with tarfile.open(fileobj=unzip.stdout, mode="r|", bufsize=SMALL) as tar:
            for member in tar:
                name = norm(member.name)
                kind = "file" if member.isfile() else "dir" if member.isdir() else "link"
                link = ""
                if member.issym():
                    link = norm(str(PurePosixPath(name).parent / member.linkname))
                elif member.islnk():
                    link = norm(member.linkname)
                members.append({"name": name, "kind": kind, "link": link, "size": member.size})
                if member.isfile() and member.size <= SMALL:
                    data = tar.extractfile(member)
                    if data is not None:
                        small[name] = base64.b64encode(data.read()).decode("ascii")
        unzip.wait(TIMEOUT_S)
    if unzip.returncode != 0:
        raise ValueError(f"gzip -dc {archive} failed")
    manifest = json.loads(base64.b64decode(small["manifest.json"]))
    if len(manifest) != 1:
        raise ValueError("expected one image in the archive")
    config = json.loads(base64.b64decode(small[norm(manifest[0]["Config"])]))
    layers = [norm(path) for path in manifest[0]["Layers"]]
    diff_ids = list(config["rootfs"]["diff_ids"])
    if len(layers) != len(diff_ids):
        raise ValueError("manifest and config disagree on the layers")
    return {"members": members, "small": small, "layers": layers, "diff_ids": diff_ids}


def load_index(archive: Path) -> dict[str, Any]:
    cache = archive.with_name(archive.name + ".index.json")
    try:
        if cache.stat().st_mtime >= archive.stat().st_mtime:
            index: dict[str, Any] = json.loads(cache.read_text(encoding="utf-8"))
            return index
    except (OSError, ValueError):
        pass
    index = scan(archive)
    try:
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")  # hosts run side by side
        tmp.write_text(json.dumps(index), encoding="utf-8")
        tmp.replace(cache)
    except OSError:
        pass  # a read-only archive directory: scan again next time
    return index


def write_slim(archive: Path, out: Path, index: dict[str, Any], present: int) -> None:
    layers: list[str] = index["layers"]
    members: list[dict[str, Any]] = index["members"]
    by_name = {m["name"]: m for m in members}
    needed = set(layers[present:])
    # A saved layer may be a link to an identical layer's file: keep what it points to.
    for name in list(needed):
        link = by_name.get(name, {}).get("link")
        if link:
            needed.add(link)
    dropped = set(layers[:present]) - needed
    small: dict[str, str] = index["small"]
    files = sorted(n for n in needed if by_name.get(n, {}).get("kind") == "file" and n not in small)
    with tempfile.TemporaryDirectory(prefix="fondation-layers.") as tmp:
        if files:
            subprocess.run(
                ["tar", "-xzf", str(archive), "-C", tmp, "--occurrence=1", "--", *files],
                check=True,
                timeout=TIMEOUT_S,
            )
        part = out.with_name(f"{out.name}.{os.getpid()}.tmp")
        with (
            gzip.open(part, "wb", compresslevel=1) as raw,
            tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as slim,
        ):
            for member in members:
                name = member["name"]
                if name in dropped or not name:
                    continue
                info = tarfile.TarInfo(name)
                if member["kind"] == "dir":
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    slim.addfile(info)
                elif member["kind"] == "link":
                    info.type, info.linkname = tarfile.SYMTYPE, relative(name, member["link"])
                    slim.addfile(info)
                elif name in small:
                    data = base64.b64decode(small[name])
                    info.size, info.mode = len(data), 0o644
                    slim.addfile(info, io.BytesIO(data))
                elif name in needed:
                    path = Path(tmp, name)
                    info.size, info.mode = path.stat().st_size, 0o644
                    with path.open("rb") as data_file:
                        slim.addfile(info, data_file)
        part.replace(out)


def relative(name: str, target: str) -> str:
    base = PurePosixPath(name).parent
    ups = len(base.parts)
    return "/".join([".."] * ups + [target]) if ups else target


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--archive", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--index-only", action="store_true", help="only write the index")
    args = parser.parse_args()
    archive: Path = args.archive.resolve()
    index = load_index(archive)
    if args.index_only:
        return 0
    if args.out is None:
        parser.error("--out is required")
    host_images = [list(layers) for layers in json.load(sys.stdin) if layers]
    diff_ids: list[str] = index["diff_ids"]
    present = present_prefix(diff_ids, host_images)
    report: dict[str, Any] = {"layers": len(diff_ids), "sent": len(diff_ids) - present}
    if present == 0:
        full = {"full": True, "bytes": archive.stat().st_size, "path": str(archive)}
        print(json.dumps(report | full))
        return 0
    write_slim(archive, args.out, index, present)
    slim = {"full": False, "bytes": args.out.stat().st_size, "path": str(args.out)}
    print(json.dumps(report | slim))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
