"""Write a checkpoint one block at a time, then lay it out as transformers does.

Blocks are pruned one after another and never held together, so their tensors are spooled to
small safetensors files as they come; `finish` plans the final shards with huggingface_hub's
own splitter (`model.safetensors`, or `model-0000k-of-0000n.safetensors` plus the index) and
writes each shard tensor by tensor, so memory never holds more than one tensor.

safetensors itself can only serialise a whole dict of tensors (and copies it once more while it
does), which at the end of a 7B run would hold a full shard twice; its maintainers keep it that way
on purpose (safetensors#291). Every name, dtype and shape is known before the first byte here, so
the header is written first and the tensors are streamed after it, in the file format that
safetensors documents and reads back (`safe_open` checks the header against the data).
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path

import torch

SPOOL_DIR = ".zhprune-spool"

#: The safetensors names of the dtypes a checkpoint holds.
_DTYPE_NAMES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


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

        split = split_torch_state_dict_into_shards(self._meta, max_shard_size=self.max_shard_size)
        for filename, names in split.filename_to_tensors.items():
            self._write_shard(self.directory / filename, names)
        if split.is_sharded:
            index = {"metadata": dict(split.metadata), "weight_map": dict(split.tensor_to_filename)}
            (self.directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        shutil.rmtree(self._spool)
        return list(split.filename_to_tensors)

    def _write_shard(self, path: Path, names: list[str]) -> None:
        """One safetensors file: the header from the recorded shapes, then each tensor's bytes in turn."""
        from safetensors import safe_open

        assert sys.byteorder == "little", "safetensors stores little-endian data"
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name in names:
            meta = self._meta[name]
            size = meta.numel() * meta.element_size()
            header[name] = {
                "dtype": _DTYPE_NAMES[meta.dtype],
                "shape": list(meta.shape),
                "data_offsets": [offset, offset + size],
            }
            offset += size
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it
        with path.open("wb") as out:
            out.write(struct.pack("<Q", len(encoded)))
            out.write(encoded)
            for name in names:
                with safe_open(str(self._file_of[name]), framework="pt") as handle:
                    tensor = handle.get_tensor(name)
                out.write(tensor.reshape(-1).view(torch.uint8).numpy().data)
                del tensor
