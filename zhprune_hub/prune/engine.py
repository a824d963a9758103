"""The sequential engine: pass 1 gathers evidence from every block, allocation chooses the widths,
pass 2 cuts and repairs block after block on the pruned model's own outputs and writes each one.

Only one decoder block is resident on the compute device at a time; the embeddings, final norm
and output head are loaded only for the moments that need them (block-0 inputs, the loss of the
gradient pass) and copied to the output as they are.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from zhprune_hub.errors import RatioError
from zhprune_hub.prune import spool
from zhprune_hub.prune.allocation import AllocationReport, BlockBudget, allocate, allocate_by_cost
from zhprune_hub.prune.collect import BlockEvidence, Evidence, collect
from zhprune_hub.prune.importance import METHODS
from zhprune_hub.prune.plan import LayerPlan, PruningPlan
from zhprune_hub.prune.reconstruct import ProjectionRecord, RepairSettings, cut_block
from zhprune_hub.prune.spool import BatchFiles, states_bytes
from zhprune_hub.prune.structure import LayerShape, UnitCosts, layer_shape, unit_costs
from zhprune_hub.prune.traversal import States, Traversal
from zhprune_hub.prune.writer import CheckpointWriter


@dataclass(frozen=True)
class EngineSettings:
    method: str
    layout: str
    head_unit: str
    target_removed: int
    hidden_size: int
    heads_must_divide_hidden: bool
    repair: RepairSettings
    temperature: float = 1.0
    tau: float | None = None
    seed: int = 0
    #: Every kept MLP width a multiple of this (1: no rounding).
    round_to: int = 1


@dataclass
class EngineResult:
    plan: PruningPlan
    allocation: AllocationReport
    evidence: Evidence
    repairs: list[dict[str, ProjectionRecord]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _progress(callback: Callable[[str], None] | None) -> Callable[[str], None]:
    return callback or (lambda _stage: None)


def run_engine(
    traversal: Traversal,
    settings: EngineSettings,
    *,
    input_ids: torch.Tensor | None,
    head_dim: int,
    writer: CheckpointWriter,
    scratch: Path,
    progress: Callable[[str], None] | None = None,
) -> EngineResult:
    """Prune the model behind `traversal` into `writer`; return the plan and what led to it.

    Raises:
        RatioError: the target cannot be reached.
    """
    import time

    tick = _progress(progress)
    spec = traversal.spec
    shapes = [layer_shape(layer, spec, head_dim) for layer in traversal.layers]
    costs = [unit_costs(layer, spec, head_dim) for layer in traversal.layers]
    seconds: dict[str, float] = {}

    mark = time.perf_counter()
    states = traversal.embed(input_ids) if input_ids is not None else None
    evidence = collect(
        traversal,
        settings.method,
        states,
        head_unit=settings.head_unit,
        head_dim=head_dim,
        seed=settings.seed,
        scratch=scratch,
        damping=settings.repair.damping,
        labels=input_ids,
        progress=tick,
    )
    seconds["collect_s"] = time.perf_counter() - mark

    decisions, allocation = _allocate(settings, evidence, shapes, costs, head_dim)
    mark = time.perf_counter()
    try:
        layers, repairs = _cut_all(traversal, settings, decisions, evidence, states, head_dim, writer, tick, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # the run's own scratch space, inside its staging directory
    seconds["cut_s"] = time.perf_counter() - mark
    removed = sum(costs[lp.index].block for lp in layers if lp.removed) + sum(
        _removed_parameters(lp, shapes[lp.index], costs[lp.index]) for lp in layers if not lp.removed
    )
    plan = PruningPlan(
        layers=layers, head_dim=head_dim, target_removed=settings.target_removed, planned_removed=removed
    )
    return EngineResult(plan=plan, allocation=allocation, evidence=evidence, repairs=repairs, seconds=seconds)


def _removed_parameters(lp: LayerPlan, shape: LayerShape, cost: UnitCosts) -> int:
    return (
        (shape.num_heads - lp.num_heads) * cost.q_head
        + (shape.num_kv_heads - lp.num_kv_heads) * cost.kv_head
        + (shape.intermediate_size - lp.intermediate_size) * cost.channel
    )


def _allocate(
    settings: EngineSettings,
    evidence: Evidence,
    shapes: list[LayerShape],
    costs: list[UnitCosts],
    head_dim: int,
) -> tuple[list[LayerPlan | BlockBudget], AllocationReport]:
    """The per-block decisions; with --round-to, the report also shows the widths rounding changed."""
    decisions, report = _allocate_once(settings, evidence, shapes, costs, head_dim, settings.round_to)
    if settings.round_to > 1:
        unrounded, _ = _allocate_once(settings, evidence, shapes, costs, head_dim, 1)
        rounded_widths = [_mlp_width(d, s) for d, s in zip(decisions, shapes, strict=True)]
        plain_widths = [_mlp_width(d, s) for d, s in zip(unrounded, shapes, strict=True)]
        changed = sum(a != b for a, b in zip(rounded_widths, plain_widths, strict=True))
        report.rounding = {
            "round_to": settings.round_to,
            "intermediate_size": rounded_widths,
            "intermediate_size_unrounded": plain_widths,
            "blocks_changed": changed,
        }
        report.notes.append(
            f"--round-to {settings.round_to}: every kept MLP width is a multiple of {settings.round_to}; "
            f"rounding changed the width of {changed} of {len(shapes)} blocks"
        )
    return decisions, report


def _mlp_width(decision: LayerPlan | BlockBudget, shape: LayerShape) -> int:
    if decision.removed:
        return 0
    if isinstance(decision, BlockBudget):
        return shape.intermediate_size - decision.channels
    return decision.intermediate_size


def _allocate_once(
    settings: EngineSettings,
    evidence: Evidence,
    shapes: list[LayerShape],
    costs: list[UnitCosts],
    head_dim: int,
    round_to: int,
) -> tuple[list[LayerPlan | BlockBudget], AllocationReport]:
    common = dict(
        round_to=round_to,
        target_removed=settings.target_removed,
        layout=settings.layout,
        head_unit=settings.head_unit,
        hidden_size=settings.hidden_size,
        heads_must_divide_hidden=settings.heads_must_divide_hidden,
        tau=settings.tau,
        block_importance=evidence.block_importance,
    )
    if METHODS[settings.method].compensated:
        budgets, report = allocate_by_cost(
            [b.head_curve.costs for b in evidence.blocks],  # type: ignore[union-attr]
            [b.channel_curve.costs for b in evidence.blocks],  # type: ignore[union-attr]
            shapes,
            costs,
            **common,
        )
        return list(budgets), report
    scores = [b.scores for b in evidence.blocks]
    random_order = np.random.default_rng(settings.seed) if settings.method == "random" else None
    plan, report = allocate(
        scores,  # type: ignore[arg-type]
        shapes,
        costs,
        head_dim=head_dim,
        temperature=settings.temperature,
        random_order=random_order,
        **common,
    )
    return list(plan.layers), report


def _removed_layer(index: int) -> LayerPlan:
    return LayerPlan(index=index, removed=True, kept_heads=[], kept_kv_heads=[], kept_channels=[])


def _cut_all(
    traversal: Traversal,
    settings: EngineSettings,
    decisions: list[LayerPlan | BlockBudget],
    evidence: Evidence,
    states: States | None,
    head_dim: int,
    writer: CheckpointWriter,
    tick: Callable[[str], None],
    scratch: Path,
) -> tuple[list[LayerPlan], list[dict[str, ProjectionRecord]]]:
    """Pass 2: cut every block in order on the pruned stream and spool it to the writer.

    With a stream correction the dense model's own stream runs alongside (each dense block on the
    dense block's inputs, removed blocks included), so every repair knows where the dense residual is.
    When the sets of states a block needs at once would pass the memory budget, all but the pruned
    stream live in files under `scratch` (spool.BatchFiles).
    """
    spec = traversal.spec
    layers: list[LayerPlan] = []
    repairs: list[dict[str, ProjectionRecord]] = []
    kept_so_far = 0
    data_free = states is None
    repair = settings.repair
    correcting = states is not None and repair.repair and repair.correction > 0
    spill = _spill_directory(states, correcting, scratch)
    dense: States | BatchFiles | None = None
    if correcting:
        dense = list(states) if spill is None else BatchFiles(spill / "dense", states)  # type: ignore[arg-type]
    for index, decision in enumerate(decisions):
        if decision.removed:
            if dense is not None:
                with traversal.block(index) as block:
                    traversal.advance(index, block, dense)  # type: ignore[arg-type]
            layers.append(_removed_layer(index))
            repairs.append({})
            tick("cut")
            continue
        with traversal.block(index) as block:
            if data_free:
                if isinstance(decision, BlockBudget):
                    raise RatioError("Compensated pruning needs calibration data.")
                from zhprune_hub.prune.surgery import prune_layer

                prune_layer(block, decision, spec, head_dim)
                layer_plan, record, outputs = decision, {}, None
            else:
                block_evidence: BlockEvidence = evidence.blocks[index]
                cut = cut_block(
                    traversal,
                    index,
                    block,
                    states,  # type: ignore[arg-type]
                    decision,
                    head_unit=settings.head_unit,
                    head_dim=head_dim,
                    settings=settings.repair,
                    fisher_attention=block_evidence.fisher_attention,
                    fisher_mlp=block_evidence.fisher_mlp,
                    dense_states=dense,  # type: ignore[arg-type]
                    spill=spill,
                )
                outputs, layer_plan, record, dense = cut.outputs, cut.plan, cut.records, cut.dense_outputs
            # The KV cache is indexed by layer_idx; removed blocks leave no gaps.
            getattr(block, spec.attention).layer_idx = kept_so_far
            prefix = f"{spec.layers_path}.{kept_so_far}."
            writer.add({prefix + name: tensor for name, tensor in block.state_dict().items()})
        if outputs is not None:
            states = outputs
        layers.append(layer_plan)
        repairs.append(record)
        kept_so_far += 1
        tick("cut")
    return layers, repairs


def _spill_directory(states: States | None, correcting: bool, scratch: Path) -> Path | None:
    """Where pass 2 keeps its extra sets of states (dense stream, o_proj inputs), or None for memory."""
    if states is None or not spool.pass_two_spills(states_bytes(states), correcting):
        return None
    return scratch / "pass2"


def streamed_logits(traversal: Traversal, windows: torch.Tensor) -> torch.Tensor:
    """Logits of `windows` [n, L] through the streamed model, one block resident at a time."""
    model = traversal.model
    states = traversal.embed(windows)
    for index in range(len(traversal.layers)):
        with traversal.block(index, trim=False) as block:  # per call: trimming would cost more than it keeps
            states = traversal.run(index, block, states)
    norm_name = traversal.spec.final_norm
    norm = model.get_submodule(norm_name)
    head = model.get_output_embeddings()
    head_name = next(name for name, module in model.named_modules() if module is head)
    with torch.no_grad(), traversal.streamer.resident(norm, norm_name), traversal.streamer.resident(head, head_name):
        return torch.cat([head(norm(x.to(traversal.device))).float().cpu() for x in states])


class StreamedScorer:
    """The streamed model behind the small causal-LM interface the language rule calls.

    `scorer(input_ids=ids).logits` runs the windows through the blocks one at a time, so deciding a
    model's language never needs the whole model in memory.
    """

    training = False

    def __init__(self, traversal: Traversal):
        self.traversal = traversal

    def parameters(self):
        yield torch.empty(0, device=self.traversal.device)

    def eval(self) -> StreamedScorer:
        return self

    def train(self, mode: bool = True) -> StreamedScorer:
        return self

    def __call__(self, *, input_ids: torch.Tensor, **_: object) -> _Logits:
        return _Logits(streamed_logits(self.traversal, input_ids))


@dataclass(frozen=True)
class _Logits:
    logits: torch.Tensor
