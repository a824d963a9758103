"""The pruning methods and the per-block unit scores of the ranking ones.

Methods (the model card reuses these descriptions):
- obs: compensated removal. A unit's cost is the output error left after its block's kept weights
  are re-fitted in closed form (the Optimal Brain Surgeon cost from XᵀX of the projection's inputs),
  weighted per hidden dimension by the loss's squared gradient there (diagonal Fisher), so costs of
  different blocks are comparable; blocks are cut and repaired one after another on the pruned
  model's own inputs.
- taylor: first-order Taylor |W ⊙ ∂L/∂W| summed over a unit's weights and biases, gradients
  accumulated over all calibration windows block by block (never the whole model's at once).
- activation: forward-only; the norm of a unit's output-projection columns times the RMS of the
  activations feeding them (Wanda/FLAP style).
- magnitude: squared L2 norm of a unit's weights; needs no data.
- random: seeded uniform draws per parameter, so every kind of unit goes in proportion: the floor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from zhprune_hub.prune.families import FamilySpec
from zhprune_hub.prune.structure import attention_of, mlp_of


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    reference: str
    needs_data: bool
    needs_gradients: bool
    #: Chooses units by compensated cost inside each block at cut time (vs. a fixed ranking).
    compensated: bool = False


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "obs",
            "Compensated removal: per-unit output error after a closed-form update of the kept weights "
            "(OBS, from XᵀX), weighted by the loss's diagonal Fisher, block by block on pruned inputs.",
            "https://arxiv.org/abs/2208.11580",
            needs_data=True,
            needs_gradients=True,
            compensated=True,
        ),
        Method(
            "taylor",
            "First-order Taylor importance |W·∂L/∂W| per group, gradients accumulated over calibration windows.",
            "https://arxiv.org/abs/2305.11627",
            needs_data=True,
            needs_gradients=True,
        ),
        Method(
            "activation",
            "Forward-only: output-projection column norms times input activation RMS (Wanda/FLAP style).",
            "https://arxiv.org/abs/2312.11983",
            needs_data=True,
            needs_gradients=False,
        ),
        Method(
            "magnitude",
            "Squared L2 norm of each group's weights; uses no data.",
            "https://arxiv.org/abs/1608.08710",
            needs_data=False,
            needs_gradients=False,
        ),
        Method(
            "random",
            "Seeded random selection, every unit equally likely per parameter: the floor other methods must beat.",
            "https://arxiv.org/abs/2301.00774",
            needs_data=False,
            needs_gradients=False,
        ),
    )
}


@dataclass
class LayerScores:
    """Scores of one block's units (higher = more important) in the base model's indexing.

    `kv_heads` is what a KV head adds on top of the query heads it serves (zero when a method can
    only see the query heads), so a whole KV group scores sum(heads of the group) + kv_head once.
    """

    heads: torch.Tensor
    kv_heads: torch.Tensor
    channels: torch.Tensor


def _linears(layer: nn.Module, spec: FamilySpec) -> dict[str, nn.Linear]:
    attention, mlp = attention_of(layer, spec), mlp_of(layer, spec)
    found = {name: getattr(attention, name) for name in (spec.q_proj, spec.k_proj, spec.v_proj, spec.o_proj)}
    found.update({name: getattr(mlp, name) for name in (spec.gate_proj, spec.up_proj, spec.down_proj)})
    return found


def prunable_parameters(layer: nn.Module, spec: FamilySpec) -> list[nn.Parameter]:
    return [p for linear in _linears(layer, spec).values() for p in linear.parameters()]


def _reduce(element_scores: torch.Tensor, *, dim_kept: int, unit: int) -> torch.Tensor:
    """Sum element scores into units of `unit` consecutive rows (dim_kept=0) or columns (1)."""
    per_index = element_scores.sum(dim=1 - dim_kept) if element_scores.dim() == 2 else element_scores
    return per_index.reshape(-1, unit).sum(dim=1)


def weighted_scores(
    layer: nn.Module, spec: FamilySpec, head_dim: int, element: Callable[[nn.Parameter], torch.Tensor]
) -> LayerScores:
    """Aggregate a per-element saliency over each unit's rows/columns (and row biases)."""
    lin = _linears(layer, spec)

    def rows(name: str, unit: int) -> torch.Tensor:
        linear = lin[name]
        score = _reduce(element(linear.weight), dim_kept=0, unit=unit)
        if linear.bias is not None:
            score = score + _reduce(element(linear.bias), dim_kept=0, unit=unit)
        return score

    def cols(name: str, unit: int) -> torch.Tensor:
        return _reduce(element(lin[name].weight), dim_kept=1, unit=unit)

    heads = rows(spec.q_proj, head_dim) + cols(spec.o_proj, head_dim)
    kv_heads = rows(spec.k_proj, head_dim) + rows(spec.v_proj, head_dim)
    channels = rows(spec.gate_proj, 1) + rows(spec.up_proj, 1) + cols(spec.down_proj, 1)
    return LayerScores(heads=heads.float().cpu(), kv_heads=kv_heads.float().cpu(), channels=channels.float().cpu())


def magnitude_scores(layer: nn.Module, spec: FamilySpec, head_dim: int) -> LayerScores:
    return weighted_scores(layer, spec, head_dim, lambda p: p.detach().float().pow(2))


def taylor_scores(layer: nn.Module, spec: FamilySpec, head_dim: int, gradients: dict[int, torch.Tensor]) -> LayerScores:
    """|W ⊙ G| per unit, G the gradient summed over calibration windows (keyed by id(parameter))."""

    def saliency(p: nn.Parameter) -> torch.Tensor:
        gradient = gradients.get(id(p))
        if gradient is None:
            return torch.zeros(p.shape, dtype=torch.float32)
        return (p.detach().float() * gradient.float()).abs()

    return weighted_scores(layer, spec, head_dim, saliency)


def activation_scores(
    layer: nn.Module, spec: FamilySpec, head_dim: int, o_sq: torch.Tensor, down_sq: torch.Tensor, tokens: int
) -> LayerScores:
    """Output-column norms times input RMS; a KV head adds nothing beyond its query heads (scored once)."""
    o = getattr(attention_of(layer, spec), spec.o_proj).weight.detach().float()
    down = getattr(mlp_of(layer, spec), spec.down_proj).weight.detach().float()
    o_rms = (o_sq.float().to(o.device) / max(tokens, 1)).sqrt()
    down_rms = (down_sq.float().to(down.device) / max(tokens, 1)).sqrt()
    heads = (o.norm(dim=0) * o_rms).reshape(-1, head_dim).sum(dim=1)
    channels = down.norm(dim=0) * down_rms
    kv_count = getattr(attention_of(layer, spec), spec.k_proj).weight.shape[0] // head_dim
    return LayerScores(heads=heads.cpu(), kv_heads=torch.zeros(kv_count), channels=channels.cpu())


def random_scores(num_heads: int, num_kv_heads: int, channels: int, generator: torch.Generator) -> LayerScores:
    """Uniform draws: the order inside a block. Allocation draws the cross-block order itself
    (one uniform priority per unit, whatever its size), so heads and channels go in proportion."""
    return LayerScores(
        heads=torch.rand(num_heads, generator=generator),
        kv_heads=torch.rand(num_kv_heads, generator=generator),
        channels=torch.rand(channels, generator=generator),
    )
