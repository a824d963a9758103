"""Allocation arithmetic on synthetic scores: targets, order, uniform widths, block removal."""

from __future__ import annotations

import pytest
import torch

from zhprune_hub.errors import RatioError
from zhprune_hub.prune.allocation import allocate, layer_prior, robust_z_below_median
from zhprune_hub.prune.importance import LayerScores
from zhprune_hub.prune.structure import LayerShape, UnitCosts

SHAPE = LayerShape(num_heads=9, num_kv_heads=3, intermediate_size=64)
COSTS = UnitCosts(
    q_head=2 * 16 * 48, kv_head=2 * 16 * 48, channel=3 * 48, block=9 * 2 * 16 * 48 + 6 * 16 * 48 + 64 * 144
)


def scores(layers: int, seed: int = 0) -> list[LayerScores]:
    generator = torch.Generator().manual_seed(seed)
    return [
        LayerScores(
            heads=torch.rand(9, generator=generator) * 1e3,
            kv_heads=torch.rand(3, generator=generator) * 1e3,
            channels=torch.rand(64, generator=generator) * 50,
        )
        for _ in range(layers)
    ]


def run(layers: int = 6, **options):
    defaults = dict(
        target_removed=20_000,
        layout="global",
        head_unit="group",
        head_dim=16,
        hidden_size=48,
        heads_must_divide_hidden=False,
    )
    defaults.update(options)
    return allocate(scores(layers), [SHAPE] * layers, [COSTS] * layers, **defaults)


def test_global_meets_the_target_with_less_than_one_unit_to_spare():
    plan, _ = run(target_removed=20_000)
    assert 20_000 <= plan.planned_removed < 20_000 + COSTS.kv_head + 3 * COSTS.q_head


def test_global_removes_the_lowest_scored_channels_first():
    layer_scores = scores(6)
    plan, _ = allocate(
        layer_scores,
        [SHAPE] * 6,
        [COSTS] * 6,
        target_removed=3_000,
        layout="global",
        head_unit="group",
        head_dim=16,
        hidden_size=48,
        heads_must_divide_hidden=False,
    )
    for layer, layer_score in zip(plan.layers, layer_scores, strict=True):
        removed = sorted(set(range(64)) - set(layer.kept_channels))
        kept_min = min(layer_score.channels[layer.kept_channels])
        assert all(layer_score.channels[c] <= kept_min for c in removed)


def test_uniform_gives_every_block_the_same_widths():
    plan, _ = run(layout="uniform", target_removed=40_000)
    widths = {(lp.num_heads, lp.num_kv_heads, lp.intermediate_size) for lp in plan.layers}
    assert len(widths) == 1 and plan.planned_removed >= 40_000


def test_uniform_respects_llama_head_divisibility():
    plan, _ = run(
        layout="uniform", head_unit="query", target_removed=60_000, hidden_size=48, heads_must_divide_hidden=True
    )
    heads = plan.layers[0].num_heads
    assert 48 % heads == 0 and heads % 3 == 0


def test_query_unit_keeps_every_kv_head_and_equal_groups():
    plan, _ = run(head_unit="query", target_removed=50_000)
    for layer in plan.layers:
        assert layer.kept_kv_heads == [0, 1, 2]
        per_group = [sum(1 for h in layer.kept_heads if h // 3 == g) for g in range(3)]
        assert len(set(per_group)) == 1 and per_group[0] >= 1


def test_tau_removes_an_outlier_block_and_a_large_tau_disables_it():
    importance = [0.30, 0.28, 0.31, 0.005, 0.29, 0.33]
    plan, report = run(target_removed=30_000, block_importance=importance, tau=None)
    assert plan.removed_blocks == [3] and report.tau == 3.0
    plan, _ = run(target_removed=30_000, block_importance=importance, tau=1e9)
    assert plan.removed_blocks == []


def test_temperature_zero_is_pure_global_ranking():
    assert layer_prior([0.1, 0.2, 0.3], 0.0) is None
    prior = layer_prior([0.1, 0.2, 0.3], 1.0)
    assert prior == pytest.approx([0.5, 1.0, 1.5])
    assert robust_z_below_median([1.0, 1.0, 1.0, 0.0])[3] > 3


def test_unreachable_target_names_the_maximum():
    with pytest.raises(RatioError, match="at most"):
        run(target_removed=10**9)


@pytest.mark.parametrize("layout", ["global", "uniform"])
def test_head_unit_none_keeps_attention_whole_and_still_meets_the_target(layout):
    plan, _ = run(target_removed=20_000, layout=layout, head_unit="none", tau=100.0)
    assert all(len(lp.kept_heads) == 9 and len(lp.kept_kv_heads) == 3 for lp in plan.layers)
    assert plan.planned_removed >= 20_000
    if layout == "uniform":
        assert len({len(lp.kept_channels) for lp in plan.layers}) == 1


def channel_budgets(**options):
    """Budgets from four blocks' channel cost curves, block i's costs (i + 1) times block 0's."""
    from zhprune_hub.prune.allocation import allocate_by_cost

    channel_curves = [list(torch.arange(1, 58).cumsum(0).double().mul(i + 1).tolist()) for i in range(4)]
    budgets, _ = allocate_by_cost(
        [[] for _ in range(4)],
        channel_curves,
        [SHAPE] * 4,
        [COSTS] * 4,
        target_removed=40 * COSTS.channel,
        layout="global",
        head_unit="none",
        hidden_size=48,
        heads_must_divide_hidden=False,
        tau=100.0,
        **options,
    )
    return budgets


def test_cost_curves_without_heads_give_channel_only_budgets():
    budgets = channel_budgets()
    assert all(b.head_units == 0 for b in budgets)
    assert sum(b.channels for b in budgets) == 40
    # Block 0's removals cost least, so it gives the most channels.
    assert budgets[0].channels == max(b.channels for b in budgets)


@pytest.mark.parametrize("layout", ["global", "uniform"])
@pytest.mark.parametrize("head_unit", ["group", "none"])
def test_round_to_keeps_every_mlp_width_a_multiple(layout, head_unit):
    plan, _ = run(target_removed=30_000, layout=layout, head_unit=head_unit, tau=100.0, round_to=16)
    assert all(len(lp.kept_channels) % 16 == 0 and lp.kept_channels for lp in plan.layers)
    assert plan.planned_removed >= 30_000
    unrounded, _ = run(target_removed=30_000, layout=layout, head_unit=head_unit, tau=100.0)
    assert any(len(lp.kept_channels) % 16 for lp in unrounded.layers)  # the rounding had work to do
    # A chunk is the next 16 channels in score order: the lowest-scored channels still go first.
    layer_scores = scores(6)
    for lp, s in zip(plan.layers, layer_scores, strict=True):
        gone = sorted(set(range(64)) - set(lp.kept_channels))
        kept_min = s.channels[lp.kept_channels].min()
        assert not gone or s.channels[gone].max() <= kept_min


def test_round_to_random_floor_keeps_the_multiple():
    import numpy as np

    plan, _ = run(target_removed=30_000, tau=100.0, round_to=8, random_order=np.random.default_rng(0))
    assert all(len(lp.kept_channels) % 8 == 0 for lp in plan.layers) and plan.planned_removed >= 30_000


def test_round_to_budgets_from_cost_curves_are_multiples():
    budgets = channel_budgets(round_to=16)
    assert all(b.channels % 16 == 0 and 64 - b.channels >= 16 for b in budgets)
    assert sum(b.channels for b in budgets) >= 40
    assert budgets[0].channels == max(b.channels for b in budgets)


def test_round_to_refuses_a_width_it_cannot_divide():
    from zhprune_hub.prune.allocation import check_round_to

    check_round_to([64, 64], 32)
    with pytest.raises(RatioError, match=r"--round-to 48 needs every MLP width to be a multiple of 48.*64 channels"):
        check_round_to([64], 48)
    with pytest.raises(RatioError, match="at least two chunks"):
        check_round_to([64], 64)
