"""Calibration hidden states kept off the heap when they are large: by block for the backward walk,
by batch for the dense stream of pass 2.

The gradient pass walks the blocks in reverse and needs every block's input again. Unless all of
them together are tiny, each block's states go to a file in the run's scratch directory, so
resident memory holds one set whatever the depth. Pass 2 carries more than one set (the pruned
stream, the dense stream its correction aims at, o_proj's inputs while heads are cut); past its
budget all but the pruned stream live in files, one batch per file, read and replaced one batch
at a time.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from zhprune_hub.prune.traversal import States

#: The backward walk's copies of every block's inputs stay in memory only while all of them fit in
#: this many bytes (tiny runs, such as the tests); past it they go to files, so that peak memory
#: does not grow with depth.
BACKWARD_MEMORY_BUDGET = 64 * 2**20
#: Pass 2's extra sets of states stay in memory below this many bytes; they do not grow with depth,
#: and 512 MiB is small beside the 1.5 GB the memory target leaves.
PASS_TWO_MEMORY_BUDGET = 512 * 2**20


def pass_two_sets(correcting: bool) -> int:
    """Sets of calibration states a pass-2 block holds at once: the pruned stream, o_proj's inputs
    while heads are cut, and the dense stream when a stream correction runs."""
    return 3 if correcting else 2


def pass_two_spills(set_bytes: int, correcting: bool) -> bool:
    """Whether pass 2 keeps all but the pruned stream in files (read at call time, so tests can lower it)."""
    return pass_two_sets(correcting) * set_bytes > PASS_TWO_MEMORY_BUDGET


class StateSpool:
    """Every block's input states, kept for the backward walk: in memory when tiny, else in BatchFiles."""

    def __init__(self, scratch: Path, *, expected_bytes: int, memory_budget: int = BACKWARD_MEMORY_BUDGET):
        self.scratch = Path(scratch)
        self.on_disk = expected_bytes > memory_budget
        self._blocks: dict[int, States | BatchFiles] = {}

    def put(self, index: int, states: States) -> None:
        self._blocks[index] = BatchFiles(self.scratch / f"states-{index:05d}", states) if self.on_disk else states

    def pop(self, index: int) -> States:
        stored = self._blocks.pop(index)
        if isinstance(stored, BatchFiles):
            states = list(stored)
            stored.close()
            return states
        return stored


class BatchFiles:
    """A list of batches kept in files: `files[i]` reads batch i, `files[i] = x` replaces it.

    Stands in for a States list wherever batches are visited and replaced one at a time, so one
    batch is in memory instead of all of them.
    """

    def __init__(self, directory: Path, batches: Iterable[torch.Tensor] = ()):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._count = 0
        for batch in batches:
            self.append(batch)

    def _path(self, index: int) -> Path:
        return self.directory / f"batch-{index:05d}.pt"

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self._count:
            raise IndexError(index)
        return torch.load(self._path(index), weights_only=True)

    def __setitem__(self, index: int, batch: torch.Tensor | None) -> None:
        if batch is None:
            self._path(index).unlink(missing_ok=True)
            return
        batch = batch.detach().cpu()
        # A view would save its whole storage.
        torch.save(batch.clone() if batch.untyped_storage().nbytes() != batch.nbytes else batch, self._path(index))

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (self[i] for i in range(self._count))

    def append(self, batch: torch.Tensor) -> None:
        self._count += 1
        self[self._count - 1] = batch

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def states_bytes(states: States) -> int:
    return sum(s.numel() * s.element_size() for s in states)
