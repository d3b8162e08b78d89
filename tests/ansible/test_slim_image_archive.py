"""roles/fondation_worker/files/slim_image_archive.py on a small `docker save`-shaped archive:
it keeps the metadata and only the layers after the prefix the host stores."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "roles/fondation_worker/files/slim_image_archive.py"


def layer_tar(content: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("file")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def save_archive(path: Path, contents: list[bytes]) -> list[str]:
    """A legacy `docker save` layout: <v1 id>/layer.tar, <config>.json, manifest.json."""
    layers = [layer_tar(c) for c in contents]
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    dirs = [f"{i:064x}" for i in range(len(layers))]
    manifest = [
        {
            "Config": config_name,
            "RepoTags": ["x:1"],
            "Layers": [f"{d}/layer.tar" for d in dirs],
        }
    ]
    files = {f"{d}/layer.tar": layer for d, layer in zip(dirs, layers, strict=True)}
    files |= {f"{d}/VERSION": b"1.0" for d in dirs}
    files |= {config_name: config, "manifest.json": json.dumps(manifest).encode()}
    with gzip.open(path, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return diff_ids


def slim(archive: Path, out: Path, host: list[list[str]]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--archive", str(archive), "--out", str(out)],
        input=json.dumps(host),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report: dict[str, object] = json.loads(done.stdout)
    return report


@pytest.fixture
def image(tmp_path: Path) -> tuple[Path, list[str]]:
    archive = tmp_path / "img-0.1.0-abc.tar.gz"
    # Layers over 1 MiB are read back from the archive (GNU tar), smaller ones from the index.
    diff_ids = save_archive(archive, [b"os" * 600_000, b"cli", b"deps", b"code" * 300_000])
    return archive, diff_ids


def test_a_host_with_the_lower_layers_gets_only_the_top_one(
    image: tuple[Path, list[str]], tmp_path: Path
) -> None:
    archive, diff_ids = image
    out = tmp_path / "slim.tar.gz"
    other = ["sha256:" + "0" * 64]
    report = slim(archive, out, [other, [*diff_ids[:3], "sha256:" + "1" * 64]])
    assert report == {
        "layers": 4,
        "sent": 1,
        "full": False,
        "bytes": out.stat().st_size,
        "path": str(out),
    }
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    layers = manifest[0]["Layers"]
    assert layers[3] in names
    assert not names & set(layers[:3])
    assert {manifest[0]["Config"], "manifest.json"} <= names
    assert (archive.parent / (archive.name + ".index.json")).is_file()


def test_a_layer_shared_out_of_order_is_still_sent(
    image: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """Docker stores layers by chain ID: the same diff ID on another base is not present."""
    archive, diff_ids = image
    report = slim(archive, tmp_path / "slim.tar.gz", [[diff_ids[1], diff_ids[2]]])
    assert report["full"] is True
    assert report["path"] == str(archive.resolve())


def test_a_fresh_host_gets_the_whole_archive(image: tuple[Path, list[str]], tmp_path: Path) -> None:
    archive, _ = image
    out = tmp_path / "slim.tar.gz"
    report = slim(archive, out, [])
    assert report == {
        "layers": 4,
        "sent": 4,
        "full": True,
        "bytes": archive.stat().st_size,
        "path": str(archive.resolve()),
    }
    assert not out.exists()
