"""Importance of every prunable unit: query heads, KV heads and MLP channels, per block.

Methods (the model card reuses these descriptions):
- taylor: first-order Taylor |W ⊙ ∂L/∂W| summed over a unit's weights and biases, with gradients
  accumulated over all calibration windows (no per-sample gradients are kept).
- activation: forward-only; for each unit, the norm of its output-projection columns times the
  RMS of the activations feeding them (Wanda/FLAP style), for models too big for gradients.
- magnitude: squared L2 norm of a unit's weights; needs no data.
- random: seeded uniform scores, the floor every benchmark compares against.
Alongside, a calibration forward measures each block's importance as 1 - cos(input, output).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from zhprune_hub.prune.families import FamilySpec
from zhprune_hub.prune.structure import attention_of, decoder_layers, head_dim_of, mlp_of


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    reference: str
    needs_data: bool
    needs_gradients: bool


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "taylor",
            "First-order Taylor importance |W·∂L/∂W| per group, gradients accumulated over calibration windows.",
            "https://arxiv.org/abs/2305.11627",
            needs_data=True,
            needs_gradients=True,
        ),
        Method(
            "activation",
            "Forward-only: output-projection column norms times input activation RMS (Wanda/FLAP style).",
            "https://arxiv.org/abs/2312.11983",
            needs_data=True,
            needs_gradients=False,
        ),
        Method(
            "magnitude",
            "Squared L2 norm of each group's weights; uses no data.",
            "https://arxiv.org/abs/1608.08710",
            needs_data=False,
            needs_gradients=False,
        ),
        Method(
            "random",
            "Seeded random group selection: the floor every other method must beat.",
            "https://arxiv.org/abs/2301.00774",
            needs_data=False,
            needs_gradients=False,
        ),
    )
}


@dataclass
class LayerScores:
    """Scores of one block's units (higher = more important) in the base model's indexing."""

    heads: torch.Tensor
    kv_heads: torch.Tensor
    channels: torch.Tensor


@dataclass
class ImportanceResult:
    layers: list[LayerScores]
    #: 1 - cos(block input, block output) averaged over calibration tokens; None without data.
    block_importance: list[float] | None
    windows: int
    tokens: int


def _linears(layer: nn.Module, spec: FamilySpec) -> dict[str, nn.Linear]:
    attention, mlp = attention_of(layer, spec), mlp_of(layer, spec)
    found = {name: getattr(attention, name) for name in (spec.q_proj, spec.k_proj, spec.v_proj, spec.o_proj)}
    found.update({name: getattr(mlp, name) for name in (spec.gate_proj, spec.up_proj, spec.down_proj)})
    return found


def _reduce(element_scores: torch.Tensor, *, dim_kept: int, unit: int) -> torch.Tensor:
    """Sum element scores into units of `unit` consecutive rows (dim_kept=0) or columns (1)."""
    per_index = element_scores.sum(dim=1 - dim_kept) if element_scores.dim() == 2 else element_scores
    return per_index.reshape(-1, unit).sum(dim=1)


def _weighted_scores(
    layer: nn.Module, spec: FamilySpec, head_dim: int, element: Callable[[nn.Parameter], torch.Tensor]
) -> LayerScores:
    """Aggregate a per-element saliency over each unit's rows/columns (and row biases)."""
    lin = _linears(layer, spec)

    def rows(name: str, unit: int) -> torch.Tensor:
        linear = lin[name]
        score = _reduce(element(linear.weight), dim_kept=0, unit=unit)
        if linear.bias is not None:
            score = score + _reduce(element(linear.bias), dim_kept=0, unit=unit)
        return score

    def cols(name: str, unit: int) -> torch.Tensor:
        return _reduce(element(lin[name].weight), dim_kept=1, unit=unit)

    heads = rows(spec.q_proj, head_dim) + cols(spec.o_proj, head_dim)
    kv_heads = rows(spec.k_proj, head_dim) + rows(spec.v_proj, head_dim)
    channels = rows(spec.gate_proj, 1) + rows(spec.up_proj, 1) + cols(spec.down_proj, 1)
    return LayerScores(heads=heads.float().cpu(), kv_heads=kv_heads.float().cpu(), channels=channels.float().cpu())


class _BlockSimilarity:
    """Forward hooks measuring 1 - cos(input, output) of every block over calibration tokens."""

    def __init__(self, layers: nn.ModuleList):
        self.sums = [0.0] * len(layers)
        self.counts = [0] * len(layers)
        self.handles = [
            layer.register_forward_hook(self._hook(index), with_kwargs=True) for index, layer in enumerate(layers)
        ]

    def _hook(self, index: int) -> Callable:
        def record(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
            hidden_in = args[0] if args else kwargs["hidden_states"]
            hidden_out = output[0] if isinstance(output, tuple) else output
            with torch.no_grad():
                cos = nn.functional.cosine_similarity(hidden_in.float(), hidden_out.float(), dim=-1)
                self.sums[index] += float((1 - cos).sum())
                self.counts[index] += cos.numel()

        return record

    def result(self) -> list[float]:
        for handle in self.handles:
            handle.remove()
        return [s / max(c, 1) for s, c in zip(self.sums, self.counts, strict=True)]


class _InputNorms:
    """Forward pre-hooks summing squared inputs per column of o_proj and down_proj."""

    def __init__(self, layers: nn.ModuleList, spec: FamilySpec):
        self.sq: dict[tuple[int, str], torch.Tensor] = {}
        self.handles = []
        for index, layer in enumerate(layers):
            for module, name in (
                (getattr(attention_of(layer, spec), spec.o_proj), "o"),
                (getattr(mlp_of(layer, spec), spec.down_proj), "down"),
            ):
                self.handles.append(module.register_forward_pre_hook(self._hook((index, name))))

    def _hook(self, key: tuple[int, str]) -> Callable:
        def record(module: nn.Module, args: tuple) -> None:
            x = args[0].detach().float()
            contribution = x.pow(2).reshape(-1, x.shape[-1]).sum(dim=0)
            self.sq[key] = self.sq[key] + contribution if key in self.sq else contribution

        return record

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _batches(input_ids: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, input_ids.shape[0], batch_size):
        yield input_ids[start : start + batch_size]


def _prunable_parameters(model: nn.Module, spec: FamilySpec) -> list[nn.Parameter]:
    params = []
    for layer in decoder_layers(model, spec):
        for linear in _linears(layer, spec).values():
            params.extend(p for p in linear.parameters())
    return params


def compute_importance(
    model: nn.Module,
    spec: FamilySpec,
    method: str,
    *,
    input_ids: torch.Tensor | None,
    seed: int = 0,
    batch_size: int = 1,
    progress: Callable[[int], None] | None = None,
) -> ImportanceResult:
    """Score every unit of every block with `method`, running calibration windows where it needs them."""
    layers = decoder_layers(model, spec)
    head_dim = head_dim_of(model)
    chosen = METHODS[method]
    block_importance: list[float] | None = None
    windows = tokens = 0

    if method == "random":
        generator = torch.Generator().manual_seed(seed)
        scores = []
        for layer in layers:
            shapes = _weighted_scores(layer, spec, head_dim, lambda p: torch.zeros_like(p, dtype=torch.float32))
            scores.append(
                LayerScores(
                    heads=torch.rand(shapes.heads.shape, generator=generator),
                    kv_heads=torch.rand(shapes.kv_heads.shape, generator=generator),
                    channels=torch.rand(shapes.channels.shape, generator=generator),
                )
            )
        return ImportanceResult(scores, None, 0, 0)
    if method == "magnitude":
        scores = [_weighted_scores(layer, spec, head_dim, lambda p: p.detach().float().pow(2)) for layer in layers]
        return ImportanceResult(scores, None, 0, 0)

    assert input_ids is not None, "data-driven methods need calibration windows"
    device = next(model.parameters()).device
    similarity = _BlockSimilarity(layers)
    if chosen.needs_gradients:
        prunable = _prunable_parameters(model, spec)
        prunable_ids = {id(p) for p in prunable}
        previous = {id(p): p.requires_grad for p in model.parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in prunable_ids)
        # float32 gradients accumulate in .grad itself; lower precisions get a float32 buffer.
        accumulators = {id(p): torch.zeros_like(p, dtype=torch.float32) for p in prunable if p.dtype != torch.float32}
        for p in prunable:
            p.grad = None
        try:
            for batch in _batches(input_ids, batch_size):
                batch = batch.to(device)
                loss = model(input_ids=batch, labels=batch, use_cache=False).loss
                loss.backward()
                for p in prunable:
                    if id(p) in accumulators and p.grad is not None:
                        accumulators[id(p)] += p.grad.float()
                        p.grad = None
                windows += batch.shape[0]
                tokens += batch.numel()
                if progress:
                    progress(batch.shape[0])
        finally:
            for p in model.parameters():
                p.requires_grad_(previous[id(p)])

        def saliency(p: nn.Parameter) -> torch.Tensor:
            gradient = accumulators.get(id(p), p.grad)
            if gradient is None:
                return torch.zeros_like(p, dtype=torch.float32)
            return (p.detach().float() * gradient.float()).abs()

        scores = [_weighted_scores(layer, spec, head_dim, saliency) for layer in layers]
        for p in prunable:
            p.grad = None
        del accumulators
    else:
        norms = _InputNorms(layers, spec)
        try:
            with torch.no_grad():
                for batch in _batches(input_ids, batch_size):
                    model(input_ids=batch.to(device), use_cache=False)
                    windows += batch.shape[0]
                    tokens += batch.numel()
                    if progress:
                        progress(batch.shape[0])
        finally:
            norms.close()
        scores = []
        for index, layer in enumerate(layers):
            o = getattr(attention_of(layer, spec), spec.o_proj)
            down = getattr(mlp_of(layer, spec), spec.down_proj)
            o_rms = (norms.sq[(index, "o")] / tokens).sqrt()
            down_rms = (norms.sq[(index, "down")] / tokens).sqrt()
            heads = (o.weight.detach().float().norm(dim=0) * o_rms).reshape(-1, head_dim).sum(dim=1)
            channels = down.weight.detach().float().norm(dim=0) * down_rms
            # KV heads are scored by the query heads they serve (their own output is not observable here).
            group = heads.numel() // (getattr(attention_of(layer, spec), spec.k_proj).weight.shape[0] // head_dim)
            kv_heads = heads.reshape(-1, group).sum(dim=1)
            scores.append(LayerScores(heads=heads.cpu(), kv_heads=kv_heads.cpu(), channels=channels.cpu()))
    block_importance = similarity.result()
    return ImportanceResult(scores, block_importance, windows, tokens)
