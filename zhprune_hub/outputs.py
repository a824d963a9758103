"""Everything zhprune-hub writes to disk goes through here: one atomic file writer, one atomic directory.

Rules this module enforces, so that no command can lose a user's data:

- A directory is replaced (`--overwrite`) only when it carries the marker file this tool leaves in
  every output it writes (`.zhprune-output`), and never when it holds, or lies inside, a protected
  path (the input model, the data directory).
- Outputs are built in a staging directory beside the target (`.NAME.partial-XXXX`) and swapped in
  with one rename. A staging directory carries a marker naming its process (pid, host, boot id,
  process start time); a later run removes the stagings it can prove belong to dead processes,
  which is what a SIGKILL leaves behind. Anything else is left alone.
- Writability and free space are checked before any expensive work.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from zhprune_hub import __version__
from zhprune_hub.errors import OutputError

#: The file that marks a directory as written by zhprune-hub (never pushed to the Hub).
OUTPUT_MARKER = ".zhprune-output"
TOOL = "zhprune-hub"
#: Free space kept beyond the estimate: shards, tokenizer, config and the filesystem's own needs.
SPACE_MARGIN = 1.05
SPACE_SLACK_BYTES = 64 * 2**20
#: Directories this process has put in place, so an interruption can say what was kept.
_COMMITTED: list[Path] = []


def committed_outputs() -> list[Path]:
    return list(_COMMITTED)


# --- one atomic file writer ------------------------------------------------------------------------------


def write_atomically(path: str | Path, data: str | bytes, *, mode: int = 0o644) -> Path:
    """Replace `path` with `data` in one rename, so a crash never leaves half a file.

    The temporary file lives beside the target (same filesystem) and gets `mode` (mkstemp's 0600
    would leave shared results unreadable to other users of a runner).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


# --- who wrote a directory ---------------------------------------------------------------------------------


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot): tells a reused pid from the original."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after its closing parenthesis are plain.
    return stat.rsplit(")", 1)[1].split()[19]


def owner_record() -> dict[str, Any]:
    """What a marker says about the process writing it."""
    pid = os.getpid()
    return {
        "tool": TOOL,
        "version": __version__,
        "pid": pid,
        "host": socket.gethostname(),
        "boot_id": _boot_id(),
        "process_start": _process_start(pid),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def read_marker(directory: Path) -> dict[str, Any] | None:
    """The marker of a directory this tool wrote, or None (no marker, unreadable, or another tool's)."""
    try:
        record = json.loads((directory / OUTPUT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("tool") == TOOL else None


def is_tool_output(directory: Path) -> bool:
    return read_marker(directory) is not None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


def provably_dead(record: dict[str, Any]) -> bool:
    """True only when the process that wrote `record` is certainly gone (same host, and rebooted,
    exited, or its pid now belongs to a process that started at another time)."""
    if record.get("host") != socket.gethostname() or not isinstance(record.get("pid"), int):
        return False
    boot = _boot_id()
    if record.get("boot_id") and boot and record["boot_id"] != boot:
        return True
    pid = record["pid"]
    if not _pid_alive(pid):
        return True
    started = record.get("process_start")
    return started is not None and _process_start(pid) not in (None, started)


def _staging_prefix(target: Path) -> str:
    return f".{target.name}.partial-"


def reclaim_leftovers(target: Path) -> list[Path]:
    """Remove staging directories of `target` left by dead zhprune-hub processes (e.g. a SIGKILL).

    Only directories named like our staging, carrying our marker, whose writer is provably dead are
    removed; everything else is left as it is. Returns what was removed.
    """
    target = Path(target).expanduser().absolute()
    removed: list[Path] = []
    try:
        candidates = [p for p in target.parent.iterdir() if p.name.startswith(_staging_prefix(target))]
    except OSError:
        return removed
    for candidate in candidates:
        record = read_marker(candidate) if candidate.is_dir() and not candidate.is_symlink() else None
        if record is not None and provably_dead(record):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


# --- checks before the expensive work ------------------------------------------------------------------------


def _within(path: Path, other: Path) -> bool:
    return path == other or path.is_relative_to(other)


def check_output_dir(target: Path, *, overwrite: bool, protected: Iterable[Path] = (), flag: str = "--output") -> Path:
    """Check that a directory may be written (or replaced) at `target`; return its absolute path.

    Raises:
        OutputError: the target is a file, overlaps a protected path, exists without --overwrite, was
            not written by this tool, or its parent cannot be written.
    """
    target = Path(target).expanduser().resolve()
    for guarded in protected:
        guarded = Path(guarded).expanduser().resolve()
        if _within(target, guarded) or _within(guarded, target):
            relation = "is" if target == guarded else ("is inside" if _within(target, guarded) else "contains")
            raise OutputError(
                f"{flag} {target} {relation} {guarded}, which this command reads; choose an output directory "
                "outside it."
            )
    if target.exists() and not target.is_dir():
        raise OutputError(f"{flag} {target} is a file; pass a directory path (it is created if missing).")
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise OutputError(
                f"{flag} {target} already exists and is not empty; pass --overwrite to replace a previous "
                "zhprune-hub output, or choose another directory."
            )
        if not is_tool_output(target):
            raise OutputError(
                f"{flag} {target} was not written by zhprune-hub (it has no {OUTPUT_MARKER} marker), so "
                "--overwrite will not replace it; choose another directory or remove it yourself."
            )
    check_writable_dir(_existing_parent(target), purpose=f"{flag} {target}")
    return target


def _existing_parent(path: Path) -> Path:
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def check_writable_dir(directory: Path, *, purpose: str) -> None:
    """Prove that files can be created in `directory` by creating one (permission bits say nothing to
    root, nor about read-only filesystems or quotas).

    Raises:
        OutputError: the directory is not a directory, or nothing can be created in it.
    """
    if not directory.is_dir():
        raise OutputError(f"{purpose} cannot be created: {directory} is not a directory.")
    try:
        handle, probe = tempfile.mkstemp(prefix=".zhprune-write-probe-", dir=directory)
    except OSError as exc:
        raise OutputError(
            f"{purpose} cannot be written: {directory} is not writable ({exc.strerror or exc}); "
            "choose a writable location."
        ) from None
    os.close(handle)
    os.unlink(probe)


def check_free_space(target: Path, needed_bytes: int, *, what: str) -> None:
    """Fail early when the filesystem of `target` cannot hold `needed_bytes` (plus a margin).

    Raises:
        OutputError: not enough free space.
    """
    parent = _existing_parent(Path(target).expanduser().resolve())
    free = shutil.disk_usage(parent).free
    # The output replaces nothing until it is complete, so an old output's space is not counted as free.
    required = int(needed_bytes * SPACE_MARGIN) + SPACE_SLACK_BYTES
    if required > free:
        raise OutputError(
            f"{what} needs about {human_bytes(required)} but only {human_bytes(free)} is free on {parent}; "
            "free some space or choose another location."
        )


def check_writable_file(path: Path, *, flag: str) -> Path:
    """Check before the work that a result file can be written at `path`; return its absolute path.

    Raises:
        OutputError: the path is a directory, or its folder cannot be created or written.
    """
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a directory; pass a file path such as {path / 'results.json'}.")
    if path.exists() and not path.is_file():
        raise OutputError(f"{flag} {path} is not a regular file (a device or a pipe); pass a file path.")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{flag} {path} exists and is not writable; choose another file.")
    check_writable_dir(_existing_parent(path), purpose=f"{flag} {path}")
    return path


def keep_elsewhere(path: Path, data: str | bytes, *, error: OSError, flag: str) -> OutputError:
    """Save `data` that could not be written to `path` in a fresh temporary file, so nothing is lost.

    Returns the error to raise: it names both the path that failed and where the data is now.
    """
    handle, kept = tempfile.mkstemp(prefix=f"{Path(path).stem}-", suffix=Path(path).suffix or ".txt")
    with os.fdopen(handle, "wb") as stream:
        stream.write(data.encode("utf-8") if isinstance(data, str) else data)
    reason = error.strerror or type(error).__name__
    return OutputError(f"{flag} {path} could not be written ({reason}); the results were kept in {kept} instead.")


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} PiB"


# --- the atomic directory ---------------------------------------------------------------------------------------


def make_shareable(directory: Path) -> None:
    """Give a finished output the usual 0755/0644 modes.

    mkdtemp and transformers' shard writer create 0700/0600 entries, which leaves a checkpoint
    unreadable to the other users of a shared runner or a serving container.
    """
    directory.chmod(0o755)
    for path in directory.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(first))


def _swap_into_place(staging: Path, target: Path) -> None:
    """Put `staging` at `target`; an existing target ends up in `staging`'s place (for removal)."""
    if not target.exists():
        staging.rename(target)
    elif not _exchange(staging, target):
        # Two renames: the old output waits under a staging name, so a crash in between leaves
        # only directories that a later run can recognise and reclaim.
        aside = Path(tempfile.mkdtemp(prefix=_staging_prefix(target) + "old-", dir=target.parent))
        aside.rmdir()
        target.rename(aside)
        staging.rename(target)
        staging.mkdir()
        aside.rename(staging / "old")


@contextlib.contextmanager
def atomic_directory(target: Path, *, overwrite: bool, protected: Iterable[Path] = ()) -> Iterator[Path]:
    """Yield a staging directory beside `target`; it replaces `target` only if the block succeeds.

    The staging directory carries the marker from the start (so a crash leaves something a later
    run can prove dead and remove) and the finished output keeps it (so `--overwrite` may replace it).

    Raises:
        OutputError: see `check_output_dir`.
    """
    target = check_output_dir(target, overwrite=overwrite, protected=protected)
    reclaim_leftovers(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(target), dir=target.parent))
    try:
        write_atomically(staging / OUTPUT_MARKER, json.dumps({**owner_record(), "state": "staging"}) + "\n")
        yield staging
        write_atomically(staging / OUTPUT_MARKER, json.dumps({**owner_record(), "state": "complete"}) + "\n")
        make_shareable(staging)
        # Re-checked at the last moment: something may have appeared at the target meanwhile.
        check_output_dir(target, overwrite=overwrite)
        _swap_into_place(staging, target)
        _COMMITTED.append(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
