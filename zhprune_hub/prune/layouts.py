"""Checkpoint layouts: how a pruned model's widths are written into config.json.

`uniform`: every block has the same widths, so the family's stock config expresses it and the
checkpoint loads anywhere (transformers, vLLM, llama.cpp conversion).
`global`: per-block widths in `zhprune_layers`, a `zhprune_<family>` model type, and the
modeling code of zhprune_hub/modeling shipped beside the weights and wired through `auto_map`.
When a global plan happens to give every block the same widths, the stock config is written.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

from zhprune_hub.prune.families import FamilySpec
from zhprune_hub.prune.plan import PruningPlan

MODELING_FILE = Path(__file__).resolve().parents[1] / "modeling" / "modeling_zhprune.py"


def written_layout(plan: PruningPlan, requested: str) -> str:
    """The layout actually written: uniform whenever the widths allow the stock config."""
    return "uniform" if plan.is_uniform() else requested


def _set_uniform_widths(config: Any, plan: PruningPlan) -> None:
    first = plan.kept_layers[0]
    config.num_attention_heads = first.num_heads
    config.num_key_value_heads = first.num_kv_heads
    config.intermediate_size = first.intermediate_size
    # Stock code derives head_dim from hidden_size / heads when absent; after pruning that is wrong.
    config.head_dim = plan.head_dim


def global_config(config_dict: dict[str, Any], plan: PruningPlan, spec: FamilySpec) -> dict[str, Any]:
    """Rewrite a saved stock config.json into the `global` layout."""
    kept = plan.kept_layers
    suffix = spec.causal_lm_class
    result = dict(config_dict)
    result.update(
        model_type=f"zhprune_{spec.model_type}",
        architectures=[f"Zhprune{suffix}"],
        auto_map={
            "AutoConfig": f"modeling_zhprune.Zhprune{spec.config_class}",
            "AutoModelForCausalLM": f"modeling_zhprune.Zhprune{suffix}",
        },
        zhprune_layers=[
            {
                "num_attention_heads": lp.num_heads,
                "num_key_value_heads": lp.num_kv_heads,
                "intermediate_size": lp.intermediate_size,
            }
            for lp in kept
        ],
        # Top-level widths are the largest per-block ones, for tools that only read these keys.
        num_attention_heads=max(lp.num_heads for lp in kept),
        num_key_value_heads=max(lp.num_kv_heads for lp in kept),
        intermediate_size=max(lp.intermediate_size for lp in kept),
        head_dim=plan.head_dim,
    )
    return result


def pruned_config(config: Any, plan: PruningPlan, spec: FamilySpec, layout: str, dtype: Any) -> Any:
    """A copy of the base config describing the pruned model (blocks, widths, per-block lists, dtype)."""
    config = copy.deepcopy(config)
    kept = plan.kept_layers
    for key in spec.per_layer_config_lists:
        values = getattr(config, key, None)
        if values is not None:
            setattr(config, key, [values[lp.index] for lp in kept])
    config.num_hidden_layers = len(kept)
    config.dtype = dtype
    if layout == "uniform":
        _set_uniform_widths(config, plan)
    else:
        config.head_dim = plan.head_dim
    return config


def write_config(
    config: Any, tokenizer: Any, plan: PruningPlan, spec: FamilySpec, layout: str, directory: Path, *, dtype: Any
) -> str:
    """Write config.json (stock or `global`), the tokenizer and, for `global`, the modeling code; return the layout."""
    layout = written_layout(plan, layout)
    pruned_config(config, plan, spec, layout, dtype).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    if layout == "global":
        config_path = directory / "config.json"
        config_path.write_text(
            json.dumps(global_config(json.loads(config_path.read_text()), plan, spec), indent=2) + "\n"
        )
        shutil.copyfile(MODELING_FILE, directory / MODELING_FILE.name)
    return layout
