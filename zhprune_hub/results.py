"""The one results schema: written by `evaluate`, read by `publish`, the model card and the Action.

A results file holds one reference model and any number of others evaluated with the same
protocol, every metric with its standard error, and the deltas of each other model against the
reference. `schema_version` changes whenever a field changes meaning or disappears; adding an
optional field keeps it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zhprune_hub.errors import EvaluationError

SCHEMA_VERSION = 1

Better = Literal["lower", "higher"]
Change = Literal["better", "worse", "same"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PerplexityResult(_Frozen):
    """Perplexity of one model on one text: exp(mean NLL over every predicted token)."""

    dataset: str = Field(description="Corpus name, e.g. wikitext2, ptb, c4_zh.")
    source: str = Field(description="Where the text came from: a local file path or a Hub dataset id.")
    language: str = Field(description="Language of the text, e.g. en or zh.")
    perplexity: float = Field(description="exp(mean NLL); lower is better.")
    perplexity_stderr: float | None = Field(
        description="Delta-method standard error from the spread of per-window NLLs; null with one window."
    )
    nll: float = Field(description="Mean negative log-likelihood per predicted token, in nats.")
    seq_len: int = Field(description="Window length actually used (the requested one capped at the model context).")
    windows: int = Field(description="Number of non-overlapping windows evaluated.")
    tokens_evaluated: int = Field(description="Tokens inside the evaluated windows.")
    tokens_predicted: int = Field(description="Tokens whose NLL was averaged: windows * (seq_len - 1).")
    tokens_total: int = Field(description="Tokens in the whole tokenized text (before --max-tokens and tail drop).")
    seconds: float = Field(description="Wall time of the forward passes.")
    tokens_per_second: float = Field(description="tokens_evaluated / seconds.")


class ZeroShotSubtask(_Frozen):
    """One leaf of a task group, e.g. one CMMLU subject."""

    task: str
    acc: float
    acc_stderr: float | None
    acc_norm: float | None = None
    samples: int


class ZeroShotResult(_Frozen):
    """One lm-eval multiple-choice task, zero-shot."""

    task: str = Field(description="Task name: boolq, piqa, hellaswag, winogrande, arc_easy, xcopa_zh, cmmlu.")
    acc: float
    acc_stderr: float | None
    acc_norm: float | None = Field(default=None, description="Length-normalised accuracy; null where lm-eval has none.")
    acc_norm_stderr: float | None = None
    samples: int = Field(description="Items scored (after --limit).")
    samples_total: int = Field(description="Items in the split.")
    source: Literal["hub", "local"] = Field(description="hub: lm-eval's own task; local: generated from data files.")
    data_source: str = Field(description="Hub dataset id or local file the items came from.")
    seconds: float
    data_sha256: str | None = Field(
        default=None,
        description="sha256 of the local data file(s) scored; several files: bytes concatenated in path order.",
    )
    subtasks: list[ZeroShotSubtask] | None = Field(
        default=None,
        description="Per-leaf results of a group (cmmlu: one per subject); acc is their size-weighted mean.",
    )


class ZeroShotMean(_Frozen):
    """Unweighted mean over tasks; stderr assumes independent tasks."""

    tasks: list[str]
    acc: float
    acc_stderr: float | None
    acc_norm: float = Field(description="Mean of acc_norm where a task has it, else its acc (the usual table column).")
    acc_norm_stderr: float | None


class Timings(_Frozen):
    load_s: float | None = None
    perplexity_s: float = 0.0
    zeroshot_s: float = 0.0
    total_s: float = 0.0


class ModelResults(_Frozen):
    """Everything measured on one model."""

    model_id: str = Field(description="What the user passed: Hub id or local path.")
    revision: str | None = None
    commit: str | None = Field(default=None, description="Resolved Hub commit, when pulled from the Hub.")
    architecture: str | None = None
    layout: Literal["stock", "global"] = Field(
        default="stock", description="global: per-layer widths loaded with trust_remote_code."
    )
    trust_remote_code: bool = False
    parameters: int = Field(description="Number of parameters (embeddings included, tied weights once).")
    device: str
    dtype: str
    perplexity: list[PerplexityResult] = Field(default_factory=list)
    zeroshot: list[ZeroShotResult] = Field(default_factory=list)
    zeroshot_mean: ZeroShotMean | None = None
    timings: Timings = Field(default_factory=Timings)
    languages: dict[str, Any] | None = Field(
        default=None,
        description="The language rule's decision that picked the default corpora/tasks (zhprune_hub.data.language).",
    )

    def metrics(self) -> dict[str, Metric]:
        """Every scalar metric under a stable key (`ppl/wikitext2`, `acc/piqa`, `acc_norm/mean`, ...)."""
        out: dict[str, Metric] = {}
        for p in self.perplexity:
            out[f"ppl/{p.dataset}"] = Metric(value=p.perplexity, stderr=p.perplexity_stderr, better="lower")
        for z in self.zeroshot:
            out[f"acc/{z.task}"] = Metric(value=z.acc, stderr=z.acc_stderr, better="higher")
            if z.acc_norm is not None:
                out[f"acc_norm/{z.task}"] = Metric(value=z.acc_norm, stderr=z.acc_norm_stderr, better="higher")
        if self.zeroshot_mean is not None:
            m = self.zeroshot_mean
            out["acc/mean"] = Metric(value=m.acc, stderr=m.acc_stderr, better="higher")
            out["acc_norm/mean"] = Metric(value=m.acc_norm, stderr=m.acc_norm_stderr, better="higher")
        return out


class Metric(_Frozen):
    value: float
    stderr: float | None = None
    better: Better


class Delta(_Frozen):
    """One metric of one model against the reference: absolute = value - reference."""

    model_id: str
    metric: str = Field(description="Key from ModelResults.metrics(), e.g. ppl/wikitext2 or acc/piqa.")
    better: Better = Field(description="Which direction is an improvement for this metric.")
    reference: float
    value: float
    absolute: float
    relative: float | None = Field(description="absolute / reference; null when the reference is 0.")
    change: Change = Field(description="better / worse / same, judged with the metric's direction.")


class PerplexityProtocol(_Frozen):
    datasets: list[str]
    seq_len: int = Field(description="Requested window length (each result records the one used).")
    max_tokens: int | None = Field(description="Prefix of the tokenized text evaluated; null = all of it.")
    windows: Literal["non-overlapping"] = "non-overlapping"
    tail: Literal["dropped"] = "dropped"


class ZeroShotProtocol(_Frozen):
    tasks: list[str]
    limit: int | None = Field(description="Items per task (lm-eval --limit); null = full split.")
    num_fewshot: int = 0
    task_source: Literal["hub", "local"]
    lm_eval_version: str


class Protocol(_Frozen):
    device: str
    dtype: str
    batch_size: str
    perplexity: PerplexityProtocol | None = None
    zeroshot: ZeroShotProtocol | None = None


class Environment(_Frozen):
    zhprune_hub: str
    python: str
    torch: str
    transformers: str
    lm_eval: str | None = None


class EvaluationResults(_Frozen):
    """The results file: a reference model, the others, and their deltas against it."""

    schema_version: int = SCHEMA_VERSION
    created_at: str = Field(description="UTC ISO-8601 time the file was written.")
    reference: str = Field(description="model_id of the reference (always models[0]).")
    models: list[ModelResults] = Field(min_length=1)
    deltas: list[Delta] = Field(default_factory=list)
    protocol: Protocol
    environment: Environment

    def model(self, model_id: str) -> ModelResults:
        for m in self.models:
            if m.model_id == model_id:
                return m
        raise EvaluationError(
            f"Model {model_id!r} is not in these results; it holds {', '.join(m.model_id for m in self.models)}."
        )


def _change(absolute: float, better: Better, *, rel_tol: float = 1e-9) -> Change:
    if abs(absolute) <= rel_tol:
        return "same"
    improved = absolute < 0 if better == "lower" else absolute > 0
    return "better" if improved else "worse"


def compute_deltas(reference: ModelResults, others: list[ModelResults]) -> list[Delta]:
    """Deltas of every metric the reference and another model share, signed as value - reference."""
    ref = reference.metrics()
    deltas: list[Delta] = []
    for other in others:
        for key, metric in other.metrics().items():
            base = ref.get(key)
            if base is None or not math.isfinite(base.value) or not math.isfinite(metric.value):
                continue
            absolute = metric.value - base.value
            deltas.append(
                Delta(
                    model_id=other.model_id,
                    metric=key,
                    better=metric.better,
                    reference=base.value,
                    value=metric.value,
                    absolute=absolute,
                    relative=absolute / base.value if base.value != 0 else None,
                    change=_change(absolute, metric.better),
                )
            )
    return deltas


def save_results(results: EvaluationResults, path: str | Path) -> Path:
    """Write the results JSON atomically (the project's one atomic writer), readable by everyone."""
    from zhprune_hub.outputs import write_atomically

    return write_atomically(path, results.model_dump_json(indent=2) + "\n")


def load_results(path: str | Path) -> EvaluationResults:
    """Read and validate a results file.

    Raises:
        EvaluationError: the file is missing, not JSON, of another schema version, or invalid.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvaluationError(f"Results file {str(path)!r} does not exist; run `zhprune-hub evaluate` first.") from None
    except json.JSONDecodeError as exc:
        raise EvaluationError(
            f"Results file {str(path)!r} is not valid JSON ({exc.msg} at line {exc.lineno}); re-run `zhprune-hub evaluate`."
        ) from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise EvaluationError(
            f"Results file {str(path)!r} has schema_version {version!r} but this zhprune-hub reads "
            f"{SCHEMA_VERSION}; re-run `zhprune-hub evaluate` with this version."
        )
    try:
        return EvaluationResults.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise EvaluationError(
            f"Results file {str(path)!r} is invalid at {where!r} ({first['msg']}); re-run `zhprune-hub evaluate`."
        ) from None
