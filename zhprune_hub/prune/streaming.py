"""Weights on demand: a model skeleton on the meta device whose modules are filled one at a time.

The pruning traversal needs one decoder block resident at a time. The skeleton is built from the
config with accelerate's `init_empty_weights` (no memory), and a module's tensors are read from
the checkpoint's safetensors files (memory-mapped, so only what is read is paged in) or from an
in-memory state dict (GGUF input, which transformers must dequantise whole), moved to the compute
device in the compute dtype, and sent back to the meta device when the block is done.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from zhprune_hub.errors import ModelSourceError


class TensorSource(Protocol):
    """Where a checkpoint's tensors come from, by state-dict name."""

    def names(self) -> set[str]: ...

    def get(self, name: str) -> torch.Tensor: ...


class SafetensorsSource:
    """Tensors of a saved checkpoint (single file or sharded with an index), read lazily."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        index = self.directory / "model.safetensors.index.json"
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            self._file_of = {name: self.directory / file for name, file in weight_map.items()}
        else:
            from safetensors import safe_open

            self._file_of = {}
            for file in sorted(self.directory.glob("*.safetensors")):
                with safe_open(str(file), framework="pt") as handle:
                    self._file_of.update(dict.fromkeys(handle.keys(), file))
        if not self._file_of:
            raise ModelSourceError(f"{self.directory} holds no safetensors weights.")

    @staticmethod
    def available(directory: Path) -> bool:
        directory = Path(directory)
        return (directory / "model.safetensors.index.json").exists() or any(directory.glob("*.safetensors"))

    def names(self) -> set[str]:
        return set(self._file_of)

    def get(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(self._file_of[name]), framework="pt") as handle:
            return handle.get_tensor(name)

    def dtype(self) -> torch.dtype:
        """The dtype most of the checkpoint's floating-point tensors are stored in."""
        from safetensors import safe_open

        counts: dict[str, int] = {}
        for file in sorted(set(self._file_of.values())):
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118
                    dtype = handle.get_slice(name).get_dtype()
                    counts[dtype] = counts.get(dtype, 0) + 1
        names = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
        floating = {k: v for k, v in counts.items() if k in names}
        return names[max(floating, key=floating.get)] if floating else torch.float32


class StateDictSource:
    """Tensors held in memory (a model transformers had to load whole, e.g. from GGUF)."""

    def __init__(self, state: dict[str, torch.Tensor]):
        self._state = state

    def names(self) -> set[str]:
        return set(self._state)

    def get(self, name: str) -> torch.Tensor:
        return self._state[name]


def empty_model(config: Any, *, trust_remote_code: bool) -> nn.Module:
    """The model's module tree with every parameter on the meta device (buffers such as RoPE stay real)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    model.tie_weights()  # tied heads are one parameter, counted once (from_config leaves them apart)
    model.eval()
    return model


class Streamer:
    """Fills and empties modules of a meta-device skeleton from a TensorSource."""

    def __init__(self, model: nn.Module, source: TensorSource, *, device: torch.device, dtype: torch.dtype):
        self.model = model
        self.source = source
        self.device = device
        self.dtype = dtype
        names = source.names()
        self._aliases: dict[str, str] = {}
        tied = getattr(model.config, "tie_word_embeddings", False)
        for name, _ in model.named_parameters(remove_duplicate=False):
            if name in names:
                continue
            if tied and name.endswith("lm_head.weight") and "model.embed_tokens.weight" in names:
                self._aliases[name] = "model.embed_tokens.weight"
                continue
            raise ModelSourceError(
                f"The checkpoint has no tensor {name!r} that its config's architecture needs; "
                "it may use a layout zhprune-hub does not stream (re-save it with transformers first)."
            )

    def tensor(self, name: str) -> torch.Tensor:
        return self.source.get(self._aliases.get(name, name))

    def load(self, module: nn.Module, prefix: str) -> None:
        """Materialise `module` (state-dict name `prefix`) on the compute device in the compute dtype."""
        from accelerate.utils import set_module_tensor_to_device

        for name, param in list(module.named_parameters(recurse=True)):
            full = f"{prefix}.{name}" if prefix else name
            value = self.tensor(full)
            dtype = self.dtype if value.is_floating_point() else None
            set_module_tensor_to_device(module, name, self.device, value=value, dtype=dtype)
            module.get_parameter(name).requires_grad_(False)
            del param

    @staticmethod
    def release(module: nn.Module) -> None:
        """Send every parameter of `module` back to the meta device, freeing its memory."""
        from accelerate.utils import set_module_tensor_to_device

        for name, _ in list(module.named_parameters(recurse=True)):
            set_module_tensor_to_device(module, name, "meta")

    @contextmanager
    def resident(self, module: nn.Module, prefix: str) -> Iterator[nn.Module]:
        """`module` materialised for the duration of the block, released afterwards."""
        self.load(module, prefix)
        try:
            yield module
        finally:
            self.release(module)
