"""The seven stages of `publish`: pull → prune → verify → evaluate → export → card → push.

`export` (an OpenVINO copy, `zhprune-hub export`) does nothing unless the variant asks for one.

Each stage is a function of the run so far that returns its outputs, a line for the log, and the
fingerprints of the data it read (calibration text, evaluation text, a local base directory), so
the runner in publish.py can tell on a resume whether the stage must run again. The runner owns
the order, the markers and the failure handling; this module owns what each stage does.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zhprune_hub import __version__
from zhprune_hub.errors import VerificationError
from zhprune_hub.plan import Variant
from zhprune_hub.repo_assembly import RESULTS_NAME, PublicNames, assemble_repo, public_base_name, public_names, relabel
from zhprune_hub.workspace import Workspace, write_json

STAGES = ("pull", "prune", "verify", "evaluate", "export", "card", "push")


class Reporter:
    """Callbacks the stages report through; this base class is silent (--quiet, --json, tests)."""

    def variant_start(self, variant: Variant, work_dir: Path) -> None: ...

    def stage_start(self, variant: Variant, stage: str) -> None: ...

    def stage_done(self, variant: Variant, stage: str, *, skipped: bool, seconds: float, detail: str = "") -> None: ...

    def stage_failed(self, variant: Variant, stage: str, message: str) -> None: ...

    def log(self, message: str) -> None: ...

    def progress(self, description: str, total: int) -> Callable[[int], None] | None:
        return None

    def close(self) -> None: ...


@dataclass
class StageRun:
    """One variant's run: what the stages share (settings, work directory, Hub access, earlier outputs)."""

    variant: Variant
    ws: Workspace
    reporter: Reporter
    endpoint: str | None
    token: str | None
    base_results_dir: Path
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class StageResult:
    outputs: dict[str, Any]
    detail: str = ""
    reads: list[dict[str, Any]] = field(default_factory=list)


def _data_dir(run: StageRun) -> str | None:
    """The data directory the text is read from: another one may hold other files under the same names."""
    from zhprune_hub.data import resolve_data_dir

    found = resolve_data_dir(run.variant.prune.data_dir)
    return str(found.resolve()) if found is not None else None


def stage_inputs(run: StageRun, stage: str) -> dict[str, Any]:
    """What a stage's marker digest covers besides the chain of earlier stages (and the data it read)."""
    v = run.variant
    if stage == "pull":
        return {"model": v.model, "revision": v.model_revision, "gguf_file": v.prune.gguf_file}
    if stage == "prune":
        settings = v.prune.model_dump(mode="json", exclude={"device", "data_dir", "batch_size", "max_shard_size"})
        return {**settings, "data_dir": _data_dir(run)}
    if stage == "evaluate":
        return {**v.evaluate.model_dump(mode="json", exclude={"eval_batch_size"}), "data_dir": _data_dir(run)}
    if stage == "export":
        return {**v.deploy.model_dump(mode="json"), "data_dir": _data_dir(run) if v.deploy.export else None}
    if stage == "card":
        from zhprune_hub.card import template_path

        template = hashlib.sha256(template_path().read_bytes()).hexdigest()
        return {"repo_id": v.repo_id, "command": v.command(), "template": template, "tool": __version__}
    return {}


def _names(run: StageRun) -> PublicNames:
    """How local paths of this run are named in what it publishes."""
    from zhprune_hub.data import resolve_data_dir

    pulled = run.outputs["pull"]
    return public_names(
        base_dir=None if pulled["from_hub"] else Path(pulled["local_dir"]),
        base_name=pulled["public_name"],
        data_dir=resolve_data_dir(run.variant.prune.data_dir),
        calibration=run.variant.prune.calibration,
        extra=[(run.ws.root.parent, "<work-dir>")],
    )


# --- pull, prune, verify -----------------------------------------------------------------------------


def _pull(run: StageRun) -> StageResult:
    from zhprune_hub.fingerprint import fingerprint_model_dir
    from zhprune_hub.loading import resolve_source

    v = run.variant
    source = resolve_source(
        v.model, revision=v.model_revision, gguf_file=v.prune.gguf_file, endpoint=run.endpoint, token=run.token
    )
    from_hub = source.from_hub
    outputs = {
        "reference": source.reference,
        "public_name": public_base_name(source.reference, source.local_dir, from_hub=from_hub),
        "local_dir": str(source.local_dir),
        "revision": source.revision,
        "commit": source.commit,
        "gguf_file": source.gguf_file,
        "from_hub": from_hub,
    }
    reads = [] if from_hub else [fingerprint_model_dir(source.local_dir)]
    return StageResult(outputs, f"{source.local_dir}" + (f" @ {source.commit[:8]}" if source.commit else ""), reads)


def _base_source(run: StageRun) -> Any:
    from zhprune_hub.loading import ModelSource

    pulled = run.outputs["pull"]
    return ModelSource(
        reference=pulled["reference"],
        local_dir=Path(pulled["local_dir"]),
        revision=pulled["revision"],
        commit=pulled["commit"],
        gguf_file=pulled["gguf_file"],
    )


def _calibration_sources(report: dict[str, Any], data_dir: Path | None) -> list[str]:
    """Every text the prune stage read: the calibration windows and, for `auto`, the language samples."""
    calibration = report.get("calibration") or {}
    sources = [str(s) for s in calibration.get("sources", [])]
    figures = (calibration.get("language_decision") or {}).get("figures") or {}
    sources += [str(figure["source"]) for figure in figures.values() if figure["source"] not in sources]
    return sources


def _prune(run: StageRun) -> StageResult:
    from zhprune_hub.data import resolve_data_dir
    from zhprune_hub.fingerprint import fingerprint_sources
    from zhprune_hub.pruning import prune_model

    pulled = run.outputs["pull"]
    # Pin the snapshot the pull stage resolved, so both stages see the same weights.
    revision = pulled["commit"] if pulled["from_hub"] and pulled["commit"] else None
    config = run.variant.prune_config(run.ws.dir("prune") / "model", revision=revision)
    outcome = prune_model(config, progress=run.reporter.progress, log=run.reporter.log)
    params = outcome.report["parameters"]
    removed = params["removed_fraction_of_total"]
    reads = fingerprint_sources(_calibration_sources(outcome.report, resolve_data_dir(config.data_dir)))
    return StageResult(
        {"model_dir": str(outcome.output), "removed_fraction": removed, "layout": outcome.report["layout"]},
        f"{params['before']['total']:,} → {params['after']['total']:,} parameters ({removed:.1%} removed)",
        reads,
    )


def _verify(run: StageRun) -> StageResult:
    from zhprune_hub.verify import verify_checkpoint

    pulled = run.outputs["pull"]
    base = pulled["reference"] if pulled["gguf_file"] else pulled["local_dir"]
    result = verify_checkpoint(Path(run.outputs["prune"]["model_dir"]), base=base)
    path = write_json(run.ws.dir("verify") / "verify.json", result.to_dict())
    if not result.ok:
        failed = [c.name for c in result.checks if not c.ok]
        raise VerificationError(
            f"The pruned checkpoint failed {len(failed)} check(s) ({', '.join(failed)}); details are in {path}."
        )
    return StageResult({"verify_path": str(path)}, f"{len(result.checks)} checks passed")


# --- evaluate -------------------------------------------------------------------------------------------


def _prune_languages(run: StageRun) -> list[str] | None:
    """The languages the prune stage's language rule measured on the base, if it ran (calibration `auto`)."""
    from zhprune_hub.pruning import read_report

    prune = run.outputs.get("prune") or {}
    if not prune.get("model_dir"):
        return None
    decision = (read_report(Path(prune["model_dir"])).get("calibration") or {}).get("language_decision") or {}
    return list(decision["languages"]) if decision.get("how") == "measured" else None


def _measure(
    run: StageRun, label: str, source: Any, *, ppl: list[str] | None, tasks: list[str], languages: list[str] | None
) -> Any:
    """Evaluate one model under the variant's protocol, loaded on its own and freed afterwards."""
    import gc

    from zhprune_hub.evaluate import evaluate_model
    from zhprune_hub.loading import load_model, needs_remote_code

    v, ev = run.variant, run.variant.evaluate
    run.reporter.log(f"evaluating {label}")
    started = time.perf_counter()
    model, tokenizer = load_model(source, device=v.prune.device, dtype=v.prune.dtype)
    load_s = time.perf_counter() - started
    result = evaluate_model(
        model, tokenizer, model_id=label, ppl=ppl, tasks=tasks, limit=ev.limit, seq_len=ev.ppl_seq_len,
        max_tokens=ev.max_tokens, batch_size=ev.eval_batch_size, data_dir=v.prune.data_dir,
        revision=source.revision, commit=source.commit, notify=run.reporter.log, languages=languages,
        include_path=ev.include_path,
    )  # fmt: skip
    remote = source.gguf_file is None and needs_remote_code(source.local_dir)
    timings = result.timings.model_copy(update={"load_s": load_s, "total_s": result.timings.total_s + load_s})
    del model, tokenizer
    gc.collect()
    return result.model_copy(update={"timings": timings, "trust_remote_code": remote or result.trust_remote_code})


def _sources(results: Any) -> list[str]:
    return [p.source for p in results.perplexity] + [z.data_source for z in results.zeroshot]


def base_results(run: StageRun) -> tuple[Any, str, Path]:
    """The base model's results: from the store when an equal measurement exists, else measured and stored."""
    from zhprune_hub.base_results import BaseResultsStore, base_key
    from zhprune_hub.fingerprint import fingerprint_sources
    from zhprune_hub.loading import pick_device, pick_dtype

    v, pulled = run.variant, run.outputs["pull"]
    device = pick_device(v.prune.device)
    key = base_key(
        reference=pulled["public_name"],
        commit=pulled["commit"] if pulled["from_hub"] else None,
        local_dir=None if pulled["from_hub"] else Path(pulled["local_dir"]),
        gguf_file=pulled["gguf_file"],
        evaluation={**v.evaluate.model_dump(mode="json", exclude={"eval_batch_size"}), "data_dir": _data_dir(run)},
        device=device,
        dtype=str(pick_dtype(v.prune.dtype, device)).removeprefix("torch."),
    )
    store = BaseResultsStore(run.base_results_dir)
    found, why = store.load(key)
    if found is not None:
        run.reporter.log(f"base results {why}: the base model is not evaluated again")
        return found.model_copy(update={"model_id": pulled["public_name"]}), "reused", store.path(key)
    run.reporter.log(f"base results: {why}, so the base model is evaluated now")
    measured = _measure(
        run, pulled["public_name"], _base_source(run), ppl=v.evaluate.ppl, tasks=v.evaluate.tasks,
        languages=_prune_languages(run),
    )  # fmt: skip
    path = store.store(key, measured, fingerprint_sources(_sources(measured)))
    run.reporter.log(f"base results computed and stored in {path}")
    return measured, "computed", path


def _evaluate(run: StageRun) -> StageResult:
    """Base (measured once per base and protocol) and pruned, compared under readable ids."""
    from zhprune_hub.card import headline_ppl_delta
    from zhprune_hub.evaluate import compare
    from zhprune_hub.evaluate.runner import build_protocol
    from zhprune_hub.fingerprint import fingerprint_sources
    from zhprune_hub.loading import ModelSource
    from zhprune_hub.results import save_results

    v, ev = run.variant, run.variant.evaluate
    base, how, base_path = base_results(run)
    pruned_source = ModelSource(reference=v.repo_id, local_dir=Path(run.outputs["prune"]["model_dir"]))
    # The pruned model is measured on exactly the base's texts and tasks (never re-decided).
    pruned = _measure(
        run, v.repo_id, pruned_source, ppl=[p.dataset for p in base.perplexity],
        tasks=[z.task for z in base.zeroshot], languages=None,
    )  # fmt: skip
    protocol = build_protocol(
        base, ppl=[p.dataset for p in base.perplexity], tasks=[z.task for z in base.zeroshot], limit=ev.limit,
        seq_len=ev.ppl_seq_len, max_tokens=ev.max_tokens, batch_size=ev.eval_batch_size,
        task_source=base.zeroshot[0].source if base.zeroshot else None,
    )  # fmt: skip
    results = compare(base, [pruned], protocol=protocol)
    path = save_results(results, run.ws.dir("evaluate") / RESULTS_NAME)
    delta = headline_ppl_delta(results, v.repo_id)
    outputs = {"results_path": str(path), "base_results_path": str(base_path), "base_evaluation": how}
    detail = f"base {how}" + ("" if delta is None else f", perplexity {delta:+.1%}")
    return StageResult(outputs, detail, fingerprint_sources(_sources(base) + _sources(pruned)))


def metrics_summary(results: Any, pruned_id: str) -> dict[str, Any]:
    """Base and pruned parameters and metric values, small enough for the `--json` document."""
    base, pruned = results.models[0], results.model(pruned_id)
    return {
        "base": {
            "model_id": base.model_id,
            "commit": base.commit,
            "parameters": base.parameters,
            "values": {k: m.value for k, m in base.metrics().items()},
        },
        "pruned": {"parameters": pruned.parameters, "values": {k: m.value for k, m in pruned.metrics().items()}},
    }


# --- export, card, push ------------------------------------------------------------------------------------


def _export(run: StageRun) -> StageResult:
    """The OpenVINO copy of the pruned checkpoint, checked against it; nothing when the plan has no export."""
    v = run.variant
    if not v.deploy.export:
        return StageResult({"export_dir": None}, "none in the plan")
    from zhprune_hub.export import ExportConfig, export_checkpoint

    config = ExportConfig(
        directory=Path(run.outputs["prune"]["model_dir"]),
        weights=v.deploy.export,
        output=run.ws.dir("export") / "openvino",
        overwrite=True,
        max_ppl_increase=v.deploy.export_max_ppl_increase,
        data_dir=v.prune.data_dir,
    )
    outcome = export_checkpoint(config, log=run.reporter.log)
    check = outcome.record["check"]
    detail = (
        f"{v.deploy.export} OpenVINO in {outcome.output}: {check['ppl_corpus']} perplexity {check['ppl_exported']:.2f} "
        f"({check['ppl_increase']:+.1%} against PyTorch)"
    )
    return StageResult({"export_dir": str(outcome.output), "check": check}, detail)


def _card(run: StageRun) -> StageResult:
    from zhprune_hub.card import headline_ppl_delta, metrics_table
    from zhprune_hub.pruning import read_report
    from zhprune_hub.results import load_results

    v, pulled = run.variant, run.outputs["pull"]
    results = load_results(run.outputs["evaluate"]["results_path"])
    results = relabel(results, results.models[1].model_id, v.repo_id)
    model_dir = Path(run.outputs["prune"]["model_dir"])
    repo_dir = run.ws.dir("card") / "repo"
    readme, _ = assemble_repo(
        repo_dir,
        model_dir=model_dir,
        report=read_report(model_dir),
        results=results,
        repo_id=v.repo_id,
        command=v.command(),
        base_dir=Path(pulled["local_dir"]),
        names=_names(run),
        folders={"openvino": Path(exported)} if (exported := run.outputs["export"].get("export_dir")) else None,
    )
    outputs = {
        "repo_dir": str(repo_dir),
        "readme_path": str(readme),
        "results_path": str(repo_dir / RESULTS_NAME),
        "ppl_delta": headline_ppl_delta(results, v.repo_id),
        "deltas_markdown": metrics_table(results, v.repo_id),
        "metrics": metrics_summary(results, v.repo_id),
    }
    return StageResult(outputs, f"{sum(1 for p in repo_dir.rglob('*') if p.is_file())} files in {repo_dir}")


def _push(run: StageRun) -> StageResult:
    from zhprune_hub.hub import push_folder

    v = run.variant
    names = _names(run)
    message = v.push.commit_message or (
        f"Publish {run.outputs['pull']['public_name'].split('/')[-1]} pruned by {v.prune.ratio:.0%} "
        f"({v.prune.method}, {names.text(v.prune.calibration)})"
    )
    result = push_folder(
        Path(run.outputs["card"]["repo_dir"]),
        v.repo_id,
        endpoint=run.endpoint,
        token=run.token,
        private=v.push.private,
        create_pr=v.push.create_pr,
        revision=v.push.revision,
        commit_message=message,
        commit_description=f"Made with zhprune-hub {__version__}: `{names.text(v.command())}`",
    )
    if not result.changed:
        detail = f"identical content is already on {result.revision}: no new commit ({result.commit_url})"
    else:
        detail = result.pr_url or result.commit_url
    return StageResult(asdict(result), detail)


RUNNERS: dict[str, Callable[[StageRun], StageResult]] = {
    "pull": _pull,
    "prune": _prune,
    "verify": _verify,
    "evaluate": _evaluate,
    "export": _export,
    "card": _card,
    "push": _push,
}
