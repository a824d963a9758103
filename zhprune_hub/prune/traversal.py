"""Block-by-block traversal of a decoder on calibration hidden states.

Only one decoder block is resident on the compute device at a time (see streaming.py). The
arguments the model's own forward gives each block (rotary position embeddings, attention mask,
position ids) are captured once per batch shape by replacing the blocks with recorders for one
call, so the traversal stays correct for whatever the family computes there (sliding-window
masks, per-layer attention types) without re-implementing it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from zhprune_hub.prune.families import FamilySpec
from zhprune_hub.prune.heap import trim_heap
from zhprune_hub.prune.streaming import Streamer
from zhprune_hub.prune.structure import decoder_layers

#: A list of [batch, seq, hidden] tensors: the calibration windows' hidden states, batch by batch.
States = list[torch.Tensor]


class _Captured(Exception):
    """Raised by the last recorder: the model's forward need not go past the blocks."""


class _Recorder(nn.Module):
    """Stands in for block `index` during capture: records its keyword arguments, passes hidden states on."""

    def __init__(self, block: nn.Module, index: int, last: bool, record: dict[int, dict[str, Any]]):
        super().__init__()
        self.index, self.last, self.record = index, last, record
        # Families read per-block attributes in their forward loop (Qwen2's attention_type).
        for key in ("attention_type", "layer_type"):
            if hasattr(block, key):
                setattr(self, key, getattr(block, key))

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.record[self.index] = {"kwargs": kwargs, "hidden": hidden_states if self.index == 0 else None}
        if self.last:
            raise _Captured
        return hidden_states


class Traversal:
    """The decoder of a (meta-device) model, walked block by block over calibration states."""

    def __init__(
        self,
        model: nn.Module,
        spec: FamilySpec,
        streamer: Streamer,
        *,
        batch_size: int,
        state_device: torch.device | str = "cpu",
    ):
        self.model = model
        self.spec = spec
        self.streamer = streamer
        self.batch_size = batch_size
        self.state_device = torch.device(state_device)
        self.layers = decoder_layers(model, spec)
        self._kwargs: dict[tuple[int, int], dict[int, dict[str, Any]]] = {}
        parent_path, _, self._layers_attr = spec.layers_path.rpartition(".")
        self._decoder = model.get_submodule(parent_path)

    @property
    def device(self) -> torch.device:
        return self.streamer.device

    def prefix(self, index: int) -> str:
        return f"{self.spec.layers_path}.{index}"

    def _capture(self, **inputs: torch.Tensor) -> torch.Tensor:
        """Run the decoder's own forward on `input_ids` or `inputs_embeds` until the blocks; keep their arguments."""
        record: dict[int, dict[str, Any]] = {}
        recorders = nn.ModuleList(
            [_Recorder(block, i, i == len(self.layers) - 1, record) for i, block in enumerate(self.layers)]
        )
        setattr(self._decoder, self._layers_attr, recorders)
        try:
            self._decoder(**inputs, use_cache=False)
        except _Captured:
            pass
        finally:
            setattr(self._decoder, self._layers_attr, self.layers)
        shape = next(iter(inputs.values())).shape[:2]
        self._kwargs.setdefault(tuple(shape), {i: r["kwargs"] for i, r in record.items()})
        return record[0]["hidden"]

    @torch.no_grad()
    def embed(self, input_ids: torch.Tensor) -> States:
        """Block-0 inputs of every calibration window, batch by batch, on the state device."""
        embeddings = self.model.get_input_embeddings()
        name = _module_name(self.model, embeddings)
        states: States = []
        with self.streamer.resident(embeddings, name):
            for start in range(0, input_ids.shape[0], self.batch_size):
                batch = input_ids[start : start + self.batch_size].to(self.device)
                states.append(self._capture(input_ids=batch).to(self.state_device))
        return states

    def kwargs(self, index: int, batch: torch.Tensor) -> dict[str, Any]:
        """What the model's forward gives block `index` for hidden states shaped like `batch`.

        A shape not seen at embedding time (a smaller slice of a batch) is captured then, from
        placeholder hidden states: the arguments depend on the shape only, never on the values.
        """
        shape = tuple(batch.shape[:2])
        if shape not in self._kwargs:
            with torch.no_grad():
                self._capture(inputs_embeds=torch.zeros(*shape, batch.shape[-1], dtype=batch.dtype, device=self.device))
        return self._kwargs[shape][index]

    @contextmanager
    def block(self, index: int, *, trim: bool = True) -> Iterator[nn.Module]:
        """Block `index` materialised on the compute device for the duration.

        With `trim` the heap is trimmed afterwards, so what a pass freed in this block does not add
        to the next one's peak; callers that visit every block per window (scoring) pass False.
        """
        try:
            with self.streamer.resident(self.layers[index], self.prefix(index)) as block:
                yield block
        finally:
            if trim:
                trim_heap()

    def run(self, index: int, block: nn.Module, states: States) -> States:
        """The block's outputs for every batch of `states` (no gradients)."""
        outputs: States = []
        with torch.no_grad():
            for x in states:
                out = block(x.to(self.device), **self.kwargs(index, x))
                outputs.append(_hidden(out).to(self.state_device))
        return outputs

    def advance(self, index: int, block: nn.Module, states: States) -> None:
        """Replace every batch of `states` by the block's output on it, one batch at a time (no gradients)."""
        with torch.no_grad():
            for i, x in enumerate(states):
                states[i] = _hidden(block(x.to(self.device), **self.kwargs(index, x))).to(self.state_device)


def _hidden(output: Any) -> torch.Tensor:
    """A block's hidden-state output (transformers 5 returns a tensor; older code a tuple)."""
    return output[0] if isinstance(output, tuple) else output


def _module_name(model: nn.Module, target: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name
    raise LookupError("module is not part of the model")
