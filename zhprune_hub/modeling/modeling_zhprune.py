"""Modeling code shipped inside zhprune-hub `global`-layout checkpoints (loaded with trust_remote_code).

A `global` checkpoint keeps the base family's blocks but gives each block its own widths
(query heads, KV heads, MLP channels), listed in `config.zhprune_layers`. The classes below
are the stock transformers classes with one change: each block is built from a view of the
config that carries that block's widths. Nothing else differs, so kernels, caches and
generation behave exactly as in the base family.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn
from transformers import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

_WIDTH_KEYS = ("num_attention_heads", "num_key_value_heads", "intermediate_size")


class _BlockConfig:
    """Read-through view of the model config with one block's widths; everything else is shared."""

    def __init__(self, parent: Any, widths: dict[str, int]):
        object.__setattr__(self, "_parent", parent)
        object.__setattr__(self, "_widths", dict(widths))

    def __getattr__(self, name: str) -> Any:
        widths = object.__getattribute__(self, "_widths")
        if name in widths:
            return widths[name]
        return getattr(object.__getattribute__(self, "_parent"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(object.__getattribute__(self, "_parent"), name, value)


def _no_architecture_check(self: Any) -> None:
    """Per-block widths make the stock hidden_size % heads rule meaningless (head_dim is explicit)."""


def _block_widths(config: Any) -> list[dict[str, int]]:
    layers = list(getattr(config, "zhprune_layers", None) or [])
    if len(layers) != config.num_hidden_layers:
        raise ValueError(
            f"config.zhprune_layers lists {len(layers)} blocks but num_hidden_layers is {config.num_hidden_layers}."
        )
    return [{key: int(layer[key]) for key in _WIDTH_KEYS} for layer in layers]


def _rebuild_blocks(model: Any, decoder_layer_path: str) -> None:
    """Replace the uniformly sized blocks built by the stock __init__ with per-block sized ones."""
    module_name, _, class_name = decoder_layer_path.rpartition(".")
    layer_class = getattr(importlib.import_module(module_name), class_name)
    config = model.config
    blocks = [layer_class(_BlockConfig(config, widths), index) for index, widths in enumerate(_block_widths(config))]
    model.model.layers = nn.ModuleList(blocks)


class ZhpruneLlamaConfig(LlamaConfig):
    model_type = "zhprune_llama"
    zhprune_layers: list | None = None
    validate_architecture = _no_architecture_check


class ZhpruneMistralConfig(MistralConfig):
    model_type = "zhprune_mistral"
    zhprune_layers: list | None = None
    validate_architecture = _no_architecture_check


class ZhpruneQwen2Config(Qwen2Config):
    model_type = "zhprune_qwen2"
    zhprune_layers: list | None = None
    validate_architecture = _no_architecture_check


class ZhpruneQwen3Config(Qwen3Config):
    model_type = "zhprune_qwen3"
    zhprune_layers: list | None = None
    validate_architecture = _no_architecture_check


def _causal_lm(base_path: str, config_class: type, layer_path: str) -> type:
    module_name, _, class_name = base_path.rpartition(".")
    base = getattr(importlib.import_module(module_name), class_name)

    def __init__(self: Any, config: Any) -> None:
        base.__init__(self, config)
        _rebuild_blocks(self, layer_path)
        self.post_init()

    return type(f"Zhprune{class_name}", (base,), {"config_class": config_class, "__init__": __init__})


ZhpruneLlamaForCausalLM = _causal_lm(
    "transformers.models.llama.modeling_llama.LlamaForCausalLM",
    ZhpruneLlamaConfig,
    "transformers.models.llama.modeling_llama.LlamaDecoderLayer",
)
ZhpruneMistralForCausalLM = _causal_lm(
    "transformers.models.mistral.modeling_mistral.MistralForCausalLM",
    ZhpruneMistralConfig,
    "transformers.models.mistral.modeling_mistral.MistralDecoderLayer",
)
ZhpruneQwen2ForCausalLM = _causal_lm(
    "transformers.models.qwen2.modeling_qwen2.Qwen2ForCausalLM",
    ZhpruneQwen2Config,
    "transformers.models.qwen2.modeling_qwen2.Qwen2DecoderLayer",
)
ZhpruneQwen3ForCausalLM = _causal_lm(
    "transformers.models.qwen3.modeling_qwen3.Qwen3ForCausalLM",
    ZhpruneQwen3Config,
    "transformers.models.qwen3.modeling_qwen3.Qwen3DecoderLayer",
)
