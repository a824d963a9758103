"""Fingerprints of the data a stage read, so that a resumed run notices when that data changed.

A stage records where its text came from (the `source` strings of the pruning report and the
results file: a local path, perhaps with a document slice such as `[:1500]`, or a pinned Hub
dataset `id@revision (config/split)`). Each local file is fingerprinted by size, modification time
and sha256; a Hub source by its pinned description. A marker whose fingerprints no longer match
makes its stage run again. A local base model directory is fingerprinted by the size and
modification time of every file only: hashing hundreds of gigabytes of weights on every resume
would cost more than it protects.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_SLICE = re.compile(r"\[-?\d*:-?\d*\]$")


def _local_path(source: str) -> Path | None:
    """The local file or folder a source string names, or None for a Hub source."""
    path = _SLICE.sub("", source.strip())
    return Path(path) if os.path.isabs(path) else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_of_files(paths: list[Path]) -> str:
    """One sha256 over the files' bytes concatenated in the given order (the data README's convention)."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _file(path: Path, *, content: bool) -> dict[str, Any]:
    stat = path.stat()
    out: dict[str, Any] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if content:
        out["sha256"] = sha256_of(path)
    return out


def _tree(root: Path, *, content: bool) -> dict[str, Any]:
    return {
        p.relative_to(root).as_posix(): _file(p, content=content)
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".cache" not in p.relative_to(root).parts
    }


def fingerprint_source(source: str) -> dict[str, Any]:
    """One source string's fingerprint: a local file or folder by content, a Hub source by its pin."""
    path = _local_path(source)
    if path is None:
        return {"source": source, "kind": "hub"}
    if path.is_file():
        return {"source": source, "kind": "file", "path": str(path), **_file(path, content=True)}
    if path.is_dir():
        return {"source": source, "kind": "folder", "path": str(path), "files": _tree(path, content=True)}
    return {"source": source, "kind": "missing", "path": str(path)}


def fingerprint_sources(sources: Iterable[str]) -> list[dict[str, Any]]:
    """Fingerprints of the distinct sources, in first-seen order."""
    return [fingerprint_source(s) for s in dict.fromkeys(sources)]


def fingerprint_model_dir(path: Path) -> dict[str, Any]:
    """A local base model directory by the size and modification time of each file."""
    return {"source": str(path), "kind": "model-dir", "path": str(path), "files": _tree(Path(path), content=False)}


def first_change(recorded: list[dict[str, Any]]) -> str | None:
    """What changed since the fingerprints were taken (a phrase for the log), or None when nothing did."""
    for old in recorded:
        if old["kind"] == "hub":
            continue
        if old["kind"] == "model-dir":
            new = fingerprint_model_dir(Path(old["path"]))
        else:
            new = fingerprint_source(old["source"])
        if _comparable(new) != _comparable(old):
            return f"{old['path']} changed" if new["kind"] != "missing" else f"{old['path']} is gone"
    return None


def _comparable(record: dict[str, Any]) -> Any:
    """What decides equality: sizes and hashes (a file touched but unchanged is the same data)."""
    if record["kind"] == "model-dir":
        return record["files"]
    if record["kind"] == "file":
        return (record["kind"], record["size"], record["sha256"])
    if record["kind"] == "folder":
        return (record["kind"], {k: (v["size"], v["sha256"]) for k, v in record["files"].items()})
    return record["kind"]
