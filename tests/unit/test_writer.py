"""The checkpoint writer streams each shard tensor by tensor; what it writes must read back exactly."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from zhprune_hub.prune.writer import SPOOL_DIR, CheckpointWriter


def _tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "model.layers.0.mlp.down_proj.weight": torch.randn(64, 48, generator=generator),
        "model.layers.0.self_attn.q_proj.bias": torch.randn(48, generator=generator),
        "model.layers.1.mlp.down_proj.weight": torch.randn(64, 40, generator=generator),
        "model.rotary.inv_freq": torch.arange(8, dtype=torch.int64),
        "model.mask": torch.tensor([[True, False], [False, True]]),
        "model.scale": torch.tensor(0.5),
        "model.empty": torch.zeros(0, 4),
    }


def _read_back(directory: Path) -> dict[str, torch.Tensor]:
    read: dict[str, torch.Tensor] = {}
    for file in sorted(directory.glob("*.safetensors")):
        read.update(load_file(file))
    return read


def test_a_single_file_reads_back_in_the_checkpoint_dtype(tmp_path: Path) -> None:
    tensors = _tensors()
    writer = CheckpointWriter(tmp_path, dtype=torch.bfloat16)
    writer.add(dict(list(tensors.items())[:2]))
    writer.add(dict(list(tensors.items())[2:]))
    assert writer.finish() == ["model.safetensors"]
    read = _read_back(tmp_path)
    assert set(read) == set(tensors)
    for name, tensor in tensors.items():
        expected = tensor.to(torch.bfloat16) if tensor.is_floating_point() else tensor
        assert read[name].dtype == expected.dtype, name
        assert torch.equal(read[name], expected), name
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}
    assert not (tmp_path / SPOOL_DIR).exists()


def test_shards_and_their_index_follow_the_size_limit(tmp_path: Path) -> None:
    tensors = _tensors()
    writer = CheckpointWriter(tmp_path, dtype=torch.float32, max_shard_size=13_000)
    for name, tensor in tensors.items():
        writer.add({name: tensor})
    files = writer.finish()
    assert len(files) > 1
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(tensors)
    assert set(index["weight_map"].values()) == set(files)
    for file in files:
        assert (tmp_path / file).stat().st_size <= 13_000 + 1024  # data within the limit, plus its header
    read = _read_back(tmp_path)
    for name, tensor in tensors.items():
        assert torch.equal(read[name], tensor), name
        with safe_open(str(tmp_path / index["weight_map"][name]), framework="pt") as handle:
            assert name in handle.keys()  # noqa: SIM118
