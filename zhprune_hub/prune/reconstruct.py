"""Pass 2 for one block: cut its heads and channels on the pruned model's inputs, then repair it.

The block sees the hidden states that the already pruned blocks before it produce, so it can
absorb their error. Attention first: the inputs of o_proj give H = XᵀX; the heads to drop are
either fixed by a ranking plan or chosen by compensated cost; the kept columns of o_proj are
re-fitted by damped least squares so the block's attention output on these inputs stays what the
dense weights give. Then the MLP, on the repaired attention's output, the same way through
down_proj. Inputs to q/k/v and gate/up are never changed; biases of q/k/v (and gate/up) follow
their rows; an output projection's bias keeps its size.

With a stream correction α > 0 the fit's target also carries α of the error the pruned model
has accumulated in the residual stream by then: the dense model's own stream (the dense block on
the dense block's inputs) says where the residual should be after this projection, and the
projection is fitted towards (1 − α)·(its dense output on the pruned inputs) + α·(what would put
the pruned residual back there). α = 1 asks each projection to undo all earlier error, which
over-fits the calibration tokens; a share of it measures best (BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from zhprune_hub.prune import obs
from zhprune_hub.prune.allocation import BlockBudget
from zhprune_hub.prune.plan import LayerPlan
from zhprune_hub.prune.spool import BatchFiles
from zhprune_hub.prune.statistics import capture_input, cross, gram
from zhprune_hub.prune.structure import LayerShape, attention_of, layer_shape, mlp_of
from zhprune_hub.prune.surgery import head_rows, slice_linear
from zhprune_hub.prune.traversal import States, Traversal, _hidden


@dataclass(frozen=True)
class RepairSettings:
    repair: bool = True
    damping: float = obs.DEFAULT_DAMPING
    #: Share α of the accumulated residual-stream error each re-fitted projection is asked to undo.
    correction: float = 0.0


@dataclass
class StreamTarget:
    """Where the dense model puts the residual stream after one projection, seen from the pruned inputs X.

    `cross` = Σ r xᵀ and `energy` = Σ ‖r‖² over calibration tokens, with r the dense stream's value
    after the projection minus the pruned stream's value before it: the output that would put the
    pruned residual back on the dense one.
    """

    cross: torch.Tensor
    energy: float

    def add(self, r: torch.Tensor, x: torch.Tensor) -> None:
        cross(r, x, self.cross)
        self.energy += float(r.double().pow(2).sum())

    @classmethod
    def empty(cls, outputs: int, inputs: int, device: torch.device) -> StreamTarget:
        return cls(torch.zeros(outputs, inputs, dtype=obs.solving_dtype(inputs, device), device=device), 0.0)


@dataclass
class BlockCut:
    """One block's pass-2 result: its outputs on the pruned stream, what it kept, how the repair went."""

    outputs: States
    plan: LayerPlan
    records: dict[str, ProjectionRecord]
    #: The dense block's outputs on the dense stream (with a stream correction), the next block's target.
    dense_outputs: States | None = None


@dataclass(frozen=True)
class ProjectionRecord:
    """How much of a projection's output on calibration inputs the cut changed, before/after repair."""

    error_cut: float
    error_repaired: float
    damping: float


def _refit(
    weight: torch.Tensor,
    h: torch.Tensor,
    kept: torch.Tensor,
    settings: RepairSettings,
    stream: StreamTarget | None = None,
) -> tuple[torch.Tensor, ProjectionRecord]:
    """The kept columns, re-fitted (or merely sliced without repair), and the error record.

    The target is T = X Wᵀ, or with a stream correction α, T = (1 − α)·X Wᵀ + α·R (R the rows r
    of `stream`); C = Tᵀ X = (1 − α)·W·H + α·Σ r xᵀ. The errors, relative to ‖T‖², come from H,
    C and W·H formed once (no activations kept). Slicing leaves ‖T‖² − 2⟨W_K, C_K⟩ + ⟨W_K, W_K·H_KK⟩,
    where ⟨W_K, W_K·H_KK⟩ = ⟨W, W·H⟩ − 2⟨W_R, (W·H)_R⟩ + ⟨W_R, W_R·H_RR⟩ (for α = 0 the slice error
    is ⟨W_R, W_R·H_RR⟩). The fit W' = C_K (H_KK + s·I)⁻¹ satisfies W'·H_KK = C_K − s·W', so its error
    is ‖T‖² − ⟨W', C_K⟩ − s‖W'‖². Inner products over whole matrices use the removed columns only
    where they can, and `stream.cross` becomes C in place: at LLaMA-7B widths every out × in
    temporary of down_proj is 180 MB.
    """
    sliced = weight[:, kept]
    if kept.numel() == weight.shape[1]:
        # A projection that loses nothing is left as it is, stream correction or not.
        return sliced, ProjectionRecord(0.0, 0.0, 0.0)
    alpha = settings.correction if (settings.repair and stream is not None) else 0.0
    w = weight.to(h.dtype)
    is_removed = torch.ones(w.shape[1], dtype=torch.bool, device=w.device)
    is_removed[kept] = False
    removed = is_removed.nonzero().squeeze(1)
    wh = w @ h
    w_removed = w[:, removed]
    removed_energy = _inner(w_removed, w_removed @ h[removed[:, None], removed])
    if alpha:
        dense_energy = _inner(w, wh)
        c = stream.cross.to(h.dtype)  # type: ignore[union-attr]
        energy = (1 - alpha) ** 2 * dense_energy + 2 * alpha * (1 - alpha) * _inner(w, c)
        energy = energy + alpha**2 * stream.energy  # type: ignore[union-attr]
        kept_energy = dense_energy - 2 * _inner(w_removed, wh[:, removed]) + removed_energy
        c.mul_(alpha).add_(wh, alpha=1 - alpha)
        del wh
        slice_energy = energy - 2 * (_inner(w, c) - _inner(w_removed, c[:, removed])) + kept_energy
    else:
        c, energy, slice_energy = wh, _inner(w, wh), removed_energy
    del w_removed
    reference = energy.clamp_min(torch.finfo(h.dtype).tiny)
    cut_error = float(slice_energy / reference)
    if not settings.repair:
        return sliced, ProjectionRecord(cut_error, cut_error, 0.0)
    c_kept = c[:, kept]
    del c
    fitted, used = obs.least_squares(h, c_kept, kept, damping=settings.damping)
    shift = used * obs.diagonal_scale(h.diagonal()[kept])
    repaired_error = float((energy - _inner(fitted, c_kept) - shift * _inner(fitted, fitted)) / reference)
    if repaired_error > cut_error:
        # A solve that overfits (too few tokens for the width) is worse than no repair: keep the slice.
        return sliced, ProjectionRecord(cut_error, cut_error, used)
    return fitted.to(weight.dtype), ProjectionRecord(cut_error, repaired_error, used)


def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """⟨A, B⟩ = Σ aᵢⱼ bᵢⱼ without an elementwise product the size of A."""
    return torch.vdot(a.reshape(-1), b.reshape(-1))


def _choose_heads(
    o_weight: torch.Tensor,
    h: torch.Tensor,
    budget: BlockBudget,
    *,
    num_heads: int,
    num_kv_heads: int,
    head_unit: str,
    head_dim: int,
    row_weight: torch.Tensor | None,
    damping: float,
) -> tuple[list[int], list[int]]:
    """Kept query heads and KV heads when `budget.head_units` units go, chosen by compensated cost."""
    group = num_heads // num_kv_heads
    if budget.head_units == 0:
        return list(range(num_heads)), list(range(num_kv_heads))
    hinv, _ = obs.damped_cholesky_inverse(h, damping)
    w = o_weight.to(hinv.dtype)
    rw = None if row_weight is None else row_weight.to(hinv)
    if head_unit == "group":
        cols = [head_rows(list(range(j * group, (j + 1) * group)), head_dim, w.device) for j in range(num_kv_heads)]
        gone_kv = set(obs.remove_column_groups(w, hinv, cols, budget.head_units, row_weight=rw).order)
        kept_kv = [j for j in range(num_kv_heads) if j not in gone_kv]
        return [j * group + r for j in kept_kv for r in range(group)], kept_kv
    gone: set[int] = set()
    for j in range(num_kv_heads):
        cols = [head_rows([j * group + r], head_dim, w.device) for r in range(group)]
        order = obs.remove_column_groups(w, hinv.clone(), cols, budget.head_units, row_weight=rw).order
        gone.update(j * group + r for r in order)
    return [q for q in range(num_heads) if q not in gone], list(range(num_kv_heads))


def _choose_channels(
    down_weight: torch.Tensor, h: torch.Tensor, count: int, row_weight: torch.Tensor | None, damping: float
) -> list[int]:
    if count == 0:
        return list(range(down_weight.shape[1]))
    hinv, _ = obs.damped_cholesky_inverse(h, damping)
    rw = None if row_weight is None else row_weight.to(hinv)
    gone = set(obs.remove_columns(down_weight.to(hinv.dtype), hinv, count, row_weight=rw).order)
    return [c for c in range(down_weight.shape[1]) if c not in gone]


def _with_weight(linear: nn.Linear, weight: torch.Tensor) -> nn.Linear:
    linear.weight = nn.Parameter(weight.to(linear.weight.dtype).contiguous(), requires_grad=False)
    return linear


def cut_block(
    traversal: Traversal,
    index: int,
    block: nn.Module,
    states: States,
    decision: LayerPlan | BlockBudget,
    *,
    head_unit: str,
    head_dim: int,
    settings: RepairSettings,
    fisher_attention: torch.Tensor | None = None,
    fisher_mlp: torch.Tensor | None = None,
    dense_states: States | None = None,
    spill: Path | None = None,
) -> BlockCut:
    """Prune block `index` in place; return its outputs on `states`, what it kept, and repair records.

    `decision` is either a ranking plan's LayerPlan (which units go is fixed) or a BlockBudget
    (how many go; chosen here by compensated cost, weighted by the given Fisher diagonals).
    `dense_states`, the dense model's own inputs to this block, are needed for a stream correction;
    the dense block's outputs on them come back for the next block.

    Both lists are consumed: each batch is replaced in place by the block's stream after attention
    and then by its output (the dense list by the dense block's output), so the pass holds one set
    of pruned and one set of dense states, plus o_proj's inputs while heads are cut (in files under
    `spill` when given: the engine spills when the sets would not fit its memory budget).
    """
    shape = layer_shape(block, traversal.spec, head_dim)
    correcting = settings.repair and settings.correction > 0 and dense_states is not None
    dense = dense_states if correcting else None

    with torch.no_grad():
        if _cuts_heads(decision, shape):
            kept_heads, kept_kv, o_record = _cut_attention(
                traversal,
                index,
                block,
                states,
                decision,
                dense,
                shape,
                head_unit,
                head_dim,
                settings,
                fisher_attention,
                spill,
            )
        else:
            kept_heads, kept_kv = list(range(shape.num_heads)), list(range(shape.num_kv_heads))
            o_record = ProjectionRecord(0.0, 0.0, 0.0)
            _attention_as_is(traversal, index, block, states, dense)
        kept_channels, down_record = _cut_mlp(traversal, block, states, decision, dense, settings, fisher_mlp)

    plan = LayerPlan(index=index, kept_heads=kept_heads, kept_kv_heads=kept_kv, kept_channels=kept_channels)
    return BlockCut(states, plan, {"o_proj": o_record, "down_proj": down_record}, dense)


def _cuts_heads(decision: LayerPlan | BlockBudget, shape: LayerShape) -> bool:
    if isinstance(decision, BlockBudget):
        return decision.head_units > 0
    return len(decision.kept_heads) < shape.num_heads or len(decision.kept_kv_heads) < shape.num_kv_heads


def _attention_as_is(traversal: Traversal, index: int, block: nn.Module, states: States, dense: States | None) -> None:
    """Attention keeps every head: each batch of `states` (and of `dense`) moves past it, in place."""
    spec = traversal.spec
    attention, input_norm = attention_of(block, spec), getattr(block, spec.input_norm)
    for i, x in enumerate(states):
        x = x.to(traversal.device)
        states[i] = (x + _hidden(attention(hidden_states=input_norm(x), **traversal.kwargs(index, x)))).to(
            traversal.state_device
        )
        if dense is not None:
            dense[i] = _dense_step(traversal, index, block, dense[i])[1].to(traversal.state_device)


def _cut_attention(
    traversal: Traversal,
    index: int,
    block: nn.Module,
    states: States,
    decision: LayerPlan | BlockBudget,
    dense: States | None,
    shape: LayerShape,
    head_unit: str,
    head_dim: int,
    settings: RepairSettings,
    fisher_attention: torch.Tensor | None,
    spill: Path | None,
) -> tuple[list[int], list[int], ProjectionRecord]:
    """Cut heads on o_proj's inputs of the pruned stream, re-fit o_proj; `states` move past attention."""
    spec = traversal.spec
    device = traversal.device
    attention, input_norm = attention_of(block, spec), getattr(block, spec.input_norm)
    o_proj = getattr(attention, spec.o_proj)
    stream_o = StreamTarget.empty(o_proj.out_features, o_proj.in_features, device) if dense is not None else None
    head_inputs: States | BatchFiles = [] if spill is None else BatchFiles(spill / "head-inputs")
    h_o = None
    for i, x in enumerate(states):
        x = x.to(device)
        _, a = capture_input(o_proj, lambda x=x: attention(hidden_states=input_norm(x), **traversal.kwargs(index, x)))
        head_inputs.append(a.to(traversal.state_device))
        h_o = gram(a, h_o)
        if stream_o is not None:
            # The dense block on the dense stream, before any cut: where the residual should be.
            dense_middle, dense_output = _dense_step(traversal, index, block, dense[i])  # type: ignore[index]
            stream_o.add(dense_middle - x - _bias(o_proj), a)
            dense[i] = dense_output.to(traversal.state_device)  # type: ignore[index]
            del dense_middle
    h_o = obs.for_solving(h_o)
    if isinstance(decision, BlockBudget):
        kept_heads, kept_kv = _choose_heads(
            o_proj.weight,
            h_o,
            decision,
            num_heads=shape.num_heads,
            num_kv_heads=shape.num_kv_heads,
            head_unit=head_unit,
            head_dim=head_dim,
            row_weight=fisher_attention,
            damping=settings.damping,
        )
    else:
        kept_heads, kept_kv = decision.kept_heads, decision.kept_kv_heads
    q_rows = head_rows(kept_heads, head_dim, device)
    kv_rows = head_rows(kept_kv, head_dim, device)
    o_weight, o_record = _refit(o_proj.weight.detach(), h_o, q_rows, settings, stream_o)
    del h_o, stream_o
    for name, rows in ((spec.q_proj, q_rows), (spec.k_proj, kv_rows), (spec.v_proj, kv_rows)):
        setattr(attention, name, slice_linear(getattr(attention, name), rows=rows))
    new_o = _with_weight(slice_linear(o_proj, cols=q_rows), o_weight)
    setattr(attention, spec.o_proj, new_o)
    # repeat_kv in the attention kernels reads this; heads per KV group may have changed.
    attention.num_key_value_groups = len(kept_heads) // len(kept_kv)
    for i, a in enumerate(head_inputs):
        states[i] = (states[i].to(device) + new_o(a.to(device)[..., q_rows])).to(traversal.state_device)
        head_inputs[i] = None  # type: ignore[call-overload]
    if isinstance(head_inputs, BatchFiles):
        head_inputs.close()
    return kept_heads, kept_kv, o_record


def _cut_mlp(
    traversal: Traversal,
    block: nn.Module,
    states: States,
    decision: LayerPlan | BlockBudget,
    dense: States | None,
    settings: RepairSettings,
    fisher_mlp: torch.Tensor | None,
) -> tuple[list[int], ProjectionRecord]:
    """Cut channels on down_proj's inputs after the (repaired) attention, re-fit down_proj; `states`
    become the block's outputs."""
    spec = traversal.spec
    device = traversal.device
    mlp, post_norm = mlp_of(block, spec), getattr(block, spec.post_attention_norm)
    down = getattr(mlp, spec.down_proj)
    stream_d = StreamTarget.empty(down.out_features, down.in_features, device) if dense is not None else None
    h_d = None
    for i, m in enumerate(states):
        m = m.to(device)
        _, z = capture_input(down, lambda m=m: mlp(post_norm(m)))
        h_d = gram(z, h_d)
        if stream_d is not None:
            stream_d.add(dense[i].to(device) - m - _bias(down), z)  # type: ignore[index]
        del z
    h_d = obs.for_solving(h_d)
    if isinstance(decision, BlockBudget):
        kept_channels = _choose_channels(down.weight, h_d, decision.channels, fisher_mlp, settings.damping)
    else:
        kept_channels = decision.kept_channels
    channels = torch.tensor(kept_channels, dtype=torch.long, device=device)
    down_weight, down_record = _refit(down.weight.detach(), h_d, channels, settings, stream_d)
    del h_d, stream_d
    for name in spec.channel_projections:
        setattr(mlp, name, slice_linear(getattr(mlp, name), rows=channels))
    setattr(mlp, spec.down_proj, _with_weight(slice_linear(down, cols=channels), down_weight))
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(kept_channels)
    for i, m in enumerate(states):
        m = m.to(device)
        states[i] = (m + mlp(post_norm(m))).to(traversal.state_device)
    return kept_channels, down_record


def _bias(linear: nn.Linear) -> torch.Tensor | float:
    return 0.0 if linear.bias is None else linear.bias.detach()


def _dense_step(
    traversal: Traversal, index: int, block: nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (still dense) block's residual stream after attention and after the MLP, for one dense batch."""
    spec = traversal.spec
    attention, mlp = attention_of(block, spec), mlp_of(block, spec)
    input_norm, post_norm = getattr(block, spec.input_norm), getattr(block, spec.post_attention_norm)
    x = x.to(traversal.device)
    middle = x + _hidden(attention(hidden_states=input_norm(x), **traversal.kwargs(index, x)))
    return middle, middle + mlp(post_norm(middle))
