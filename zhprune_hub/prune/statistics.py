"""Statistics gathered on calibration data while a block runs: what the methods and repairs read.

Each collector hooks one module of the resident block and accumulates a fixed-size summary
(never the activations themselves): the second-moment matrix XᵀX of a projection's inputs in
the precision its solves run in (float64 on CPU up to 8,192 inputs), its diagonal alone, the cross
moment YᵀX against a target (in the same precision), the squared gradient per
output dimension, the block's 1 − cos(input, output).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from zhprune_hub.prune import obs

#: Rows per matmul when accumulating XᵀX: the product runs in the inputs' precision (fp32 or bf16
#: upcast to fp32) over a bounded number of tokens, and is summed across chunks in H's own precision.
_CHUNK = 4096


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1])


def gram(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Add XᵀX of `x` ([..., n]) to `out` ([n, n] in `obs.solving_dtype`, created when None) and return it."""
    rows = _rows(x)
    if out is None:
        width = rows.shape[1]
        out = torch.zeros(width, width, dtype=obs.solving_dtype(width, rows.device), device=rows.device)
    for start in range(0, rows.shape[0], _CHUNK):
        chunk = rows[start : start + _CHUNK].float()
        out.add_(chunk.T @ chunk)
    return out


def cross(y: torch.Tensor, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Add YᵀX ([m, n], in the precision X's XᵀX is solved in) to `out` and return it: the target side of a fit."""
    ys, xs = _rows(y), _rows(x)
    if out is None:
        out = torch.zeros(ys.shape[1], xs.shape[1], dtype=obs.solving_dtype(xs.shape[1], xs.device), device=xs.device)
    for start in range(0, xs.shape[0], _CHUNK):
        out.add_(ys[start : start + _CHUNK].float().T @ xs[start : start + _CHUNK].float())
    return out


class InputMoments:
    """Forward pre-hook on a Linear: XᵀX of its inputs (full) or Σx² per column (diagonal only)."""

    def __init__(self, module: nn.Module, *, full: bool):
        self.full = full
        self.value: torch.Tensor | None = None
        self.tokens = 0
        self._handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple) -> None:
        x = args[0].detach()
        self.tokens += _rows(x).shape[0]
        if self.full:
            self.value = gram(x, self.value)
        else:
            sq = _rows(x).float().pow(2).sum(dim=0).double()
            self.value = sq if self.value is None else self.value + sq

    def close(self) -> torch.Tensor:
        """The moments, handed over: the collector keeps no reference, so the caller alone decides when they go."""
        self._handle.remove()
        value, self.value = self.value, None
        assert value is not None, "the hooked module never ran"
        return value


class OutputFisher:
    """Backward hook on a Linear: mean squared gradient of the loss per output dimension.

    The diagonal Fisher of the residual stream where the projection writes into it: how much an
    error in each hidden dimension there costs the loss, the weight that makes reconstruction
    errors of different blocks comparable.
    """

    def __init__(self, module: nn.Module):
        self.sum: torch.Tensor | None = None
        self.tokens = 0
        self._handle = module.register_full_backward_hook(self._hook)

    def _hook(self, module: nn.Module, grad_input: Any, grad_output: tuple) -> None:
        g = _rows(grad_output[0].detach()).float()
        sq = g.pow(2).sum(dim=0).double()
        self.sum = sq if self.sum is None else self.sum + sq
        self.tokens += g.shape[0]

    def close(self) -> torch.Tensor:
        self._handle.remove()
        assert self.sum is not None, "no gradient reached the hooked module"
        return self.sum / max(self.tokens, 1)


class BlockSimilarity:
    """1 − cos(block input, block output), averaged over calibration tokens."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def add(self, hidden_in: torch.Tensor, hidden_out: torch.Tensor) -> None:
        cos = nn.functional.cosine_similarity(hidden_in.float(), hidden_out.float(), dim=-1)
        self.total += float((1 - cos).sum())
        self.count += cos.numel()

    @property
    def value(self) -> float:
        return self.total / max(self.count, 1)


def capture_input(module: nn.Module, run: Callable[[], Any]) -> tuple[Any, torch.Tensor]:
    """Run `run()` and return its result with the input `module` received during it."""
    seen: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    try:
        result = run()
    finally:
        handle.remove()
    return result, seen[0]
