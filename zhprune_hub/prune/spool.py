"""Per-block hidden states kept for the backward walk: in memory when small, on disk otherwise.

The gradient pass walks the blocks in reverse and needs every block's input again. For a model
whose calibration states fit comfortably they stay in memory; beyond `memory_budget` bytes each
block's states go to a file in the run's scratch directory, so resident memory holds one set.
"""

from __future__ import annotations

from pathlib import Path

import torch

from zhprune_hub.prune.traversal import States

#: Keep all blocks' states in memory below this many bytes.
DEFAULT_MEMORY_BUDGET = 2 * 2**30


class StateSpool:
    def __init__(self, scratch: Path, *, expected_bytes: int, memory_budget: int = DEFAULT_MEMORY_BUDGET):
        self.scratch = Path(scratch)
        self.on_disk = expected_bytes > memory_budget
        self._memory: dict[int, States] = {}

    def _path(self, index: int) -> Path:
        return self.scratch / f"states-{index:05d}.pt"

    def put(self, index: int, states: States) -> None:
        if self.on_disk:
            self.scratch.mkdir(parents=True, exist_ok=True)
            torch.save([s.cpu() for s in states], self._path(index))
        else:
            self._memory[index] = states

    def pop(self, index: int) -> States:
        if not self.on_disk:
            return self._memory.pop(index)
        path = self._path(index)
        states = torch.load(path, weights_only=True)
        path.unlink()
        return states


def states_bytes(states: States) -> int:
    return sum(s.numel() * s.element_size() for s in states)
