"""Contract: every family spec names modules that exist in a real (tiny) model of that family."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM

from tests.tiny_models import tiny_config
from zhprune_hub.errors import UnsupportedArchitectureError
from zhprune_hub.prune.families import FAMILIES, family_for

ROW_SPLIT, COLUMN_SPLIT = "colwise", "rowwise"


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_spec_matches_named_modules_and_tp_plan(model_type):
    spec = family_for(model_type)
    config = tiny_config(model_type, layers=2)
    model = AutoModelForCausalLM.from_config(config)
    names = {name for name, _ in model.named_modules()}
    block = f"{spec.layers_path}.0"
    for projection in (*spec.head_projections, spec.o_proj):
        assert f"{block}.{spec.attention}.{projection}" in names
    for projection in (*spec.channel_projections, spec.down_proj):
        assert f"{block}.{spec.mlp}.{projection}" in names
    for module in spec.per_head_modules:
        assert f"{block}.{spec.attention}.{module}" in names
    # transformers records which dimension each projection splits on under tensor parallelism:
    # the rows we slice are "colwise" there, the columns "rowwise".
    plan = type(config).base_model_tp_plan
    for projection in spec.head_projections:
        assert plan[f"layers.*.{spec.attention}.{projection}"].startswith(ROW_SPLIT)
    for projection in spec.channel_projections:
        assert plan[f"layers.*.{spec.mlp}.{projection}"].startswith(ROW_SPLIT)
    assert plan[f"layers.*.{spec.attention}.{spec.o_proj}"].startswith(COLUMN_SPLIT)
    assert plan[f"layers.*.{spec.mlp}.{spec.down_proj}"].startswith(COLUMN_SPLIT)
    assert type(model).__name__ == spec.causal_lm_class


def test_our_global_model_types_map_back_to_their_family():
    assert family_for("zhprune_qwen2") is FAMILIES["qwen2"]


def test_unknown_architecture_lists_the_supported_ones():
    with pytest.raises(UnsupportedArchitectureError) as info:
        family_for("gpt_neox")
    message = str(info.value)
    assert "'gpt_neox'" in message and "llama, mistral, qwen2, qwen3" in message
