"""Read a decoder's prunable structure off its modules: widths per layer and the cost of each unit.

Widths come from the weight shapes, not the config, so the same code reads stock models,
our `global` checkpoints and half-pruned models alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from zhprune_hub.prune.families import FamilySpec


@dataclass(frozen=True)
class LayerShape:
    """Widths of one decoder block."""

    num_heads: int
    num_kv_heads: int
    intermediate_size: int

    @property
    def group_size(self) -> int:
        """Query heads per KV head (GQA)."""
        return self.num_heads // self.num_kv_heads


@dataclass(frozen=True)
class UnitCosts:
    """Parameters removed with one query head, one KV head, one MLP channel, and one whole block."""

    q_head: int
    kv_head: int
    channel: int
    block: int


def get_submodule(root: nn.Module, path: str) -> Any:
    return root.get_submodule(path)


def decoder_layers(model: nn.Module, spec: FamilySpec) -> nn.ModuleList:
    return get_submodule(model, spec.layers_path)


def head_dim_of(model: nn.Module) -> int:
    config = model.config
    value = getattr(config, "head_dim", None)
    return int(value) if value else config.hidden_size // config.num_attention_heads


def attention_of(layer: nn.Module, spec: FamilySpec) -> nn.Module:
    return getattr(layer, spec.attention)


def mlp_of(layer: nn.Module, spec: FamilySpec) -> nn.Module:
    return getattr(layer, spec.mlp)


def layer_shape(layer: nn.Module, spec: FamilySpec, head_dim: int) -> LayerShape:
    attention = attention_of(layer, spec)
    q_rows = getattr(attention, spec.q_proj).weight.shape[0]
    k_rows = getattr(attention, spec.k_proj).weight.shape[0]
    channels = getattr(mlp_of(layer, spec), spec.gate_proj).weight.shape[0]
    return LayerShape(num_heads=q_rows // head_dim, num_kv_heads=k_rows // head_dim, intermediate_size=channels)


def layer_shapes(model: nn.Module, spec: FamilySpec) -> list[LayerShape]:
    head_dim = head_dim_of(model)
    return [layer_shape(layer, spec, head_dim) for layer in decoder_layers(model, spec)]


def _bias_size(linear: nn.Linear) -> int:
    return 0 if linear.bias is None else 1


def unit_costs(layer: nn.Module, spec: FamilySpec, head_dim: int) -> UnitCosts:
    """Exact parameter counts per unit for this block, biases included where the modules have them."""
    attention = attention_of(layer, spec)
    mlp = mlp_of(layer, spec)
    q, k, v = (getattr(attention, name) for name in spec.head_projections)
    hidden = q.weight.shape[1]
    q_head = head_dim * (hidden + _bias_size(q)) + hidden * head_dim
    kv_head = head_dim * (hidden + _bias_size(k)) + head_dim * (hidden + _bias_size(v))
    gate, up, down = (getattr(mlp, name) for name in (spec.gate_proj, spec.up_proj, spec.down_proj))
    channel = (hidden + _bias_size(gate)) + (hidden + _bias_size(up)) + down.weight.shape[0]
    block = sum(p.numel() for p in layer.parameters())
    return UnitCosts(q_head=q_head, kv_head=kv_head, channel=channel, block=block)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total (tied weights once) and non-embedding parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    embedding_ids = set()
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        if module is not None:
            embedding_ids.update(id(p) for p in module.parameters())
    embedding = sum(p.numel() for p in model.parameters() if id(p) in embedding_ids)
    return {"total": total, "non_embedding": total - embedding}
