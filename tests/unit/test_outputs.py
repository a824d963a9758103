"""Output safety: what a staging leftover must prove before it is removed, and the atomic swap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zhprune_hub.errors import OutputError
from zhprune_hub.outputs import (
    OUTPUT_MARKER,
    atomic_directory,
    check_free_space,
    owner_record,
    provably_dead,
    reclaim_leftovers,
)


def staging(parent: Path, suffix: str, record: dict | None) -> Path:
    path = parent / f".out.partial-{suffix}"
    path.mkdir()
    (path / "model.safetensors").write_bytes(b"x" * 10)
    if record is not None:
        (path / OUTPUT_MARKER).write_text(json.dumps(record))
    return path


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_only_provably_dead_stagings_of_this_tool_are_reclaimed(tmp_path: Path) -> None:
    me = owner_record()
    dead = staging(tmp_path, "dead", {**me, "pid": dead_pid()})
    alive = staging(tmp_path, "alive", me)
    elsewhere = staging(tmp_path, "other-host", {**me, "pid": dead_pid(), "host": "another-machine"})
    unmarked = staging(tmp_path, "unmarked", None)
    foreign = staging(tmp_path, "foreign", {**me, "pid": dead_pid(), "tool": "something-else"})
    other_target = tmp_path / ".other.partial-x"
    other_target.mkdir()
    (other_target / OUTPUT_MARKER).write_text(json.dumps({**me, "pid": dead_pid()}))

    assert reclaim_leftovers(tmp_path / "out") == [dead]
    assert not dead.exists()
    assert all(p.exists() for p in (alive, elsewhere, unmarked, foreign, other_target))


def test_a_reused_pid_or_a_reboot_counts_as_dead() -> None:
    me = owner_record()
    assert not provably_dead(me)
    if me["process_start"] is not None:
        assert provably_dead({**me, "process_start": "1"})  # same pid, another process start: pid reused
    if me["boot_id"] is not None:
        assert provably_dead({**me, "boot_id": "another-boot"})


def test_overwrite_swaps_in_one_step_and_keeps_nothing_old(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_directory(target, overwrite=False) as stage:
        (stage / "a.txt").write_text("first")
    with atomic_directory(target, overwrite=True) as stage:
        (stage / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == [OUTPUT_MARKER, "b.txt"]
    assert json.loads((target / OUTPUT_MARKER).read_text())["pid"] == os.getpid()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_failed_block_leaves_the_old_output_untouched(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_directory(target, overwrite=False) as stage:
        (stage / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), atomic_directory(target, overwrite=True) as stage:
        (stage / "b.txt").write_text("half")
        raise RuntimeError("crash while saving")
    assert (target / "a.txt").read_text() == "first" and not (target / "b.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_something_appearing_at_the_target_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(OutputError, match="already exists"), atomic_directory(target, overwrite=False) as stage:
        (stage / "a.txt").write_text("ours")
        target.mkdir()
        (target / "theirs.txt").write_text("someone else's")
    assert [p.name for p in target.iterdir()] == ["theirs.txt"]


def test_free_space_is_checked_against_the_real_filesystem(tmp_path: Path) -> None:
    check_free_space(tmp_path, 1024, what="A small file")
    with pytest.raises(OutputError, match=r"needs about .* but only .* is free on"):
        check_free_space(tmp_path / "new" / "dir", 2**62, what="An enormous checkpoint")
