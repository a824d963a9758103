"""Pass 1: walk the dense model block by block and gather what allocation needs from every block.

Forward: each block runs on the calibration states, its 1 − cos(input, output) is measured, and
forward-only methods read their statistics. Backward (methods that need gradients): the blocks
are walked in reverse from the loss, each recomputed from its saved input with gradients on, its
output gradient pushed through it, and only small per-block summaries kept — taylor's per-unit
scores (the parameter gradients are summed for one block, scored and dropped) or the diagonal
Fisher and compensated cost curves of `obs`. No whole-model gradient ever exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from zhprune_hub.prune import obs
from zhprune_hub.prune.importance import (
    METHODS,
    LayerScores,
    activation_scores,
    magnitude_scores,
    prunable_parameters,
    random_scores,
    taylor_scores,
)
from zhprune_hub.prune.spool import StateSpool, states_bytes
from zhprune_hub.prune.statistics import BlockSimilarity, InputMoments, OutputFisher
from zhprune_hub.prune.structure import LayerShape, attention_of, layer_shape, mlp_of
from zhprune_hub.prune.surgery import head_rows
from zhprune_hub.prune.traversal import States, Traversal, _hidden

#: Tokens per recomputation of a block with gradients on: its autograd graph (the MLP's
#: intermediate activations above all) is bounded by this, whatever the calibration batch.
GRADIENT_BATCH_TOKENS = 1024

#: Compensated curves stop at this fraction of a block's channels (no plan removes more).
MAX_CHANNEL_FRACTION = 0.9


@dataclass
class CostCurve:
    """Cumulative cost of removing 1, 2, … units of one kind from a block, and their parameter cost."""

    costs: list[float]
    unit_parameters: int


@dataclass
class BlockEvidence:
    """What pass 1 learnt about one block."""

    similarity: float | None = None
    scores: LayerScores | None = None
    head_curve: CostCurve | None = None
    channel_curve: CostCurve | None = None
    #: Diagonal Fisher of the residual stream where o_proj and down_proj write (obs only).
    fisher_attention: torch.Tensor | None = None
    fisher_mlp: torch.Tensor | None = None


@dataclass
class Evidence:
    blocks: list[BlockEvidence]
    windows: int
    tokens: int

    @property
    def block_importance(self) -> list[float] | None:
        values = [b.similarity for b in self.blocks]
        return None if any(v is None for v in values) else [float(v) for v in values]  # type: ignore[arg-type]


def collect(
    traversal: Traversal,
    method: str,
    states: States | None,
    *,
    head_unit: str,
    head_dim: int,
    seed: int,
    scratch: Path,
    damping: float = obs.DEFAULT_DAMPING,
    labels: torch.Tensor | None = None,
    progress: Callable[[str], None] | None = None,
) -> Evidence:
    """Pass 1 for `method`; `states` are the block-0 calibration states (None without data)."""
    chosen = METHODS[method]
    blocks = [BlockEvidence() for _ in traversal.layers]
    windows = tokens = 0
    if states is not None:
        windows = sum(s.shape[0] for s in states)
        tokens = sum(s.shape[0] * s.shape[1] for s in states)
    if not chosen.needs_data:
        generator = torch.Generator().manual_seed(seed)
        for index in range(len(traversal.layers)):
            if method == "random":
                shape = layer_shape(traversal.layers[index], traversal.spec, head_dim)
                blocks[index].scores = random_scores(
                    shape.num_heads, shape.num_kv_heads, shape.intermediate_size, generator
                )
            else:
                with traversal.block(index) as block:
                    blocks[index].scores = magnitude_scores(block, traversal.spec, head_dim)
            if progress:
                progress("scores")
        return Evidence(blocks, 0, 0)

    assert states is not None, "data-driven methods need calibration states"
    spool = None
    if chosen.needs_gradients:
        spool = StateSpool(scratch, expected_bytes=states_bytes(states) * len(traversal.layers))
    x = states
    for index in range(len(traversal.layers)):
        with traversal.block(index) as block:
            similarity = BlockSimilarity()
            moments = None
            if method == "activation":
                moments = (
                    InputMoments(getattr(attention_of(block, traversal.spec), traversal.spec.o_proj), full=False),
                    InputMoments(getattr(mlp_of(block, traversal.spec), traversal.spec.down_proj), full=False),
                )
            try:
                out = traversal.run(index, block, x)
            finally:
                o_sq, down_sq = (m.close() for m in moments) if moments else (None, None)
            for before, after in zip(x, out, strict=True):
                similarity.add(before, after)
            blocks[index].similarity = similarity.value
            if moments:
                blocks[index].scores = activation_scores(block, traversal.spec, head_dim, o_sq, down_sq, tokens)
        if spool is not None:
            spool.put(index, x)
        x = out
        if progress:
            progress("forward")
    if spool is not None:
        assert labels is not None, "gradient methods need the calibration token ids"
        _backward(
            traversal,
            method,
            x,
            spool,
            labels,
            blocks,
            head_unit=head_unit,
            head_dim=head_dim,
            damping=damping,
            progress=progress,
        )
    return Evidence(blocks, windows, tokens)


#: Positions per output-head call in the loss: bounds the logits (and their gradient) to
#: this many rows of vocabulary size, whatever the batch.
_HEAD_CHUNK = 1024


def _loss_gradients(traversal: Traversal, final: States, labels: torch.Tensor) -> States:
    """∂L/∂(last block output) for every batch, L the mean next-token NLL of each batch (as taylor always used).

    The head runs over `_HEAD_CHUNK` positions at a time, each chunk's share of the mean loss
    back-propagated at once, so no batch × length × vocabulary tensor is ever built.
    """
    model = traversal.model
    norm_name = traversal.spec.final_norm
    norm = model.get_submodule(norm_name)
    head = model.get_output_embeddings()
    gradients: States = []
    start = 0
    with traversal.streamer.resident(norm, norm_name), traversal.streamer.resident(head, _head_name(model)):
        for x in final:
            ids = labels[start : start + x.shape[0]].to(traversal.device)
            start += x.shape[0]
            hidden = x.to(traversal.device).detach().requires_grad_(True)
            targets = ids[:, 1:].reshape(-1)
            predicting = hidden[:, :-1].reshape(-1, hidden.shape[-1])
            with torch.enable_grad():
                for begin in range(0, targets.numel(), _HEAD_CHUNK):
                    end = begin + _HEAD_CHUNK
                    logits = head(norm(predicting[begin:end])).float()
                    loss = F.cross_entropy(logits, targets[begin:end], reduction="sum") / targets.numel()
                    loss.backward(retain_graph=end < targets.numel())
                    del logits, loss
            gradients.append(hidden.grad.detach().to(traversal.state_device))
            del hidden, predicting
    return gradients


def _head_name(model: nn.Module) -> str:
    head = model.get_output_embeddings()
    return next(name for name, module in model.named_modules() if module is head)


def _backward(
    traversal: Traversal,
    method: str,
    final: States,
    spool: StateSpool,
    labels: torch.Tensor,
    blocks: list[BlockEvidence],
    *,
    head_unit: str,
    head_dim: int,
    damping: float,
    progress: Callable[[str], None] | None,
) -> None:
    spec = traversal.spec
    grads = _loss_gradients(traversal, final, labels)
    for index in reversed(range(len(traversal.layers))):
        inputs = spool.pop(index)
        with traversal.block(index) as block:
            params = prunable_parameters(block, spec) if method == "taylor" else []
            for p in params:
                p.requires_grad_(True)
            summed = {id(p): torch.zeros(p.shape, dtype=torch.float32, device=p.device) for p in params}
            attention, mlp = attention_of(block, spec), mlp_of(block, spec)
            o_proj, down_proj = getattr(attention, spec.o_proj), getattr(mlp, spec.down_proj)
            hooks = []
            if method == "obs":
                hooks = [
                    OutputFisher(o_proj),
                    OutputFisher(down_proj),
                    InputMoments(o_proj, full=True),
                    InputMoments(down_proj, full=True),
                ]
            try:
                new_grads: States = []
                for x, g in zip(inputs, grads, strict=True):
                    step = max(1, GRADIENT_BATCH_TOKENS // x.shape[1])
                    pieces = []
                    for start in range(0, x.shape[0], step):
                        hidden = x[start : start + step].to(traversal.device).detach().requires_grad_(True)
                        with torch.enable_grad():
                            out = _hidden(block(hidden, **traversal.kwargs(index, hidden)))
                            out.backward(g[start : start + step].to(traversal.device))
                        for p in params:
                            summed[id(p)] += p.grad.float()
                            p.grad = None
                        pieces.append(hidden.grad.detach().to(traversal.state_device))
                        del out, hidden
                    new_grads.append(torch.cat(pieces))
            finally:
                summaries = [h.close() for h in hooks]
                for p in params:
                    p.requires_grad_(False)
            if method == "taylor":
                blocks[index].scores = taylor_scores(block, spec, head_dim, summed)
            if method == "obs":
                fisher_mid, fisher_out, h_o, h_d = summaries
                del summaries
                blocks[index].fisher_attention, blocks[index].fisher_mlp = fisher_mid.cpu(), fisher_out.cpu()
                shape = layer_shape(block, spec, head_dim)
                blocks[index].head_curve = head_cost_curve(
                    o_proj.weight.detach(), h_o, shape, head_unit, head_dim, fisher_mid, damping
                )
                del h_o
                blocks[index].channel_curve = channel_cost_curve(down_proj.weight.detach(), h_d, fisher_out, damping)
            del summed
        grads = new_grads
        if progress:
            progress("backward")


def head_cost_curve(
    o_weight: torch.Tensor,
    h: torch.Tensor,
    shape: LayerShape,
    head_unit: str,
    head_dim: int,
    row_weight: torch.Tensor | None,
    damping: float,
) -> CostCurve:
    """Cumulative compensated cost of removing 1..max head units (a KV group, or one query head per group)."""
    if head_unit == "none":
        return CostCurve([], 0)
    hinv, _ = obs.damped_cholesky_inverse(obs.for_solving(h), damping)
    w = o_weight.to(hinv.dtype)
    row_weight = None if row_weight is None else row_weight.to(hinv)
    group = shape.group_size
    if head_unit == "group":
        cols = [
            head_rows(list(range(j * group, (j + 1) * group)), head_dim, w.device) for j in range(shape.num_kv_heads)
        ]
        removal = obs.remove_column_groups(w, hinv, cols, shape.num_kv_heads - 1, row_weight=row_weight)
        steps = removal.costs
    else:
        steps = [0.0] * (group - 1)
        for j in range(shape.num_kv_heads):
            cols = [head_rows([j * group + r], head_dim, w.device) for r in range(group)]
            removal = obs.remove_column_groups(w, hinv.clone(), cols, group - 1, row_weight=row_weight)
            for r, cost in enumerate(removal.costs):
                steps[r] += cost
    return CostCurve(_cumulative(steps), 0)


def channel_cost_curve(
    down_weight: torch.Tensor, h: torch.Tensor, row_weight: torch.Tensor | None, damping: float
) -> CostCurve:
    """Cumulative compensated cost of removing 1..90% of a block's MLP channels, greedily."""
    hinv, _ = obs.damped_cholesky_inverse(obs.for_solving(h), damping)
    count = int(down_weight.shape[1] * MAX_CHANNEL_FRACTION)
    removal = obs.remove_columns(
        down_weight.to(hinv.dtype), hinv, count, row_weight=None if row_weight is None else row_weight.to(hinv)
    )
    return CostCurve(_cumulative(removal.costs), 0)


def _cumulative(step_costs: list[float]) -> list[float]:
    """Running totals of non-decreasing step costs (a later removal never looks cheaper than an earlier one)."""
    totals, running, floor = [], 0.0, 0.0
    for cost in step_costs:
        floor = max(floor, cost)
        running += floor
        totals.append(running)
    return totals
