"""The free-space estimate of `prune`'s preflight against what the streamed engine really writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zhprune_hub.loading import resolve_source
from zhprune_hub.preflight import expected_output_bytes, expected_staging_bytes, model_facts
from zhprune_hub.prune.spool import BACKWARD_MEMORY_BUDGET
from zhprune_hub.pruning import PruneConfig

SMOLLM2 = Path.home() / ".cache/zhprune-hub/models/smollm2-135m"
#: LLaMA-2-7B's shapes.
LLAMA_7B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "torch_dtype": "float16",
}


def _facts(tmp_path: Path, config: dict):
    (tmp_path / "config.json").write_text(json.dumps(config))
    return model_facts(resolve_source(str(tmp_path)))


def test_the_estimate_is_the_checkpoint_size_of_a_real_model() -> None:
    if not list(SMOLLM2.glob("*.safetensors")):
        pytest.skip(f"{SMOLLM2} is not converted on this machine")
    facts = model_facts(resolve_source(str(SMOLLM2)))
    on_disk = sum(p.stat().st_size for p in SMOLLM2.glob("*.safetensors"))
    estimate = expected_output_bytes(facts, ratio=0.0, dtype="float32")
    assert abs(estimate - on_disk) / on_disk < 0.01, (estimate, on_disk)


def test_staging_holds_the_checkpoint_twice(tmp_path: Path) -> None:
    """The writer's spool and the final shards coexist until the spool is removed."""
    facts = _facts(tmp_path, LLAMA_7B)
    config = PruneConfig(model=str(tmp_path), output=tmp_path / "out", ratio=0.2, method="magnitude")
    checkpoint = expected_output_bytes(facts, ratio=0.2, dtype="float16")
    assert 10e9 < checkpoint < 11e9  # 6.74 B parameters x 0.8 x 2 bytes
    assert expected_staging_bytes(facts, config, dtype="float16") == 2 * checkpoint


def test_spooled_calibration_states_count_when_they_are_larger(tmp_path: Path) -> None:
    """A gradient method keeps every block's states on disk once they exceed the memory budget."""
    facts = _facts(tmp_path, LLAMA_7B)
    many = PruneConfig(model=str(tmp_path), output=tmp_path / "out", method="obs", num_samples=4096, seq_len=2048)
    states = 4096 * 2048 * 4096 * 4 * 32  # float32 states of every block
    assert states > BACKWARD_MEMORY_BUDGET
    assert expected_staging_bytes(facts, many, dtype="float16") == states
    checkpoint = expected_output_bytes(facts, ratio=many.ratio, dtype="float16")
    one_set = 4096 * 2048 * 4096 * 4
    # No backward walk, so no per-block spool; pass 2 keeps the dense stream and o_proj's inputs in
    # files beside the blocks written so far (the dense stream only with a stream correction).
    forward_only = many.model_copy(update={"method": "activation"})
    assert expected_staging_bytes(facts, forward_only, dtype="float16") == checkpoint + 2 * one_set
    uncorrected = forward_only.model_copy(update={"correction": 0.0})
    assert expected_staging_bytes(facts, uncorrected, dtype="float16") == checkpoint + one_set
    defaults = PruneConfig(model=str(tmp_path), output=tmp_path / "out")  # 512 x 128 windows
    assert expected_staging_bytes(facts, defaults, dtype="float16") == 512 * 128 * 4096 * 4 * 32 > 2 * checkpoint
