"""The `prune` stage: load, calibrate, score, allocate, cut, save atomically, report.

Orchestration only; the tensor work lives in zhprune_hub/prune/.
"""

from __future__ import annotations

import json
import math
import re
import resource
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from zhprune_hub import __version__
from zhprune_hub.errors import ModelSourceError, RatioError
from zhprune_hub.outputs import atomic_directory

REPORT_NAME = "zhprune_pruning.json"
#: Tokens per block call when --batch-size is not given: big enough for efficient matmuls, small
#: next to the block's weights even at 7B widths.
CALIBRATION_BATCH_TOKENS = 4096
#: Calibration windows by default: 512 × 128 tokens (quality kept improving up to 512 in BENCHMARKS.md).
DEFAULT_NUM_SAMPLES = 512
#: Share of the accumulated residual-stream error each repair undoes (BENCHMARKS.md: 0.5 measured best of 0, 0.5, 1).
DEFAULT_CORRECTION = 0.5


def _device_name(value: str) -> str:
    """Device names torch understands here; checked before anything is loaded."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise PydanticCustomError("device", "should be auto, cpu, mps, cuda or cuda:N")
    return value


class PruneConfig(BaseModel):
    """Everything `zhprune-hub prune` needs; the publish plan validates into the same object."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description="Hub id, local checkpoint directory, or directory holding a GGUF file.")
    output: Path = Field(description="Directory for the pruned checkpoint (written atomically).")
    ratio: float = Field(default=0.2, ge=0.0, lt=1.0, description="Fraction of the model's TOTAL parameters to remove.")
    method: Literal["obs", "taylor", "activation", "magnitude", "random"] = Field(
        default="obs", description="How units are chosen; see zhprune_hub.prune.importance.METHODS."
    )
    repair: bool = Field(
        default=True, description="Re-fit the kept o_proj/down_proj columns by damped least squares after each cut."
    )
    damping: float = Field(
        default=0.001, gt=0.0, le=1.0, description="Least-squares dampening, relative to the mean diagonal of XᵀX."
    )
    correction: float = Field(
        default=DEFAULT_CORRECTION,
        ge=0.0,
        le=1.0,
        description="Share of the residual-stream error accumulated by earlier blocks that each repair undoes "
        "(0 = each projection only reproduces its own dense output).",
    )
    layout: Literal["global", "uniform"] = Field(default="global")
    head_unit: Literal["group", "query", "none"] = Field(
        default="group",
        description="Attention unit: a whole KV group (KV head + its query heads), one query head per group, or "
        "none (attention kept whole; only MLP channels go).",
    )
    calibration: str = Field(default="auto", description="Corpus name, alias, mix or path; auto matches the model.")
    language: Literal["zh", "en"] | None = Field(default=None, description="Language of a calibration file.")
    data_dir: Path | None = None
    num_samples: int = Field(
        default=DEFAULT_NUM_SAMPLES,
        ge=1,
        description="Calibration windows; the repair over-fits fewer tokens (BENCHMARKS.md: 128 → 512 windows).",
    )
    seq_len: int = Field(default=128, ge=2)
    batch_size: int | None = Field(
        default=None, ge=1, description="Calibration windows per block call; default: enough for 4,096 tokens."
    )
    temperature: float = Field(default=1.0, ge=0.0)
    round_to: int = Field(
        default=1, ge=1, le=4096, description="Keep every pruned MLP width a multiple of this (1 = any width)."
    )
    tau: float | None = Field(default=None, ge=0.0, description="Whole-block removal threshold (≥ 0); None = auto.")
    seed: int = 0
    device: Annotated[str, AfterValidator(_device_name)] = Field(
        default="auto", description="auto, cpu, mps, cuda[:N]."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Compute dtype; also the saved dtype of a dequantised GGUF base (auto: bfloat16)."
    )
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


def _calibration(config: PruneConfig, tokenizer: Any, scorer: Any, card_languages: list[str] | None) -> Any:
    from zhprune_hub.data import calibration_windows

    return calibration_windows(
        config.calibration,
        tokenizer,
        num_samples=config.num_samples,
        seq_len=config.seq_len,
        seed=config.seed,
        data_dir=config.data_dir,
        language=config.language,
        model=scorer,
        model_card_languages=card_languages,
    )


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


@dataclass
class _Weights:
    """The base model as a meta-device skeleton plus where its tensors come from."""

    skeleton: Any
    source: Any
    config: Any
    tokenizer: Any
    stored_dtype: Any


def _open_weights(source: Any, config: PruneConfig) -> _Weights:
    """Skeleton and tensor source: safetensors are streamed; anything else is loaded whole once."""
    import torch

    from zhprune_hub.loading import load_model, load_tokenizer, trust_for
    from zhprune_hub.prune.streaming import SafetensorsSource, StateDictSource, empty_model

    trust = trust_for(source, config.trust_remote_code)
    if not source.gguf_file and SafetensorsSource.available(source.local_dir):
        from transformers import AutoConfig

        model_config = AutoConfig.from_pretrained(source.local_dir, trust_remote_code=trust)
        tensors = SafetensorsSource(source.local_dir)
        tokenizer = load_tokenizer(source, trust_remote_code=trust)
        return _Weights(
            empty_model(model_config, trust_remote_code=trust), tensors, model_config, tokenizer, tensors.dtype()
        )
    # GGUF (dequantised by transformers) and pickled checkpoints: the whole model once, in memory,
    # held in the dtype it will be saved in (bfloat16 for GGUF unless --dtype says otherwise).
    from zhprune_hub.preflight import output_dtype

    stored_name = output_dtype(source, config.dtype)
    model, tokenizer = load_model(source, device="cpu", dtype=stored_name, trust_remote_code=trust)
    state = {name: tensor.detach() for name, tensor in model.state_dict().items()}
    stored = getattr(torch, stored_name)
    model_config = model.config
    del model
    return _Weights(
        empty_model(model_config, trust_remote_code=trust), StateDictSource(state), model_config, tokenizer, stored
    )


def _progress_ticker(progress: Any, total_blocks: int) -> Any:
    """Turn the engine's per-block stage ticks into bars: `progress(description, total)` returns an advance."""
    if progress is None:
        return None
    bars: dict[str, Any] = {}
    labels = {
        "forward": "pass 1: forward",
        "backward": "pass 1: gradients",
        "scores": "scores",
        "cut": "pass 2: cut + repair",
    }

    def tick(stage: str) -> None:
        if stage not in bars:
            bars[stage] = progress(labels.get(stage, stage), total_blocks) or (lambda _n: None)
        bars[stage](1)

    return tick


def prune_model(config: PruneConfig, *, progress: Any = None, log: Any = print) -> PruneOutcome:
    """Run the whole prune stage and return where the checkpoint went and its report.

    Args:
        progress: `progress(description, total)` returning an `advance(n)` callable, for bars.

    Raises:
        ZhpruneError: any user-fixable problem (source, ratio, data, output directory).
    """
    from zhprune_hub.preflight import prune_preflight

    source = prune_preflight(config, log=log)  # before any weights are loaded
    import torch

    from zhprune_hub.loading import pick_device, pick_dtype
    from zhprune_hub.prune.allocation import check_round_to
    from zhprune_hub.prune.engine import EngineSettings, StreamedScorer, run_engine
    from zhprune_hub.prune.families import family_for
    from zhprune_hub.prune.importance import METHODS
    from zhprune_hub.prune.layouts import write_config
    from zhprune_hub.prune.reconstruct import RepairSettings
    from zhprune_hub.prune.streaming import Streamer
    from zhprune_hub.prune.structure import count_parameters, head_dim_of, layer_shapes
    from zhprune_hub.prune.traversal import Traversal
    from zhprune_hub.prune.writer import CheckpointWriter

    started = time.perf_counter()
    timings: dict[str, float] = {}
    torch.manual_seed(config.seed)
    weights = _open_weights(source, config)
    model = weights.skeleton
    spec = family_for(model.config.model_type)
    device = torch.device(pick_device(config.device))
    compute_dtype = pick_dtype(config.dtype, str(device))
    streamer = Streamer(model, weights.source, device=device, dtype=compute_dtype)
    batch_size = config.batch_size or max(1, CALIBRATION_BATCH_TOKENS // config.seq_len)
    traversal = Traversal(model, spec, streamer, batch_size=batch_size)
    timings["load_s"] = time.perf_counter() - started

    before = count_parameters(model)
    target = math.ceil(config.ratio * before["total"])
    method = METHODS[config.method]
    head_dim = head_dim_of(model)
    base_shapes = layer_shapes(model, spec)
    check_round_to([shape.intermediate_size for shape in base_shapes], config.round_to)

    calibration = None
    if method.needs_data:
        mark = time.perf_counter()
        scorer = StreamedScorer(traversal)
        calibration = _calibration(config, weights.tokenizer, scorer, card_languages(source.local_dir))
        timings["calibration_data_s"] = time.perf_counter() - mark
        log(
            f"calibration: {calibration.name} ({calibration.language}), {calibration.num_samples} windows × "
            f"{calibration.seq_len} tokens, seed {calibration.seed}"
        )
        if calibration.language_decision is not None:
            log(f"calibration languages: {calibration.language_decision.reason}")

    settings = EngineSettings(
        method=config.method,
        layout=config.layout,
        head_unit=config.head_unit,
        target_removed=target,
        hidden_size=model.config.hidden_size,
        heads_must_divide_hidden=spec.heads_must_divide_hidden,
        repair=RepairSettings(repair=config.repair, damping=config.damping, correction=config.correction),
        temperature=config.temperature,
        tau=config.tau,
        seed=config.seed,
        round_to=config.round_to,
    )
    with atomic_directory(config.output, overwrite=config.overwrite) as staging:
        writer = CheckpointWriter(staging, dtype=weights.stored_dtype, max_shard_size=config.max_shard_size)
        result = run_engine(
            traversal,
            settings,
            input_ids=None if calibration is None else calibration.input_ids,
            head_dim=head_dim,
            writer=writer,
            scratch=staging / ".zhprune-scratch",
            progress=_progress_ticker(progress, len(base_shapes)),
        )
        timings.update(result.seconds)
        plan = result.plan
        _copy_outside_blocks(model, spec, streamer, writer)
        writer.finish()
        after = _counts_written(before, writer)
        layout = write_config(
            weights.config, weights.tokenizer, plan, spec, config.layout, staging, dtype=weights.stored_dtype
        )
        _copy_generation_config(source.local_dir, staging)
        if after["total"] > before["total"] - target:
            raise RatioError(f"The plan removed {before['total'] - after['total']:,} parameters, short of {target:,}.")
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
            allocation=result.allocation,
            evidence=result.evidence,
            repairs=result.repairs,
            calibration=calibration,
            timings=timings,
        )
        (staging / REPORT_NAME).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return PruneOutcome(output=config.output.expanduser().resolve(), report=report)


def _copy_outside_blocks(model: Any, spec: Any, streamer: Any, writer: Any) -> None:
    """Embeddings, final norm and (untied) output head go to the output unchanged."""
    prefix = f"{spec.layers_path}."
    tied = getattr(model.config, "tie_word_embeddings", False)
    names = [
        name
        for name, _ in model.named_parameters(remove_duplicate=False)
        if not name.startswith(prefix) and not (tied and name == "lm_head.weight")
    ]
    for name in names:
        writer.add({name: streamer.tensor(name)})


def _copy_generation_config(base_dir: Path, staging: Path) -> None:
    generation = base_dir / "generation_config.json"
    if generation.exists():
        shutil.copyfile(generation, staging / generation.name)


def _counts_written(before: dict[str, int], writer: Any) -> dict[str, int]:
    """Counts of what the checkpoint files hold (a tied head is stored once); embeddings never change."""
    embedding = before["total"] - before["non_embedding"]
    return {"total": writer.parameter_count, "non_embedding": writer.parameter_count - embedding}


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
    evidence: Any,
    repairs: list[dict[str, Any]],
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
        "repair": _repair_summary(config, repairs),
        "layout_requested": config.layout,
        "layout": layout,
        "head_unit": config.head_unit,
        "ratio": config.ratio,
        "seed": config.seed,
        "temperature": config.temperature,
        "tau": allocation.tau,
        "round_to": config.round_to,
        "rounding": allocation.rounding,
        "parameters": parameter_summary(before, after, target),
        "calibration": None if calibration is None else calibration.report(),
        "removed_blocks": plan.removed_blocks,
        "layer_prior": allocation.layer_prior,
        "block_importance": evidence.block_importance,
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
                "repair": {name: asdict(record) for name, record in repair.items()},
                "base": {
                    "num_heads": shape.num_heads,
                    "num_kv_heads": shape.num_kv_heads,
                    "intermediate_size": shape.intermediate_size,
                },
            }
            for lp, shape, repair in zip(plan.layers, base_shapes, repairs, strict=True)
        ],
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "memory": {k: round(v, 1) for k, v in peak_memory_mb().items()},
        "options": json.loads(config.model_dump_json()),
    }


def _repair_summary(config: PruneConfig, repairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether kept weights were re-fitted, and by how much that cut the per-block output error."""
    summary: dict[str, Any] = {
        "enabled": config.repair,
        "damping": config.damping,
        "stream_correction": config.correction if config.repair else 0.0,
        "solver": "damped least squares",
    }
    for name in ("o_proj", "down_proj"):
        records = [r[name] for r in repairs if name in r]
        if records:
            summary[name] = {
                "mean_relative_error_cut": sum(r.error_cut for r in records) / len(records),
                "mean_relative_error_repaired": sum(r.error_repaired for r in records) / len(records),
            }
    return summary


def read_report(directory: Path) -> dict[str, Any]:
    path = Path(directory) / REPORT_NAME
    if not path.exists():
        raise ModelSourceError(f"{directory} has no {REPORT_NAME}; it was not written by `zhprune-hub prune`.")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"{path} is damaged ({exc}); prune the model again.") from None
    if not isinstance(report, dict):
        raise ModelSourceError(f"{path} is not a pruning report (not a JSON object); prune the model again.")
    return report
