"""A variant's work directory: one folder per stage with its done-marker, and the lock that keeps it single.

`<work-dir>/<plan-hash>/` holds `plan.json`, a folder per stage and, once the stage finished, its
`stage.json` marker. Only one `publish` may use a work directory at a time: the lock is an OS file
lock (released by the kernel when its process dies, so it never goes stale), and `lock.json` beside it
says who holds it, for the message the second run prints.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from zhprune_hub.errors import ZhpruneError

MARKER = "stage.json"
LOCK_NAME = ".lock"
LOCK_INFO = "lock.json"


class WorkspaceBusyError(ZhpruneError):
    """Another `publish` holds this variant's work directory."""


def now() -> str:
    """UTC time, ISO-8601 with microseconds (markers order stages by it)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def digest(doc: Any) -> str:
    """16 hex digits of sha256 over canonical JSON: equal documents, equal digests."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_text(path: Path, text: str) -> Path:
    """Write a text file atomically (0644), through the one atomic writer."""
    from zhprune_hub.outputs import write_atomically

    return write_atomically(path, text)


def write_json(path: Path, doc: Any) -> Path:
    """Write JSON atomically (see write_text)."""
    return write_text(path, json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")


def is_path_key(key: str) -> bool:
    """Marker outputs whose key ends in _dir or _path name files inside (or outside) the work directory."""
    return key.endswith(("_dir", "_path"))


@dataclass
class Workspace:
    """`<work-dir>/<plan-hash>/`: one folder per stage, each with its `stage.json` once done."""

    root: Path

    def dir(self, stage: str) -> Path:
        path = self.root / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def marker(self, stage: str) -> dict[str, Any] | None:
        """The stage's done-marker with its paths made absolute again, or None when absent or unreadable."""
        try:
            record = json.loads((self.root / stage / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        record["outputs"] = {
            k: str(self.root / v) if is_path_key(k) and isinstance(v, str) and v.startswith("./") else v
            for k, v in record.get("outputs", {}).items()
        }
        return record

    def mark(self, stage: str, record: dict[str, Any]) -> None:
        """Write the done-marker; paths inside the work directory are stored relative, so it can move."""
        outputs = {}
        for key, value in record["outputs"].items():
            if is_path_key(key) and isinstance(value, str) and Path(value).is_relative_to(self.root):
                value = "./" + Path(value).relative_to(self.root).as_posix()
            outputs[key] = value
        write_json(self.root / stage / MARKER, {**record, "outputs": outputs})

    def forget(self, stage: str) -> None:
        """Drop a stage's marker so that it (and every later stage) runs again."""
        (self.root / stage / MARKER).unlink(missing_ok=True)

    @contextmanager
    def lock(self, *, label: str) -> Iterator[None]:
        """Hold the work directory for this process, or stop at once when another process holds it.

        Stopping (rather than waiting) is deliberate: a CI job must not sit on a GPU runner for hours
        behind another run, and the rerun after that run finishes resumes its finished stages anyway.

        Raises:
            WorkspaceBusyError: another process holds the lock; the message names it.
        """
        from filelock import FileLock, Timeout

        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.root / LOCK_NAME), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise WorkspaceBusyError(
                f"Another publish of {label} is running in {self.root} ({self._holder()}); nothing was done for "
                "it here, so let that run finish and run again to reuse its finished stages."
            ) from None
        try:
            write_json(self.root / LOCK_INFO, {"pid": os.getpid(), "host": socket.gethostname(), "since": now()})
            yield
        finally:
            (self.root / LOCK_INFO).unlink(missing_ok=True)
            lock.release()

    def _holder(self) -> str:
        try:
            info = json.loads((self.root / LOCK_INFO).read_text(encoding="utf-8"))
            return f"process {info['pid']} on {info['host']} since {info['since']}"
        except (OSError, ValueError, KeyError):
            return "a process that is just starting"


def outputs_exist(outputs: dict[str, Any]) -> bool:
    """Paths a marker points to must still be there (a cleaned cache means running the stage again)."""
    return all(Path(v).exists() for k, v in outputs.items() if is_path_key(k) and v)
