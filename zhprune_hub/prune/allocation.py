"""Allocation: turn unit scores into a PruningPlan that removes the requested number of parameters.

`global` ranks every unit of every block by (score × layer prior) / parameter cost and removes
the cheapest until the target is met, so widths differ per block. `uniform` removes the same
number of head units and channels from every block (the counts the global ranking would
choose on average), picking within each block by the same scores.

Layer prior: w_l = (s_l / mean s)^T with s_l = 1 - cos(block input, block output) on the
calibration set; T = 0 is pure global ranking. Whole-block removal: a block whose s_l lies more
than tau robust deviations (MAD) below the median of all blocks may be removed whole; tau=None
means auto (3.0), a large tau disables it.

Rounding (`round_to` N > 1): MLP channels are allocated in chunks of N (a chunk's score is the sum
of its channels', or the cost curve read at multiples of N), so every kept width is a multiple of
N and GPU kernels keep aligned shapes. Heads are already whole units (a KV group with `group`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from zhprune_hub.errors import RatioError
from zhprune_hub.prune.importance import LayerScores
from zhprune_hub.prune.plan import LayerPlan, PruningPlan
from zhprune_hub.prune.structure import LayerShape, UnitCosts

AUTO_TAU = 3.0
HeadUnit = Literal["group", "query", "none"]  # none: attention is kept whole


@dataclass
class AllocationReport:
    """How the plan was reached, for the pruning report and the model card."""

    layer_prior: list[float] | None
    tau: float | None
    block_z_scores: list[float] | None
    removed_blocks: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: With --round-to: the multiple, and each block's MLP width with and without rounding.
    rounding: dict | None = None


@dataclass(frozen=True)
class _LayerUnits:
    """One block's removable units in removal order (least important first)."""

    head_scores: np.ndarray  # per head unit, ascending
    head_order: list[list[int]]  # for each head unit, the query heads it removes
    kv_order: list[list[int]]  # for each head unit, the KV heads it removes
    head_cost: int
    channel_scores: np.ndarray  # per channel unit (a chunk of `channel_chunk` channels), ascending
    channel_order: np.ndarray  # channels in removal order
    channel_cost: int  # parameters of one channel unit
    channel_chunk: int = 1

    @property
    def channel_units(self) -> int:
        return len(self.channel_scores)


def check_round_to(intermediate_sizes: list[int], round_to: int) -> None:
    """Refuse a multiple that no kept MLP width can honour, before any work is done.

    Raises:
        RatioError: a block's MLP width is not a multiple of `round_to` (or leaves no chunk to cut).
    """
    if round_to <= 1:
        return
    for width in sorted(set(intermediate_sizes)):
        if width % round_to or width // round_to < 2:
            raise RatioError(
                f"--round-to {round_to} needs every MLP width to be a multiple of {round_to} with at least two "
                f"chunks, but this model has {width} channels; choose a divisor of {width} (e.g. 64, 32 or 8)."
            )


def _layer_units(
    scores: LayerScores, shape: LayerShape, costs: UnitCosts, head_unit: HeadUnit, round_to: int = 1
) -> _LayerUnits:
    heads = scores.heads.double().numpy()
    group = shape.group_size
    if head_unit == "none":
        head_scores, head_order, kv_order, head_cost = np.zeros(0), [], [], 1
    elif head_unit == "group":
        by_group = heads.reshape(shape.num_kv_heads, group).sum(axis=1) + scores.kv_heads.double().numpy()
        order = np.argsort(by_group, kind="stable")[: shape.num_kv_heads - 1]
        head_scores = by_group[order]
        head_order = [list(range(j * group, (j + 1) * group)) for j in order]
        kv_order = [[int(j)] for j in order]
        head_cost = costs.kv_head + group * costs.q_head
    else:
        grouped = heads.reshape(shape.num_kv_heads, group)
        ranks = np.argsort(grouped, axis=1, kind="stable")
        head_scores = np.array([grouped[np.arange(shape.num_kv_heads), ranks[:, r]].sum() for r in range(group - 1)])
        head_order = [[int(j * group + ranks[j, r]) for j in range(shape.num_kv_heads)] for r in range(group - 1)]
        kv_order = [[] for _ in range(group - 1)]
        head_cost = shape.num_kv_heads * costs.q_head
    channels = scores.channels.double().numpy()
    chunk = max(1, round_to)
    channel_order = np.argsort(channels, kind="stable")[: shape.intermediate_size - chunk]
    # A chunk is the next `chunk` channels in score order: its score is theirs summed.
    channel_scores = channels[channel_order].reshape(-1, chunk).sum(axis=1)
    return _LayerUnits(
        head_scores=head_scores,
        head_order=head_order,
        kv_order=kv_order,
        head_cost=head_cost,
        channel_scores=channel_scores,
        channel_order=channel_order,
        channel_cost=costs.channel * chunk,
        channel_chunk=chunk,
    )


def _layer_plan(
    index: int, shape: LayerShape, units: _LayerUnits, heads_removed: int, channels_removed: int
) -> LayerPlan:
    gone_heads = {h for unit in units.head_order[:heads_removed] for h in unit}
    gone_kv = {j for unit in units.kv_order[:heads_removed] for j in unit}
    gone_channels = set(units.channel_order[:channels_removed].tolist())
    return LayerPlan(
        index=index,
        kept_heads=[h for h in range(shape.num_heads) if h not in gone_heads],
        kept_kv_heads=[j for j in range(shape.num_kv_heads) if j not in gone_kv],
        kept_channels=[c for c in range(shape.intermediate_size) if c not in gone_channels],
    )


def _removed_layer(index: int) -> LayerPlan:
    return LayerPlan(index=index, removed=True, kept_heads=[], kept_kv_heads=[], kept_channels=[])


def layer_prior(block_importance: list[float] | None, temperature: float) -> list[float] | None:
    if block_importance is None or temperature == 0:
        return None
    values = np.asarray(block_importance, dtype=np.float64)
    values = np.clip(values, 1e-12, None)
    return ((values / values.mean()) ** temperature).tolist()


def robust_z_below_median(block_importance: list[float]) -> list[float]:
    values = np.asarray(block_importance, dtype=np.float64)
    median = np.median(values)
    spread = 1.4826 * np.median(np.abs(values - median)) or 1e-12
    return ((median - values) / spread).tolist()


def _heads_valid(num_heads: int, num_kv_heads: int, hidden_size: int, must_divide_hidden: bool) -> bool:
    if num_heads < 1 or num_kv_heads < 1 or num_heads % num_kv_heads:
        return False
    return not must_divide_hidden or hidden_size % num_heads == 0


@dataclass(frozen=True)
class BlockBudget:
    """How many head units and channels one block loses (which ones is decided when it is cut)."""

    index: int
    removed: bool
    head_units: int
    channels: int


def allocate(
    scores: list[LayerScores],
    shapes: list[LayerShape],
    costs: list[UnitCosts],
    *,
    target_removed: int,
    layout: Literal["global", "uniform"],
    head_unit: HeadUnit,
    head_dim: int,
    hidden_size: int,
    heads_must_divide_hidden: bool,
    temperature: float = 1.0,
    tau: float | None = None,
    block_importance: list[float] | None = None,
    random_order: np.random.Generator | None = None,
    round_to: int = 1,
) -> tuple[PruningPlan, AllocationReport]:
    """Decide what every block keeps from per-unit scores.

    `random_order` replaces the scores' cross-block order by one uniform draw per unit (the random
    floor: every unit is equally likely to go, whatever its parameter cost).

    Raises:
        RatioError: the target cannot be met while keeping one head unit and one channel per block.
    """
    prior = layer_prior(block_importance, temperature)
    removed_blocks, units, heads_removed, channels_removed, report = _counts(
        lambda i: _layer_units(scores[i], shapes[i], costs[i], head_unit, round_to),
        shapes,
        costs,
        target_removed=target_removed,
        layout=layout,
        head_unit=head_unit,
        hidden_size=hidden_size,
        heads_must_divide_hidden=heads_must_divide_hidden,
        prior=prior,
        tau=tau,
        block_importance=block_importance,
        random_order=random_order,
        uniform_by_cost=False,
    )
    layers = []
    planned = sum(costs[i].block for i in removed_blocks)
    for index in range(len(shapes)):
        if index in removed_blocks:
            layers.append(_removed_layer(index))
            continue
        u = units[index]
        channels = channels_removed[index] * u.channel_chunk
        layers.append(_layer_plan(index, shapes[index], u, heads_removed[index], channels))
        planned += heads_removed[index] * u.head_cost + channels_removed[index] * u.channel_cost
    plan = PruningPlan(layers=layers, head_dim=head_dim, target_removed=target_removed, planned_removed=planned)
    return plan, report


def allocate_by_cost(
    head_costs: list[list[float]],
    channel_costs: list[list[float]],
    shapes: list[LayerShape],
    costs: list[UnitCosts],
    *,
    target_removed: int,
    layout: Literal["global", "uniform"],
    head_unit: HeadUnit,
    hidden_size: int,
    heads_must_divide_hidden: bool,
    tau: float | None = None,
    block_importance: list[float] | None = None,
    round_to: int = 1,
) -> tuple[list[BlockBudget], AllocationReport]:
    """Per-block budgets from cumulative removal costs (cost of removing the first k units of a kind).

    `global` takes the units of least marginal cost per parameter across all blocks; `uniform` the
    head-unit count, the same in every block, whose total cost with the channels it leaves to remove
    is least.
    """

    def units_of(i: int) -> _LayerUnits:
        return _curve_units(head_costs[i], channel_costs[i], shapes[i], costs[i], head_unit, round_to)

    removed_blocks, units, heads_removed, channels_removed, report = _counts(
        units_of,
        shapes,
        costs,
        target_removed=target_removed,
        layout=layout,
        head_unit=head_unit,
        hidden_size=hidden_size,
        heads_must_divide_hidden=heads_must_divide_hidden,
        prior=None,
        tau=tau,
        block_importance=block_importance,
        random_order=None,
        uniform_by_cost=True,
    )
    budgets = [
        BlockBudget(i, True, 0, 0)
        if i in removed_blocks
        else BlockBudget(i, False, heads_removed[i], channels_removed[i] * units[i].channel_chunk)
        for i in range(len(shapes))
    ]
    return budgets, report


def _curve_units(
    head_curve: list[float],
    channel_curve: list[float],
    shape: LayerShape,
    costs: UnitCosts,
    head_unit: HeadUnit,
    round_to: int = 1,
) -> _LayerUnits:
    """Units whose 'scores' are marginal removal costs; the order lists are placeholders (cut time decides)."""
    head_cost = (
        costs.kv_head + shape.group_size * costs.q_head if head_unit == "group" else shape.num_kv_heads * costs.q_head
    )
    marginal_heads = np.diff(np.asarray([0.0, *head_curve], dtype=np.float64))
    chunk = max(1, round_to)
    # The curve read at every chunk boundary: the cumulative cost of removing 1, 2, … chunks.
    at_chunks = np.asarray(channel_curve, dtype=np.float64)[chunk - 1 :: chunk]
    marginal_channels = np.diff(np.concatenate([[0.0], at_chunks]))
    return _LayerUnits(
        head_scores=marginal_heads,
        head_order=[[] for _ in head_curve],
        kv_order=[[] for _ in head_curve],
        head_cost=head_cost,
        channel_scores=marginal_channels,
        channel_order=np.arange(len(at_chunks) * chunk),
        channel_cost=costs.channel * chunk,
        channel_chunk=chunk,
    )


def _counts(
    units_of: Callable[[int], _LayerUnits],
    shapes: list[LayerShape],
    costs: list[UnitCosts],
    *,
    target_removed: int,
    layout: str,
    head_unit: HeadUnit,
    hidden_size: int,
    heads_must_divide_hidden: bool,
    prior: list[float] | None,
    tau: float | None,
    block_importance: list[float] | None,
    random_order: np.random.Generator | None,
    uniform_by_cost: bool,
) -> tuple[set[int], dict[int, _LayerUnits], dict[int, int], dict[int, int], AllocationReport]:
    report = AllocationReport(layer_prior=prior, tau=None, block_z_scores=None)
    num_layers = len(shapes)
    removed_blocks: set[int] = set()
    budget = target_removed
    if block_importance is not None and target_removed > 0:
        tau_used = AUTO_TAU if tau is None else tau
        z_scores = robust_z_below_median(block_importance)
        report.tau, report.block_z_scores = tau_used, z_scores
        for index in sorted(range(num_layers), key=lambda i: block_importance[i]):
            if z_scores[index] > tau_used and costs[index].block <= budget and len(removed_blocks) < num_layers - 1:
                removed_blocks.add(index)
                budget -= costs[index].block
    report.removed_blocks = sorted(removed_blocks)

    units = {i: units_of(i) for i in range(num_layers) if i not in removed_blocks}
    if random_order is not None:
        units = {i: _shuffled_priority(u, random_order) for i, u in units.items()}
    capacity = sum(len(u.head_order) * u.head_cost + u.channel_units * u.channel_cost for u in units.values())
    if budget > capacity:
        total_possible = capacity + (target_removed - budget)
        raise RatioError(
            f"Removing {target_removed:,} parameters is not possible: at most {total_possible:,} can go while every "
            "block keeps one attention unit and one MLP channel and the hidden size stays; lower --ratio."
        )
    if layout == "global":
        heads_removed, channels_removed = _global_counts(units, prior, budget)
    else:
        heads_removed, channels_removed = _uniform_counts(
            units, shapes, budget, head_unit, hidden_size, heads_must_divide_hidden, report, by_cost=uniform_by_cost
        )
    return removed_blocks, units, heads_removed, channels_removed, report


def _shuffled_priority(u: _LayerUnits, generator: np.random.Generator) -> _LayerUnits:
    """The random floor: each unit's priority per parameter is one uniform draw (ascending within a block)."""
    heads = np.sort(generator.random(len(u.head_scores))) * u.head_cost
    channels = np.sort(generator.random(u.channel_units)) * u.channel_cost
    return replace(u, head_scores=heads, channel_scores=channels)


def _global_counts(
    units: dict[int, _LayerUnits], prior: list[float] | None, budget: int
) -> tuple[dict[int, int], dict[int, int]]:
    """Greedy removal of the lowest (score × prior / cost) units across all blocks."""
    priority, layer_ids, kinds, ranks, unit_costs = [], [], [], [], []
    for index, u in units.items():
        weight = 1.0 if prior is None else prior[index]
        for kind, values, cost in ((0, u.head_scores, u.head_cost), (1, u.channel_scores, u.channel_cost)):
            count = len(values)
            priority.append(values * weight / cost)
            layer_ids.append(np.full(count, index))
            kinds.append(np.full(count, kind))
            ranks.append(np.arange(count))
            unit_costs.append(np.full(count, cost))
    heads_removed = dict.fromkeys(units, 0)
    channels_removed = dict.fromkeys(units, 0)
    if budget <= 0 or not priority:
        return heads_removed, channels_removed
    priority_all = np.concatenate(priority)
    rank_all = np.concatenate(ranks)
    # Ties keep each block's own order (rank) so removal never skips a less important unit.
    order = np.lexsort((rank_all, priority_all))
    cost_all = np.concatenate(unit_costs)[order]
    cumulative = np.cumsum(cost_all)
    take = int(np.searchsorted(cumulative, budget, side="left")) + 1
    layer_all = np.concatenate(layer_ids)[order[:take]]
    kind_all = np.concatenate(kinds)[order[:take]]
    for index, kind in zip(layer_all.tolist(), kind_all.tolist(), strict=True):
        if kind == 0:
            heads_removed[index] += 1
        else:
            channels_removed[index] += 1
    return heads_removed, channels_removed


def _uniform_counts(
    units: dict[int, _LayerUnits],
    shapes: list[LayerShape],
    budget: int,
    head_unit: HeadUnit,
    hidden_size: int,
    must_divide_hidden: bool,
    report: AllocationReport,
    *,
    by_cost: bool = False,
) -> tuple[dict[int, int], dict[int, int]]:
    """Same counts in every block; channels fill what the heads leave.

    The head-unit count is the one the global ranking picks on average, or (`by_cost`, when the
    scores are marginal removal costs) the one whose total cost across blocks is least.
    """
    indices = list(units)
    kept_shapes = {(shapes[i].num_heads, shapes[i].num_kv_heads, shapes[i].intermediate_size) for i in indices}
    if len(kept_shapes) != 1:
        raise RatioError(
            "The uniform layout needs a base model whose blocks all have the same widths; use --layout global."
        )
    shape = shapes[indices[0]]
    first = units[indices[0]]
    if budget <= 0:
        zeros = dict.fromkeys(indices, 0)
        return zeros, dict(zeros)
    global_heads, _ = _global_counts(units, None, budget)
    preferred = round(sum(global_heads.values()) / len(indices))

    def heads_after(k: int) -> tuple[int, int]:
        if head_unit == "group":
            return (shape.num_kv_heads - k) * shape.group_size, shape.num_kv_heads - k
        return shape.num_kv_heads * (shape.group_size - k), shape.num_kv_heads

    candidates = [
        k for k in range(len(first.head_order) + 1) if _heads_valid(*heads_after(k), hidden_size, must_divide_hidden)
    ]

    def channels_for(k_heads: int) -> int:
        needed = budget - len(indices) * k_heads * first.head_cost
        return max(0, math.ceil(needed / (len(indices) * first.channel_cost)))

    def total_cost(k_heads: int) -> float:
        k_channels = channels_for(k_heads)
        if k_channels > first.channel_units:
            return math.inf
        return sum(
            float(units[i].head_scores[:k_heads].sum() + units[i].channel_scores[:k_channels].sum()) for i in indices
        )

    if by_cost:
        preferred = min(candidates, key=lambda k: (total_cost(k), k))
    for k_heads in sorted(candidates, key=lambda k: (abs(k - preferred), k)):
        k_channels = channels_for(k_heads)
        if k_channels <= first.channel_units:
            if k_heads != preferred:
                report.notes.append(
                    f"uniform layout removes {k_heads} head unit(s) per block instead of {preferred}: "
                    "the stock config needs hidden_size divisible by the head count"
                    if must_divide_hidden
                    else f"uniform layout removes {k_heads} head unit(s) per block to reach the target"
                )
            return dict.fromkeys(indices, k_heads), dict.fromkeys(indices, k_channels)
    raise RatioError(
        "The target cannot be met with the same widths in every block; lower --ratio or use --layout global."
    )
