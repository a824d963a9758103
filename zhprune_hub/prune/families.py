"""Model families as typed data: which modules couple into prunable groups, which config keys change.

Each family is a small diff of LLAMA, with a one-line reason per difference. Biases are never
declared here: surgery looks at each module and slices whatever bias it finds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from zhprune_hub.errors import UnsupportedArchitectureError


@dataclass(frozen=True)
class FamilySpec:
    """How one decoder family is laid out, in the names its transformers implementation uses."""

    name: str
    model_type: str
    #: Path from the CausalLM to the ModuleList of decoder blocks.
    layers_path: str = "model.layers"
    #: The norm applied to the last block's output before the output head.
    final_norm: str = "model.norm"
    attention: str = "self_attn"
    mlp: str = "mlp"
    #: Pre-norm residual block: out = h + mlp(post_norm(h)), h = x + attention(input_norm(x)).
    input_norm: str = "input_layernorm"
    post_attention_norm: str = "post_attention_layernorm"
    #: Projections whose output rows belong to attention heads (query first, then key and value).
    q_proj: str = "q_proj"
    k_proj: str = "k_proj"
    v_proj: str = "v_proj"
    #: Projection whose input columns belong to attention heads.
    o_proj: str = "o_proj"
    #: MLP projections whose output rows are intermediate channels.
    gate_proj: str = "gate_proj"
    up_proj: str = "up_proj"
    #: MLP projection whose input columns are intermediate channels.
    down_proj: str = "down_proj"
    #: Modules that act per head on head_dim and therefore need no slicing when heads go.
    per_head_modules: tuple[str, ...] = ()
    #: Stock config validation demands hidden_size % num_attention_heads == 0 even with head_dim set.
    heads_must_divide_hidden: bool = False
    #: Config keys holding one entry per decoder block, cut when a block is removed.
    per_layer_config_lists: tuple[str, ...] = ()
    #: Class names in transformers, used to build per-layer modules in the `global` layout.
    config_class: str = "LlamaConfig"
    causal_lm_class: str = "LlamaForCausalLM"
    decoder_layer_class: str = "LlamaDecoderLayer"
    transformers_module: str = "transformers.models.llama.modeling_llama"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def head_projections(self) -> tuple[str, str, str]:
        return (self.q_proj, self.k_proj, self.v_proj)

    @property
    def channel_projections(self) -> tuple[str, str]:
        return (self.gate_proj, self.up_proj)


LLAMA = FamilySpec(
    name="llama",
    model_type="llama",
    # LlamaConfig.validate_architecture rejects hidden_size % heads != 0 (transformers 5.x).
    heads_must_divide_hidden=True,
)

MISTRAL = replace(
    LLAMA,
    name="mistral",
    model_type="mistral",
    # MistralConfig keeps head_dim explicit and has no divisibility validator.
    heads_must_divide_hidden=False,
    config_class="MistralConfig",
    causal_lm_class="MistralForCausalLM",
    decoder_layer_class="MistralDecoderLayer",
    transformers_module="transformers.models.mistral.modeling_mistral",
)

QWEN2 = replace(
    MISTRAL,
    name="qwen2",
    model_type="qwen2",
    # Qwen2 records full/sliding attention per block; a removed block drops its entry.
    per_layer_config_lists=("layer_types",),
    config_class="Qwen2Config",
    causal_lm_class="Qwen2ForCausalLM",
    decoder_layer_class="Qwen2DecoderLayer",
    transformers_module="transformers.models.qwen2.modeling_qwen2",
)

QWEN3 = replace(
    QWEN2,
    name="qwen3",
    model_type="qwen3",
    # Qwen3 normalises queries and keys per head over head_dim: removing heads leaves them intact.
    per_head_modules=("q_norm", "k_norm"),
    config_class="Qwen3Config",
    causal_lm_class="Qwen3ForCausalLM",
    decoder_layer_class="Qwen3DecoderLayer",
    transformers_module="transformers.models.qwen3.modeling_qwen3",
)

FAMILIES: dict[str, FamilySpec] = {spec.model_type: spec for spec in (LLAMA, MISTRAL, QWEN2, QWEN3)}

#: Model types of our own `global`-layout checkpoints, mapped back to the family they came from.
ZHPRUNE_MODEL_TYPES = {f"zhprune_{name}": name for name in FAMILIES}


def family_for(model_type: str) -> FamilySpec:
    """Exact lookup of a family by config.model_type (our `zhprune_*` types map to their base).

    Raises:
        UnsupportedArchitectureError: the model type has no spec; the message lists those that do.
    """
    base = ZHPRUNE_MODEL_TYPES.get(model_type, model_type)
    try:
        return FAMILIES[base]
    except KeyError:
        raise UnsupportedArchitectureError(model_type, list(FAMILIES)) from None
