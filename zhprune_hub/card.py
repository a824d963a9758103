"""The model card: a typed context, metadata through ModelCardData/EvalResult, a strict jinja2 template.

`ModelCard.from_template` renders with a lenient jinja2 environment (a misspelt variable becomes
an empty string), so the template is rendered here with `StrictUndefined` and the result wrapped
in `ModelCard(content)`; the metadata block is still `ModelCardData.to_yaml()`. Validation is
offline: `ModelCard.validate()` posts to a hard-coded huggingface.co URL whatever the endpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from zhprune_hub import __version__
from zhprune_hub.errors import ZhpruneError
from zhprune_hub.layer_plot import PLOT_NAME, kept_per_layer, plot_layers
from zhprune_hub.results import EvaluationResults, ModelResults

if TYPE_CHECKING:
    from huggingface_hub import ModelCard, ModelCardData

TEMPLATE_NAME = "modelcard.md.j2"
#: Inside the package (a link to the repo's templates/ in a checkout, real files in the wheel).
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
BASE_TAGS = ("pruned", "structured-pruning", "zhprune-hub")
REQUIRED_METADATA = ("tags", "library_name", "pipeline_tag", "model-index")


class CardError(ZhpruneError):
    """A model card could not be rendered or does not parse back."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LanguageRow(_Frozen):
    """One language of the language rule's measurement, as the card shows it."""

    language: str
    corpus: str
    model_bits_per_byte: float
    compressor_bits_per_byte: float
    normalised: float
    competent: bool


class CalibrationContext(_Frozen):
    name: str
    sources: list[str]
    language: str
    reason: str
    languages: list[str] = Field(default_factory=list)
    language_rows: list[LanguageRow] = Field(default_factory=list)
    num_samples: int
    seq_len: int
    seed: int
    token_hash: str
    datasets: list[str]


class ProtocolContext(_Frozen):
    device: str
    dtype: str
    ppl_datasets: list[str]
    ppl_seq_len: int | None
    ppl_tokens: str
    max_tokens: int | None
    tasks: list[str]
    limit: int | None
    task_source: str | None
    #: `task sha256…` of every zero-shot data set read from local files (paths are never shown).
    task_digests: list[str] = Field(default_factory=list)
    lm_eval_version: str | None


class OpenVinoContext(_Frozen):
    """An OpenVINO export shipped in a subfolder (written by `zhprune-hub export`), for the usage snippet."""

    subfolder: str
    weights: str
    ppl_corpus: str
    ppl_pytorch: float
    ppl_exported: float
    ppl_increase: float


class CardContext(_Frozen):
    """Every value the template reads; a missing one is an error, never an empty string."""

    repo_id: str
    model_name: str
    base_model: str | None
    base_reference: str
    base_commit: str | None
    method: str
    method_description: str
    method_reference: str
    layout: str
    head_unit: str
    ratio: float
    temperature: float
    tau: float | None
    round_to: int
    #: The report's `repair` record: enabled, damping, stream_correction, mean errors per projection.
    repair: dict[str, Any]
    params_before: int
    params_after: int
    removed_fraction: float
    non_embedding_before: int
    non_embedding_after: int
    num_layers: int
    removed_blocks: list[int]
    heads_kept: int
    heads_total: int
    channels_kept: int
    channels_total: int
    metrics_table: str
    headline: str
    plot_file: str
    calibration: CalibrationContext | None
    trust_remote_code: bool
    command: str
    protocol: ProtocolContext
    tool_version: str
    license: str | None
    license_name: str | None = None
    license_link: str | None = None
    licence_files: list[str] = []
    language: list[str]
    limitations: list[str]
    openvino: OpenVinoContext | None = None


# --- the metrics table -----------------------------------------------------------------------------


def pruned_results(results: EvaluationResults, pruned_id: str | None = None) -> ModelResults:
    """The pruned model of a results file: `pruned_id`, or the one model besides the reference."""
    if pruned_id is not None:
        return results.model(pruned_id)
    others = results.models[1:]
    if len(others) != 1:
        raise CardError(
            f"The results hold {len(others)} models besides the reference {results.reference!r}; "
            "a card needs exactly one pruned model, so evaluate base and pruned together."
        )
    return others[0]


def _fmt(metric: str, value: float, *, sign: bool = False) -> str:
    digits = 3 if metric.startswith("ppl/") else 4
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def metric_name(metric: str) -> str:
    kind, _, name = metric.partition("/")
    label = {"ppl": "perplexity", "acc": "accuracy", "acc_norm": "accuracy (norm)"}.get(kind, kind)
    return f"{label} {name} {'↓' if kind == 'ppl' else '↑'}"


def metrics_table(results: EvaluationResults, pruned_id: str | None = None) -> str:
    """Markdown: every metric of base and pruned, the absolute and relative change, and its direction."""
    base = results.models[0]
    pruned = pruned_results(results, pruned_id)
    deltas = {d.metric: d for d in results.deltas if d.model_id == pruned.model_id}
    lines = [
        "| metric | base | pruned | Δ absolute | Δ relative | change |",
        "|---|---:|---:|---:|---:|---|",
    ]
    removed = pruned.parameters - base.parameters
    rel = f"{removed / base.parameters * 100:+.2f}%" if base.parameters else "—"
    lines.append(f"| parameters | {base.parameters:,} | {pruned.parameters:,} | {removed:+,} | {rel} | smaller |")
    base_metrics, pruned_metrics = base.metrics(), pruned.metrics()
    for key in [*base_metrics, *(k for k in pruned_metrics if k not in base_metrics)]:
        b, p, d = base_metrics.get(key), pruned_metrics.get(key), deltas.get(key)
        cells = [
            metric_name(key),
            _fmt(key, b.value) if b else "—",
            _fmt(key, p.value) if p else "—",
            _fmt(key, d.absolute, sign=True) if d else "—",
            f"{d.relative * 100:+.2f}%" if d and d.relative is not None else "—",
            d.change if d else "—",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def headline_ppl_delta(results: EvaluationResults, pruned_id: str | None = None) -> float | None:
    """Relative change of the first perplexity, pruned vs base (0.12 = +12%); None without one."""
    pruned = pruned_results(results, pruned_id)
    for delta in results.deltas:
        if delta.model_id == pruned.model_id and delta.metric.startswith("ppl/"):
            return delta.relative
    return None


def _headline(results: EvaluationResults, pruned: ModelResults) -> str:
    for delta in results.deltas:
        if delta.model_id == pruned.model_id and delta.metric.startswith("ppl/"):
            rel = f" ({delta.relative * 100:+.1f}%)" if delta.relative is not None else ""
            return (
                f"perplexity on {delta.metric.partition('/')[2]} went from {delta.reference:.2f} "
                f"to {delta.value:.2f}{rel}"
            )
    mean = pruned.metrics().get("acc/mean")
    if mean is not None:
        return f"mean zero-shot accuracy is {mean.value * 100:.1f}%"
    return "no evaluation was run"


# --- building the context --------------------------------------------------------------------------


def _dataset_ids(calibration: dict[str, Any]) -> list[str]:
    """Hub dataset ids of the registered corpora in a calibration spec (files have none)."""
    from zhprune_hub.data.registry import parse_spec

    try:
        parts = parse_spec(calibration["name"]) or []
    except Exception:
        return []
    ids = []
    for part in parts:
        corpus = getattr(part, "corpus", None)
        if corpus is not None and corpus.calibration is not None and corpus.calibration.hub.dataset not in ids:
            ids.append(corpus.calibration.hub.dataset)
    return ids


def _calibration(report: dict[str, Any]) -> CalibrationContext | None:
    cal = report.get("calibration")
    if not cal:
        return None
    decision = cal.get("language_decision") or {}
    if decision.get("how") == "measured":
        mix = " (an equal-weight mix)" if len(decision["languages"]) > 1 else ""
        reason = f"`auto` calibrated on {cal['language']} text{mix} because {decision['reason']}"
    elif decision.get("reason"):
        reason = f"`auto` used {cal['language']} text because {decision['reason']}"
    else:
        reason = f"chosen explicitly as `{cal['spec']}` ({cal['language']} text)"
    figures = decision.get("figures") or {}
    rows = [
        LanguageRow(
            language=language,
            corpus=figure["corpus"],
            model_bits_per_byte=figure["model_bits_per_byte"],
            compressor_bits_per_byte=figure["compressor_bits_per_byte"],
            normalised=figure["normalised"],
            competent=language in decision.get("languages", []),
        )
        for language, figure in figures.items()
    ]
    return CalibrationContext(
        name=cal["name"],
        sources=[str(s) for s in cal["sources"]],
        language=cal["language"],
        reason=reason,
        languages=list(decision.get("languages") or cal["language"].split("+")),
        language_rows=rows,
        num_samples=cal["num_samples"],
        seq_len=cal["seq_len"],
        seed=cal["seed"],
        token_hash=cal["token_hash"],
        datasets=_dataset_ids(cal),
    )


def _protocol(results: EvaluationResults) -> ProtocolContext:
    p, z = results.protocol.perplexity, results.protocol.zeroshot
    tokens = ", ".join(f"{r.dataset} {r.tokens_evaluated:,}" for r in results.models[0].perplexity) or "—"
    used = sorted({r.seq_len for m in results.models for r in m.perplexity})
    return ProtocolContext(
        device=results.protocol.device,
        dtype=results.protocol.dtype,
        ppl_datasets=p.datasets if p else [],
        ppl_seq_len=used[0] if len(used) == 1 else (p.seq_len if p else None),
        ppl_tokens=tokens,
        max_tokens=p.max_tokens if p else None,
        tasks=z.tasks if z else [],
        limit=z.limit if z else None,
        task_source=z.task_source if z else None,
        task_digests=[f"{r.task} `{r.data_sha256[:16]}`" for r in results.models[0].zeroshot if r.data_sha256],
        lm_eval_version=z.lm_eval_version if z else None,
    )


def _looks_like_hub_id(reference: str) -> bool:
    return reference.count("/") == 1 and not reference.startswith((".", "/", "~")) and not Path(reference).exists()


def _limitations(report: dict[str, Any], results: EvaluationResults, trust_remote_code: bool) -> list[str]:
    out = [
        "The model was pruned without any retraining or distillation; expect lower quality than the base model, "
        "most of all on long or knowledge-heavy generations.",
        "Scores are measured on the texts and tasks listed below only; the pruned model may lose more on other "
        "domains or languages than these numbers show.",
    ]
    if trust_remote_code:
        out.append(
            "The `global` layout has per-block widths that stock transformers configs cannot express: it loads only "
            "with `trust_remote_code=True`, and vLLM or llama.cpp conversion will not work without a `uniform` re-prune."
        )
    z = results.protocol.zeroshot
    if z is not None and z.limit is not None:
        out.append(
            f"Zero-shot accuracies use only {z.limit} items per task (a quick check): their standard errors are large."
        )
    options = report.get("options", {})
    if options.get("gguf_file"):
        out.append(
            "The base weights were read from a quantized GGUF file, so both models inherit its quantization loss."
        )
    return out


def build_context(
    report: dict[str, Any],
    results: EvaluationResults,
    *,
    repo_id: str,
    command: str,
    base_card_data: dict[str, Any] | None = None,
    base_config: dict[str, Any] | None = None,
    pruned_id: str | None = None,
    licence_files: list[str] | None = None,
) -> CardContext:
    """The card's context from the pruning report, the results file and the base model's card metadata.

    `report` and `results` must already name the base publicly (Hub id or directory name): the card
    repeats what they say. `licence_files` are the base's LICENSE/USE_POLICY/NOTICE files shipped beside it.
    """
    from zhprune_hub.prune.importance import METHODS

    pruned = pruned_results(results, pruned_id)
    params = report["parameters"]
    method = METHODS[report["method"]]
    rows = kept_per_layer(report, base_config)
    reference = report["base_model"]["reference"]
    trust_remote_code = report["layout"] == "global"
    base_card_data = base_card_data or {}
    calibration = _calibration(report)
    hinted = base_card_data.get("language") or []
    hinted = [hinted] if isinstance(hinted, str) else list(hinted)
    # The measured languages lead; the base card's list is kept after them as the hint it is.
    measured = calibration.languages if calibration and calibration.language_rows else []
    language = [*measured, *(code for code in hinted if code not in measured)] or (
        list(calibration.languages) if calibration and set(calibration.languages) <= {"zh", "en"} else []
    )
    return CardContext(
        repo_id=repo_id,
        model_name=repo_id.split("/")[-1],
        base_model=reference if _looks_like_hub_id(reference) else None,
        base_reference=reference,
        base_commit=report["base_model"].get("commit"),
        method=method.name,
        method_description=method.description,
        method_reference=method.reference,
        layout=report["layout"],
        head_unit=report["head_unit"],
        ratio=report["ratio"],
        temperature=report["temperature"],
        tau=report.get("tau"),
        round_to=int(report.get("round_to") or 1),
        repair=dict(report.get("repair") or {}),
        params_before=params["before"]["total"],
        params_after=params["after"]["total"],
        removed_fraction=params["removed_fraction_of_total"],
        non_embedding_before=params["before"]["non_embedding"],
        non_embedding_after=params["after"]["non_embedding"],
        num_layers=len(rows),
        removed_blocks=list(report.get("removed_blocks") or []),
        heads_kept=sum(r["kept_heads"] for r in rows),
        heads_total=sum(r["heads"] for r in rows),
        channels_kept=sum(r["kept_channels"] for r in rows),
        channels_total=sum(r["channels"] for r in rows),
        metrics_table=metrics_table(results, pruned.model_id),
        headline=_headline(results, pruned),
        plot_file=PLOT_NAME,
        calibration=calibration,
        trust_remote_code=trust_remote_code,
        command=command,
        protocol=_protocol(results),
        tool_version=__version__,
        license=base_card_data.get("license"),
        license_name=base_card_data.get("license_name"),
        license_link=base_card_data.get("license_link"),
        licence_files=list(licence_files or []),
        language=[language] if isinstance(language, str) else list(language),
        limitations=_limitations(report, results, trust_remote_code),
    )


# --- metadata and rendering ------------------------------------------------------------------------


def _eval_results(pruned: ModelResults) -> list[Any]:
    from huggingface_hub import EvalResult

    from zhprune_hub.data.registry import get_corpus
    from zhprune_hub.evaluate.zeroshot import HUB_DATASETS

    out = []
    for p in pruned.perplexity:
        try:
            dataset_type = get_corpus(p.dataset).evaluation.hub.dataset
        except Exception:
            dataset_type = p.dataset
        out.append(
            EvalResult(
                task_type="text-generation",
                task_name="Language modelling",
                dataset_type=dataset_type,
                dataset_name=f"{p.dataset} ({p.tokens_evaluated:,} tokens, seq len {p.seq_len})",
                metric_type="perplexity",
                metric_name=f"perplexity ({p.dataset})",
                metric_value=round(p.perplexity, 4),
            )
        )
    for z in pruned.zeroshot:
        for kind, value in (("accuracy", z.acc), ("acc_norm", z.acc_norm)):
            if value is None:
                continue
            dataset_id, dataset_config = HUB_DATASETS.get(z.task, (z.task, None))
            out.append(
                EvalResult(
                    task_type="multiple-choice",
                    task_name=f"{z.task} (zero-shot)",
                    dataset_type=dataset_id,
                    dataset_config=dataset_config,
                    dataset_name=f"{z.task} ({z.samples} of {z.samples_total} items)",
                    metric_type=kind,
                    metric_name=f"{kind} ({z.task})",
                    metric_value=round(value, 4),
                )
            )
    return out


def card_data(
    ctx: CardContext,
    results: EvaluationResults,
    *,
    pruned_id: str | None = None,
) -> ModelCardData:
    """The card's YAML metadata: base model, tags, datasets, language, license (name and link), model-index."""
    from huggingface_hub import ModelCardData

    pruned = pruned_results(results, pruned_id)
    tags = list(BASE_TAGS)
    if ctx.calibration is not None:
        tags += [lang for lang in ctx.calibration.language.split("+") if lang not in tags]
    if ctx.openvino is not None:
        # library_name stays transformers: the repository's root is a transformers checkpoint
        tags += ["openvino", f"openvino-{ctx.openvino.weights}"]
    kwargs = {key: getattr(ctx, key) for key in ("license_name", "license_link") if getattr(ctx, key)}
    eval_results = _eval_results(pruned)
    return ModelCardData(
        base_model=ctx.base_model,
        tags=tags,
        datasets=(ctx.calibration.datasets or None) if ctx.calibration else None,
        language=ctx.language or None,
        license=ctx.license,
        library_name="transformers",
        pipeline_tag="text-generation",
        model_name=ctx.model_name,
        eval_results=eval_results or None,
        **kwargs,
    )


def template_path() -> Path:
    path = TEMPLATES_DIR / TEMPLATE_NAME
    if not path.exists():
        raise CardError(f"The model-card template {str(path)!r} is missing; reinstall zhprune-hub.")
    return path


def render_card(ctx: CardContext, data: ModelCardData, *, template: Path | None = None) -> ModelCard:
    """Render the template with StrictUndefined and wrap it as a ModelCard."""
    import jinja2
    from huggingface_hub import ModelCard

    path = template or template_path()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(path.parent)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    try:
        content = env.get_template(path.name).render(card_data=data.to_yaml(), **dict(ctx))
    except jinja2.UndefinedError as exc:
        raise CardError(f"The model-card template {str(path)!r} uses an undefined value ({exc.message}).") from None
    return ModelCard(content)


def check_card(text: str) -> ModelCard:
    """Parse a rendered README back offline and check the required metadata.

    Raises:
        CardError: the YAML does not parse, or a required field is missing.
    """
    from huggingface_hub import ModelCard

    try:
        card = ModelCard(text)
    except Exception as exc:
        raise CardError(f"The rendered model card does not parse back ({exc}).") from None
    data = card.data.to_dict()
    missing = [key for key in REQUIRED_METADATA if not data.get(key)]
    if missing:
        raise CardError(f"The rendered model card lacks required metadata: {', '.join(missing)}.")
    if not card.data.eval_results:
        raise CardError("The rendered model card's model-index holds no evaluation results.")
    return card


def base_card_metadata(base_dir: Path | None) -> dict[str, Any]:
    """License and language (and license_name/link) from the base model's README, if it has one."""
    if base_dir is None or not (Path(base_dir) / "README.md").exists():
        return {}
    from huggingface_hub import ModelCard

    try:
        data = ModelCard.load(Path(base_dir) / "README.md").data.to_dict()
    except Exception:
        return {}
    return {k: data[k] for k in ("license", "license_name", "license_link", "language") if data.get(k)}


def _base_config(base_dir: Path | None) -> dict[str, Any] | None:
    path = Path(base_dir) / "config.json" if base_dir is not None else None
    if path is None or not path.exists():
        return None
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def openvino_context(directory: Path, subfolder: str = "openvino") -> OpenVinoContext | None:
    """What the card says about an export in `directory/subfolder`, from its check record; None without one."""
    import json

    from zhprune_hub.export.exporter import RESULT_NAME

    path = Path(directory) / subfolder / RESULT_NAME
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        check = record["check"]
        return OpenVinoContext(
            subfolder=subfolder,
            weights=record["weights"],
            ppl_corpus=check["ppl_corpus"],
            ppl_pytorch=check["ppl_pytorch"],
            ppl_exported=check["ppl_exported"],
            ppl_increase=check["ppl_increase"],
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CardError(f"{path} is damaged ({type(exc).__name__}); run `zhprune-hub export` again.") from None


def write_card(
    directory: Path,
    *,
    report: dict[str, Any],
    results: EvaluationResults,
    repo_id: str,
    command: str,
    base_dir: Path | None = None,
    pruned_id: str | None = None,
    licence_files: list[str] | None = None,
) -> tuple[Path, CardContext]:
    """Render README.md and the per-layer PNG into `directory`; return the README path and the context.

    `base_dir` is read for the base's card metadata (licence, language) and config, never shown.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    base_meta = base_card_metadata(base_dir)
    base_config = _base_config(base_dir)
    ctx = build_context(
        report,
        results,
        repo_id=repo_id,
        command=command,
        base_card_data=base_meta,
        base_config=base_config,
        pruned_id=pruned_id,
        licence_files=licence_files,
    )
    openvino = openvino_context(directory)
    if openvino is not None:
        ctx = ctx.model_copy(update={"openvino": openvino})
    data = card_data(ctx, results, pruned_id=pruned_id)
    card = render_card(ctx, data)
    check_card(str(card))
    plot_layers(report, directory / ctx.plot_file, base_config=base_config)
    readme = directory / "README.md"
    readme.write_text(str(card), encoding="utf-8")
    return readme, ctx
