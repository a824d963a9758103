"""Tensor surgery: slice weights and biases in place according to a PruningPlan.

Rows of q/k/v (and their biases) go with their heads, columns of o_proj with the query heads;
rows of gate/up (and biases) and columns of down_proj with the channels. An output
projection's bias (o_proj, down_proj) keeps its size: it adds to the residual stream, whose
width never changes. Every bias is found on the module itself, never assumed per family.
"""

from __future__ import annotations

import torch
from torch import nn

from zhprune_hub.prune.families import FamilySpec
from zhprune_hub.prune.plan import LayerPlan, PruningPlan
from zhprune_hub.prune.structure import attention_of, decoder_layers, mlp_of


def head_rows(heads: list[int], head_dim: int, device: torch.device) -> torch.Tensor:
    """Row (or column) indices covering whole heads of head_dim each."""
    index = torch.tensor(heads, dtype=torch.long, device=device)
    offsets = torch.arange(head_dim, device=device)
    return (index[:, None] * head_dim + offsets[None, :]).reshape(-1)


def slice_linear(linear: nn.Linear, *, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    """A new Linear keeping the given output rows and/or input columns; the bias follows the rows."""
    weight = linear.weight.detach()
    if rows is not None:
        weight = weight.index_select(0, rows)
    if cols is not None:
        weight = weight.index_select(1, cols)
    has_bias = linear.bias is not None
    sliced = nn.Linear(weight.shape[1], weight.shape[0], bias=has_bias, device="meta")
    sliced.weight = nn.Parameter(weight.contiguous(), requires_grad=linear.weight.requires_grad)
    if has_bias:
        bias = linear.bias.detach()
        bias = bias.index_select(0, rows) if rows is not None else bias.clone()
        sliced.bias = nn.Parameter(bias.contiguous(), requires_grad=linear.bias.requires_grad)
    return sliced


def prune_layer(layer: nn.Module, layer_plan: LayerPlan, spec: FamilySpec, head_dim: int) -> None:
    """Slice one decoder block in place."""
    attention = attention_of(layer, spec)
    device = getattr(attention, spec.q_proj).weight.device
    q_rows = head_rows(layer_plan.kept_heads, head_dim, device)
    kv_rows = head_rows(layer_plan.kept_kv_heads, head_dim, device)
    setattr(attention, spec.q_proj, slice_linear(getattr(attention, spec.q_proj), rows=q_rows))
    setattr(attention, spec.k_proj, slice_linear(getattr(attention, spec.k_proj), rows=kv_rows))
    setattr(attention, spec.v_proj, slice_linear(getattr(attention, spec.v_proj), rows=kv_rows))
    setattr(attention, spec.o_proj, slice_linear(getattr(attention, spec.o_proj), cols=q_rows))
    # repeat_kv in the attention kernels reads this; heads per KV group may have changed.
    attention.num_key_value_groups = layer_plan.num_heads // layer_plan.num_kv_heads

    mlp = mlp_of(layer, spec)
    channels = torch.tensor(layer_plan.kept_channels, dtype=torch.long, device=device)
    for name in spec.channel_projections:
        setattr(mlp, name, slice_linear(getattr(mlp, name), rows=channels))
    setattr(mlp, spec.down_proj, slice_linear(getattr(mlp, spec.down_proj), cols=channels))
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = layer_plan.intermediate_size


def apply_plan(model: nn.Module, plan: PruningPlan, spec: FamilySpec) -> None:
    """Prune the model in place: slice kept blocks, drop removed ones, renumber cache indices."""
    layers = decoder_layers(model, spec)
    kept: list[nn.Module] = []
    for layer, layer_plan in zip(layers, plan.layers, strict=True):
        if layer_plan.removed:
            continue
        prune_layer(layer, layer_plan, spec, plan.head_dim)
        kept.append(layer)
    for new_index, layer in enumerate(kept):
        # The KV cache is indexed by layer_idx; removed blocks leave no gaps.
        attention_of(layer, spec).layer_idx = new_index
    parent_path, _, attribute = spec.layers_path.rpartition(".")
    setattr(model.get_submodule(parent_path), attribute, nn.ModuleList(kept))
    for key in spec.per_layer_config_lists:
        values = getattr(model.config, key, None)
        if values is not None:
            setattr(model.config, key, [values[lp.index] for lp in plan.kept_layers])
    model.config.num_hidden_layers = len(kept)
