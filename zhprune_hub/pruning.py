"""The `prune` stage: load, calibrate, score, allocate, cut, save atomically, report.

Orchestration only; the tensor work lives in zhprune_hub/prune/.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from zhprune_hub import __version__
from zhprune_hub.errors import ModelSourceError, RatioError, ZhpruneError

REPORT_NAME = "zhprune_pruning.json"


class PruneConfig(BaseModel):
    """Everything `zhprune-hub prune` needs; the publish plan validates into the same object."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="Hub id, local checkpoint directory, or directory holding a GGUF file.")
    output: Path = Field(description="Directory for the pruned checkpoint (written atomically).")
    ratio: float = Field(default=0.2, ge=0.0, lt=1.0, description="Fraction of the model's TOTAL parameters to remove.")
    method: Literal["taylor", "activation", "magnitude", "random"] = Field(default="taylor")
    layout: Literal["global", "uniform"] = Field(default="global")
    head_unit: Literal["group", "query"] = Field(
        default="group",
        description="Attention unit: a whole KV group (KV head + its query heads) or one query head per group.",
    )
    calibration: str = Field(default="auto", description="Corpus name, alias, mix or path; auto matches the model.")
    language: Literal["zh", "en"] | None = Field(default=None, description="Language of a calibration file.")
    data_dir: Path | None = None
    num_samples: int = Field(default=128, ge=1)
    seq_len: int = Field(default=128, ge=2)
    batch_size: int = Field(default=1, ge=1)
    temperature: float = Field(default=1.0, ge=0.0)
    tau: float | None = Field(default=None, description="Whole-block removal threshold; None = auto.")
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    gguf_file: str | None = None
    revision: str | None = None
    trust_remote_code: bool | None = None
    max_shard_size: str = "1GB"
    overwrite: bool = False

    @field_validator("tau", mode="before")
    @classmethod
    def _tau_literal_none(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in {"none", "auto", ""}:
            return None
        return value


@dataclass
class PruneOutcome:
    output: Path
    report: dict[str, Any]


def peak_memory_mb() -> dict[str, float]:
    """Peak resident memory of this process (and of the GPU, where one was used), in MiB."""
    import torch

    peaks = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peaks["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return peaks


def make_shareable(directory: Path) -> None:
    """Give a finished checkpoint the usual 0755/0644 modes.

    mkdtemp and transformers' shard writer create 0700/0600 entries, which leaves the checkpoint
    unreadable to the other users of a shared runner or a serving container.
    """
    directory.chmod(0o755)
    for path in directory.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


@contextmanager
def atomic_directory(target: Path, *, overwrite: bool):
    """Yield a staging directory beside `target`; rename it into place only if the block succeeds."""
    target = target.expanduser().resolve()
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise ZhpruneError(
            f"Output directory {target} already exists and is not empty; pass --overwrite or choose another."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield staging
        make_shareable(staging)
        if target.exists():
            backup = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(backup)
            staging.rename(target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _calibration(config: PruneConfig, tokenizer: Any, model: Any, card_languages: list[str] | None) -> Any:
    from zhprune_hub.data import calibration_windows

    return calibration_windows(
        config.calibration,
        tokenizer,
        num_samples=config.num_samples,
        seq_len=config.seq_len,
        seed=config.seed,
        data_dir=config.data_dir,
        language=config.language,
        model=model,
        model_card_languages=card_languages,
    )


def _saved_dtype(source: Any) -> str:
    """The dtype the base checkpoint was stored in; the pruned one is saved the same way."""
    from zhprune_hub.loading import read_config

    if source.gguf_file:
        return "float32"
    config = read_config(source.local_dir)
    value = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    return value if value in {"float32", "bfloat16", "float16"} else "float32"


def card_languages(local_dir: Path) -> list[str] | None:
    """The `language` list of the base model's card metadata, if it has one."""
    readme = local_dir / "README.md"
    if not readme.exists():
        return None
    from huggingface_hub import ModelCard

    try:
        languages = ModelCard.load(readme).data.language
    except Exception:
        return None
    if isinstance(languages, str):
        return [languages]
    return list(languages) if languages else None


def prune_model(config: PruneConfig, *, progress: Any = None, log: Any = print) -> PruneOutcome:
    """Run the whole prune stage and return where the checkpoint went and its report.

    Raises:
        ZhpruneError: any user-fixable problem (source, ratio, data, output directory).
    """
    import torch

    from zhprune_hub.loading import load_model, resolve_source
    from zhprune_hub.prune.allocation import allocate
    from zhprune_hub.prune.families import family_for
    from zhprune_hub.prune.importance import METHODS, compute_importance
    from zhprune_hub.prune.layouts import save_checkpoint
    from zhprune_hub.prune.structure import count_parameters, decoder_layers, head_dim_of, layer_shapes, unit_costs

    started = time.perf_counter()
    timings: dict[str, float] = {}
    torch.manual_seed(config.seed)
    source = resolve_source(config.model, revision=config.revision, gguf_file=config.gguf_file)
    model, tokenizer = load_model(
        source, device=config.device, dtype=config.dtype, trust_remote_code=config.trust_remote_code
    )
    spec = family_for(model.config.model_type)
    base_dtype = _saved_dtype(source)
    timings["load_s"] = time.perf_counter() - started

    before = count_parameters(model)
    target = math.ceil(config.ratio * before["total"])
    method = METHODS[config.method]

    calibration = None
    if method.needs_data:
        mark = time.perf_counter()
        calibration = _calibration(config, tokenizer, model, card_languages(source.local_dir))
        timings["calibration_data_s"] = time.perf_counter() - mark
        log(
            f"calibration: {calibration.name} ({calibration.language}), {calibration.num_samples} windows × "
            f"{calibration.seq_len} tokens, seed {calibration.seed}"
        )

    mark = time.perf_counter()
    importance = compute_importance(
        model,
        spec,
        config.method,
        input_ids=None if calibration is None else calibration.input_ids,
        seed=config.seed,
        batch_size=config.batch_size,
        progress=progress,
    )
    timings["importance_s"] = time.perf_counter() - mark

    head_dim = head_dim_of(model)
    layers = decoder_layers(model, spec)
    base_shapes = layer_shapes(model, spec)
    plan, allocation = allocate(
        importance.layers,
        base_shapes,
        [unit_costs(layer, spec, head_dim) for layer in layers],
        target_removed=target,
        layout=config.layout,
        head_unit=config.head_unit,
        head_dim=head_dim,
        hidden_size=model.config.hidden_size,
        heads_must_divide_hidden=spec.heads_must_divide_hidden,
        temperature=config.temperature,
        tau=config.tau,
        block_importance=importance.block_importance,
    )

    from zhprune_hub.prune.surgery import apply_plan

    mark = time.perf_counter()
    apply_plan(model, plan, spec)
    after = count_parameters(model)
    timings["surgery_s"] = time.perf_counter() - mark
    if after["total"] > before["total"] - target:
        raise RatioError(f"The plan removed {before['total'] - after['total']:,} parameters, short of {target:,}.")

    mark = time.perf_counter()
    model.to(getattr(torch, base_dtype, torch.float32))
    with atomic_directory(config.output, overwrite=config.overwrite) as staging:
        layout = save_checkpoint(
            model, tokenizer, plan, spec, config.layout, staging, max_shard_size=config.max_shard_size
        )
        timings["save_s"] = time.perf_counter() - mark
        timings["total_s"] = time.perf_counter() - started
        report = build_report(
            config,
            source=source,
            family=spec.name,
            layout=layout,
            before=before,
            after=after,
            target=target,
            plan=plan,
            base_shapes=base_shapes,
            allocation=allocation,
            importance=importance,
            calibration=calibration,
            timings=timings,
        )
        (staging / REPORT_NAME).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return PruneOutcome(output=config.output.expanduser().resolve(), report=report)


def parameter_summary(before: dict[str, int], after: dict[str, int], target: int) -> dict[str, Any]:
    """Counts before/after (total and non-embedding), what went, and what the ratio asked for."""
    return {
        "before": before,
        "after": after,
        "removed": {k: before[k] - after[k] for k in before},
        "removed_fraction_of_total": (before["total"] - after["total"]) / before["total"],
        "target_removed": target,
    }


def build_report(
    config: PruneConfig,
    *,
    source: Any,
    family: str,
    layout: str,
    before: dict[str, int],
    after: dict[str, int],
    target: int,
    plan: Any,
    base_shapes: list[Any],
    allocation: Any,
    importance: Any,
    calibration: Any,
    timings: dict[str, float],
) -> dict[str, Any]:
    """The zhprune_pruning.json document: enough to audit and reproduce the run."""
    return {
        "schema_version": 1,
        "tool": {"name": "zhprune-hub", "version": __version__},
        "base_model": {"reference": source.reference, "revision": source.revision, "commit": source.commit},
        "family": family,
        "method": config.method,
        "layout_requested": config.layout,
        "layout": layout,
        "head_unit": config.head_unit,
        "ratio": config.ratio,
        "seed": config.seed,
        "temperature": config.temperature,
        "tau": allocation.tau,
        "parameters": parameter_summary(before, after, target),
        "calibration": None if calibration is None else calibration.report(),
        "removed_blocks": plan.removed_blocks,
        "layer_prior": allocation.layer_prior,
        "block_importance": importance.block_importance,
        "notes": allocation.notes,
        "layers": [
            {
                "index": lp.index,
                "removed": lp.removed,
                "num_heads": lp.num_heads,
                "num_kv_heads": lp.num_kv_heads,
                "intermediate_size": lp.intermediate_size,
                "kept_heads": lp.kept_heads,
                "kept_kv_heads": lp.kept_kv_heads,
                "kept_channels": lp.kept_channels,
                "base": {
                    "num_heads": shape.num_heads,
                    "num_kv_heads": shape.num_kv_heads,
                    "intermediate_size": shape.intermediate_size,
                },
            }
            for lp, shape in zip(plan.layers, base_shapes, strict=True)
        ],
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "memory": {k: round(v, 1) for k, v in peak_memory_mb().items()},
        "options": json.loads(config.model_dump_json()),
    }


def read_report(directory: Path) -> dict[str, Any]:
    path = Path(directory) / REPORT_NAME
    if not path.exists():
        raise ModelSourceError(f"{directory} has no {REPORT_NAME}; it was not written by `zhprune-hub prune`.")
    return json.loads(path.read_text())
