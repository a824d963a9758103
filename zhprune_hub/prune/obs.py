"""Compensated removal (Optimal Brain Surgeon) and least-squares repair of one projection.

Pure tensor functions: the traversal gives each of them a projection's weight W (out × in) and
H = XᵀX of its inputs, and gets back which input columns (single channels or whole heads) can go
at the least cost once the kept columns are updated, and the updated kept columns.

Removing the column set S of W and re-fitting the others on the same inputs raises the output
error by tr(W_S [H⁻¹]_SS⁻¹ W_Sᵀ) (the OBS cost; for one column ‖W[:,j]‖² / [H⁻¹]_jj). Costs are
weighted per output row when the caller knows how much each output dimension matters downstream
(the diagonal Fisher of the residual stream), which makes costs of different blocks comparable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from zhprune_hub.errors import ZhpruneError

#: Dampening added to H's diagonal, relative to its mean diagonal. GPTQ/SparseGPT use 1%; with 512
#: calibration windows 0.1% measured better here (SmolLM2 at 20%: 70.1 → 68.0, BENCHMARKS.md).
DEFAULT_DAMPING = 0.001
#: Attempts at a solve, multiplying the dampening by 10 each time, before giving up.
_DAMPING_RETRIES = 4


#: Above this width a CPU solve runs in float32 (the float64 matrices would dominate memory).
_FLOAT64_MAX_WIDTH = 8192


def solving_dtype(width: int, device: torch.device) -> torch.dtype:
    """The precision of an H of this width, from accumulation to solve: float64 on CPU up to 8,192
    inputs, else float32 (as GPTQ does; one float64 H of LLaMA-7B's 11,008-wide down_proj is 0.97 GB)."""
    return torch.float64 if width <= _FLOAT64_MAX_WIDTH and device.type == "cpu" else torch.float32


def for_solving(h: torch.Tensor) -> torch.Tensor:
    """H in the precision its solves run in (see `solving_dtype`)."""
    return h.to(solving_dtype(h.shape[0], h.device))


class SolveError(ZhpruneError):
    """A Hessian stayed singular even after heavy dampening."""


@dataclass(frozen=True)
class Removal:
    """Which input units go, in the order they were removed, and what each cost when it went."""

    order: list[int]
    costs: list[float]


def diagonal_scale(diagonal: torch.Tensor) -> float:
    """What the dampening is relative to: the mean of H's diagonal (1 for an all-zero H)."""
    scale = float(diagonal.mean())
    return scale if scale > 0 else 1.0


def damped_cholesky_inverse(h: torch.Tensor, damping: float = DEFAULT_DAMPING) -> tuple[torch.Tensor, float]:
    """(H + d·I)⁻¹ through a Cholesky factorisation, with d = damping × mean(diag H).

    A factorisation that fails (H numerically singular, e.g. dead channels) is retried with ten
    times the dampening, up to four times; the dampening actually used is returned. The dampening
    is added to H's diagonal in place and taken off again, and the inverse overwrites the factor,
    so H and one more n × n matrix are all that ever exist.

    Raises:
        SolveError: H is not positive definite even with the largest dampening.
    """
    scale = diagonal_scale(h.diagonal())
    used = damping
    diagonal = h.diagonal()
    for _ in range(_DAMPING_RETRIES):
        shift = used * scale
        diagonal.add_(shift)
        try:
            factor, info = torch.linalg.cholesky_ex(h)
        finally:
            diagonal.sub_(shift)
        if int(info) == 0:
            return torch.cholesky_inverse(factor, out=factor), used
        del factor
        used = max(used, 1e-4) * 10
    raise SolveError(
        "A least-squares solve stayed singular even with heavy dampening; use more calibration data "
        "(--num-samples) or --no-repair."
    )


def _row_weighted_sq(w: torch.Tensor, row_weight: torch.Tensor | None) -> torch.Tensor:
    """w² with each row weighted, in one temporary the size of w."""
    sq = w.square()
    return sq if row_weight is None else sq.mul_(row_weight[:, None])


#: Removed columns are dropped from the working matrices once fewer than this share of them is alive.
_COMPACT_BELOW = 0.75


def remove_columns(
    weight: torch.Tensor,
    hinv: torch.Tensor,
    count: int,
    *,
    row_weight: torch.Tensor | None = None,
    steps: int = 32,
) -> Removal:
    """Greedy OBS removal of `count` single input columns of `weight`.

    Costs are refreshed `steps` times: each step removes the cheapest 1/steps of the remaining count
    together and applies their joint update to W and H⁻¹ (a rank-k update), so the work is a few
    passes over H⁻¹ instead of one per column. Once fewer than 3/4 of the working columns are alive
    the removed ones are dropped from W and H⁻¹, so long removals (the cost curves) get cheaper as
    they go without paying for a copy at every step. `hinv` is consumed (updated in place).
    """
    if count <= 0:
        return Removal([], [])
    w = weight.to(hinv.dtype).clone()
    index = torch.arange(w.shape[1], device=w.device)  # original column of each working column
    alive = torch.ones(w.shape[1], dtype=torch.bool, device=w.device)
    order: list[int] = []
    costs: list[float] = []
    chunk = max(1, -(-count // max(1, steps)))
    while len(order) < count:
        diag = hinv.diagonal().clamp_min(torch.finfo(hinv.dtype).tiny)
        scores = _row_weighted_sq(w, row_weight).sum(dim=0) / diag
        scores[~alive] = float("inf")
        take = min(chunk, count - len(order))
        picks = torch.topk(scores, take, largest=False).indices
        costs.extend(scores[picks].tolist())
        order.extend(index[picks].tolist())
        _joint_update(w, hinv, picks)
        alive[picks] = False
        if int(alive.sum()) < _COMPACT_BELOW * alive.numel():
            kept = alive.nonzero().squeeze(1)
            w, hinv, index = w.index_select(1, kept), hinv[kept[:, None], kept], index[kept]
            alive = torch.ones(kept.numel(), dtype=torch.bool, device=w.device)
    return Removal(order, costs)


def remove_column_groups(
    weight: torch.Tensor,
    hinv: torch.Tensor,
    groups: list[torch.Tensor],
    count: int,
    *,
    row_weight: torch.Tensor | None = None,
) -> Removal:
    """Greedy OBS removal of `count` groups of input columns (e.g. the head_dim columns of a head).

    The cost of a group S is tr(W_S [H⁻¹]_SS⁻¹ W_Sᵀ); after each removal W and H⁻¹ get the group's
    joint update. `hinv` is consumed.
    """
    w = weight.to(hinv.dtype).clone()
    alive = list(range(len(groups)))
    order: list[int] = []
    costs: list[float] = []
    for _ in range(count):
        best, best_cost = -1, float("inf")
        for g in alive:
            cost = group_cost(w, hinv, groups[g], row_weight)
            if cost < best_cost:
                best, best_cost = g, cost
        order.append(best)
        costs.append(best_cost)
        _joint_update(w, hinv, groups[best])
        alive.remove(best)
    return Removal(order, costs)


def group_cost(w: torch.Tensor, hinv: torch.Tensor, cols: torch.Tensor, row_weight: torch.Tensor | None) -> float:
    """tr(W_S [H⁻¹]_SS⁻¹ W_Sᵀ), rows weighted: the output error of dropping columns S and compensating."""
    block = hinv[cols][:, cols]
    ws = w[:, cols]
    solved = torch.linalg.solve(block, ws.T)  # [H⁻¹]_SS⁻¹ W_Sᵀ
    per_row = (ws * solved.T).sum(dim=1)
    return float(per_row.sum() if row_weight is None else (per_row * row_weight).sum())


def _joint_update(w: torch.Tensor, hinv: torch.Tensor, cols: torch.Tensor) -> None:
    """Remove columns `cols` jointly: W -= W_S B⁻¹ H⁻¹_S,: ; H⁻¹ -= H⁻¹_:,S B⁻¹ H⁻¹_S,: (B = H⁻¹_SS)."""
    block = hinv[cols][:, cols]
    rows = hinv[cols, :]
    solved = torch.linalg.solve(block, rows)  # B⁻¹ H⁻¹_S,:
    w.addmm_(w[:, cols], solved, alpha=-1)
    hinv.addmm_(hinv[:, cols], solved, alpha=-1)
    w[:, cols] = 0
    hinv[cols, :] = 0
    hinv[:, cols] = 0


def least_squares(
    h: torch.Tensor, cross_kept: torch.Tensor, kept: torch.Tensor, *, damping: float = DEFAULT_DAMPING
) -> tuple[torch.Tensor, float]:
    """Kept columns W' minimising ‖X_K W'ᵀ − Y‖² + d‖W'‖²: W' = C_K (H_KK + d·I)⁻¹, C = YᵀX.

    `cross_kept` is C_K, C's kept columns (the caller needs them too, so they are gathered once).
    Returns the new weight [out, |K|] in H's dtype and the dampening used (raised when the solve is
    ill-conditioned).
    """
    inverse, used = damped_cholesky_inverse(h[kept[:, None], kept], damping)
    return cross_kept.to(inverse.dtype) @ inverse, used
