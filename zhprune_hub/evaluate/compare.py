"""Put models side by side: the results file (with deltas) and the table a reader sees."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from typing import Any

from zhprune_hub import __version__
from zhprune_hub.errors import EvaluationError
from zhprune_hub.results import (
    Delta,
    Environment,
    EvaluationResults,
    ModelResults,
    Protocol,
    compute_deltas,
)


def environment() -> Environment:
    import torch
    import transformers

    try:
        import lm_eval

        lm_eval_version: str | None = lm_eval.__version__
    except ImportError:
        lm_eval_version = None
    return Environment(
        zhprune_hub=__version__,
        python=platform.python_version(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        lm_eval=lm_eval_version,
    )


def compare(
    reference: ModelResults, others: list[ModelResults], *, protocol: Protocol | None = None
) -> EvaluationResults:
    """The results document: `reference` first, then `others`, with every shared metric's delta.

    Raises:
        EvaluationError: two models share a model_id (their deltas could not be told apart).
    """
    ids = [reference.model_id, *(o.model_id for o in others)]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise EvaluationError(f"Model {duplicates[0]!r} appears more than once; pass each model once.")
    if protocol is None:
        protocol = Protocol(device=reference.device, dtype=reference.dtype, batch_size="auto")
    return EvaluationResults(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        reference=reference.model_id,
        models=[reference, *others],
        deltas=compute_deltas(reference, others),
        protocol=protocol,
        environment=environment(),
    )


# --- the table -----------------------------------------------------------------------------------

_LABELS = {"ppl": "PPL", "acc": "acc", "acc_norm": "acc_norm"}


def metric_label(key: str) -> str:
    kind, _, name = key.partition("/")
    arrow = "↓" if kind == "ppl" else "↑"
    return f"{_LABELS.get(kind, kind)} {name} {arrow}"


def _value(key: str, value: float, stderr: float | None) -> str:
    if key.startswith("ppl/"):
        text = f"{value:.2f}"
        return f"{text} ± {stderr:.2f}" if stderr is not None else text
    text = f"{value * 100:.1f}"
    return f"{text} ± {stderr * 100:.1f}" if stderr is not None else text


def format_delta(delta: Delta) -> str:
    """`+2.31 (+16.9%) worse`: the sign is value - reference, the word says whether that is good."""
    absolute = f"{delta.absolute:+.2f}" if delta.metric.startswith("ppl/") else f"{delta.absolute * 100:+.1f} pt"
    relative = f" ({delta.relative * 100:+.1f}%)" if delta.relative is not None else ""
    return f"{absolute}{relative} {delta.change}"


def render_table(results: EvaluationResults) -> Any:
    """A rich Table: one row per metric, the reference's value, then each other model's value and delta."""
    from rich.table import Table

    colours = {"better": "green", "worse": "red", "same": "dim"}
    table = Table(
        title="Evaluation (↓ lower is better, ↑ higher is better; Δ = model − reference)",
        caption=_caption(results),
        show_lines=False,
    )
    # Numbers are folded onto a second line when space runs out, never cut to "…".
    table.add_column("metric", style="bold", overflow="fold")
    ref = results.models[0]
    table.add_column(f"{ref.model_id}\n(reference)", justify="right", overflow="fold")
    others = results.models[1:]
    for other in others:
        table.add_column(other.model_id, justify="right", overflow="fold")
        table.add_column(f"Δ {other.model_id}", justify="right", overflow="fold")
    by_key = {(d.model_id, d.metric): d for d in results.deltas}
    keys: list[str] = list(ref.metrics())
    for other in others:
        keys += [k for k in other.metrics() if k not in keys]
    table.add_row("parameters", f"{ref.parameters / 1e6:.1f} M", *_param_cells(ref, others))
    for key in keys:
        row = [metric_label(key)]
        ref_metric = ref.metrics().get(key)
        row.append(_value(key, ref_metric.value, ref_metric.stderr) if ref_metric else "—")
        for other in others:
            metric = other.metrics().get(key)
            row.append(_value(key, metric.value, metric.stderr) if metric else "—")
            delta = by_key.get((other.model_id, key))
            row.append(f"[{colours[delta.change]}]{format_delta(delta)}[/]" if delta else "—")
        table.add_row(*row)
    return table


def _param_cells(ref: ModelResults, others: list[ModelResults]) -> list[str]:
    cells = []
    for other in others:
        cells.append(f"{other.parameters / 1e6:.1f} M")
        change = (other.parameters - ref.parameters) / ref.parameters * 100 if ref.parameters else 0.0
        cells.append(f"{change:+.1f}%")
    return cells


def _caption(results: EvaluationResults) -> str:
    parts = []
    p = results.protocol.perplexity
    if p is not None:
        used = {r.seq_len for m in results.models for r in m.perplexity}
        tokens = {r.dataset: r.tokens_evaluated for r in results.models[0].perplexity}
        counts = ", ".join(f"{name} {count:,}" for name, count in tokens.items())
        parts.append(f"PPL: seq len {'/'.join(map(str, sorted(used))) or p.seq_len}, tokens {counts}")
    z = results.protocol.zeroshot
    if z is not None:
        limit = f"limit {z.limit}" if z.limit is not None else "full splits"
        parts.append(f"zero-shot: lm-eval {z.lm_eval_version}, {z.task_source} tasks, {limit}; acc ± stderr in %")
    return "; ".join(parts)
