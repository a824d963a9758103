"""Write a checkpoint one block at a time, then lay it out as transformers does.

Blocks are pruned one after another and never held together, so their tensors are spooled to
small safetensors files as they come; `finish` plans the final shards with huggingface_hub's
own splitter (`model.safetensors`, or `model-0000k-of-0000n.safetensors` plus the index) and
copies tensors into them shard by shard, so memory never holds more than one shard.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

SPOOL_DIR = ".zhprune-spool"


class CheckpointWriter:
    """Collects tensors by state-dict name and writes the final sharded safetensors files."""

    def __init__(self, directory: Path, *, dtype: torch.dtype, max_shard_size: str | int = "5GB"):
        self.directory = Path(directory)
        self.dtype = dtype
        self.max_shard_size = max_shard_size
        self._spool = self.directory / SPOOL_DIR
        self._spool.mkdir(parents=True, exist_ok=True)
        self._file_of: dict[str, Path] = {}
        self._meta: dict[str, torch.Tensor] = {}

    def add(self, tensors: dict[str, torch.Tensor]) -> None:
        """Spool `tensors` (cast to the checkpoint dtype where floating point) to disk now."""
        from safetensors.torch import save_file

        if not tensors:
            return
        ready = {name: self._stored(t) for name, t in tensors.items()}
        path = self._spool / f"part-{len(set(self._file_of.values())):05d}.safetensors"
        save_file(ready, str(path))
        for name, tensor in ready.items():
            self._file_of[name] = path
            self._meta[name] = torch.empty(tensor.shape, dtype=tensor.dtype, device="meta")

    def _stored(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach().to("cpu")
        if tensor.is_floating_point():
            tensor = tensor.to(self.dtype)
        return tensor.contiguous()

    @property
    def parameter_count(self) -> int:
        return sum(t.numel() for t in self._meta.values())

    def finish(self) -> list[str]:
        """Write the final shard files (and index when sharded); return their names."""
        from huggingface_hub import split_torch_state_dict_into_shards
        from safetensors import safe_open
        from safetensors.torch import save_file

        split = split_torch_state_dict_into_shards(self._meta, max_shard_size=self.max_shard_size)
        for filename, names in split.filename_to_tensors.items():
            shard = {}
            for name in names:
                with safe_open(str(self._file_of[name]), framework="pt") as handle:
                    shard[name] = handle.get_tensor(name)
            save_file(shard, str(self.directory / filename), metadata={"format": "pt"})
            del shard
        if split.is_sharded:
            index = {"metadata": dict(split.metadata), "weight_map": dict(split.tensor_to_filename)}
            (self.directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        shutil.rmtree(self._spool)
        return list(split.filename_to_tensors)
