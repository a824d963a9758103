"""The `publish` stage runner: pull → prune → verify → evaluate → card → push, resumable.

Every stage writes its outputs and then a `stage.json` marker into `<work-dir>/<plan-hash>/<stage>/`.
A marker records a digest of the stage's inputs chained to the marker before it, so a rerun skips
every stage whose marker still matches (a crash or a failed push costs no second pruning), and a
stage that does run again makes every later one run again. `push` always runs: it is cheap when
nothing changed (the Hub skips identical files and no commit is made).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from zhprune_hub import __version__
from zhprune_hub.errors import HubError, VerificationError, ZhpruneError
from zhprune_hub.plan import Variant
from zhprune_hub.publish_output import Reporter

STAGES = ("pull", "prune", "verify", "evaluate", "card", "push")
MARKER = "stage.json"
RESULTS_NAME = "zhprune_results.json"
DEFAULT_WORK_DIR = Path(".zhprune/work")
JSON_SCHEMA_VERSION = 1

Status = Literal["published", "unchanged", "dry-run", "failed"]


class StageError(ZhpruneError):
    """A publish stage failed; the message names the stage and keeps the cause's sentence."""

    def __init__(self, stage: str, message: str):
        self.stage = stage
        super().__init__(message)


# --- the work directory ------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _digest(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class Workspace:
    """`<work-dir>/<plan-hash>/`: one folder per stage, each with its `stage.json` once done."""

    root: Path

    def dir(self, stage: str) -> Path:
        path = self.root / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def marker(self, stage: str) -> dict[str, Any] | None:
        path = self.root / stage / MARKER
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        record["outputs"] = {
            k: str(self.root / v) if _is_path_key(k) and isinstance(v, str) and v.startswith("./") else v
            for k, v in record.get("outputs", {}).items()
        }
        return record

    def mark(self, stage: str, record: dict[str, Any]) -> None:
        """Write the done-marker; paths inside the work directory are stored relative, so it can move."""
        outputs = {}
        for key, value in record["outputs"].items():
            if _is_path_key(key) and isinstance(value, str) and Path(value).is_relative_to(self.root):
                value = "./" + Path(value).relative_to(self.root).as_posix()
            outputs[key] = value
        _write_json(self.root / stage / MARKER, {**record, "outputs": outputs})


def _is_path_key(key: str) -> bool:
    return key.endswith(("_dir", "_path"))


def _outputs_exist(outputs: dict[str, Any]) -> bool:
    """Paths a marker points to must still be there (a cleaned cache means running the stage again)."""
    return all(Path(v).exists() for k, v in outputs.items() if _is_path_key(k) and v)


# --- the stages ----------------------------------------------------------------------------------------


@dataclass
class _Run:
    variant: Variant
    ws: Workspace
    reporter: Reporter
    endpoint: str | None
    token: str | None
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)


def _stage_inputs(run: _Run, stage: str) -> dict[str, Any]:
    v = run.variant
    if stage == "pull":
        return {"model": v.model, "revision": v.model_revision, "gguf_file": v.prune.gguf_file}
    if stage == "prune":
        return v.prune.model_dump(mode="json", exclude={"device", "data_dir", "batch_size", "max_shard_size"})
    if stage == "evaluate":
        return v.evaluate.model_dump(mode="json", exclude={"eval_batch_size"})
    if stage == "card":
        from zhprune_hub.card import template_path

        template = hashlib.sha256(template_path().read_bytes()).hexdigest()
        return {"repo_id": v.repo_id, "command": v.command(), "template": template, "tool": __version__}
    return {}


def _pull(run: _Run) -> tuple[dict[str, Any], str]:
    from zhprune_hub.loading import resolve_source

    v = run.variant
    source = resolve_source(
        v.model, revision=v.model_revision, gguf_file=v.prune.gguf_file, endpoint=run.endpoint, token=run.token
    )
    outputs = {
        "reference": source.reference,
        "local_dir": str(source.local_dir),
        "revision": source.revision,
        "commit": source.commit,
        "gguf_file": source.gguf_file,
        "from_hub": source.from_hub,
    }
    return outputs, f"{source.local_dir}" + (f" @ {source.commit[:8]}" if source.commit else "")


def _base_source(run: _Run) -> Any:
    from zhprune_hub.loading import ModelSource

    pulled = run.outputs["pull"]
    return ModelSource(
        reference=pulled["reference"],
        local_dir=Path(pulled["local_dir"]),
        revision=pulled["revision"],
        commit=pulled["commit"],
        gguf_file=pulled["gguf_file"],
    )


def _prune(run: _Run) -> tuple[dict[str, Any], str]:
    from zhprune_hub.pruning import prune_model

    pulled = run.outputs["pull"]
    # Pin the snapshot the pull stage resolved, so both stages see the same weights.
    revision = pulled["commit"] if pulled["from_hub"] and pulled["commit"] else None
    config = run.variant.prune_config(run.ws.dir("prune") / "model", revision=revision)
    outcome = prune_model(config, progress=run.reporter.progress, log=run.reporter.log)
    params = outcome.report["parameters"]
    removed = params["removed_fraction_of_total"]
    return (
        {"model_dir": str(outcome.output), "removed_fraction": removed, "layout": outcome.report["layout"]},
        f"{params['before']['total']:,} → {params['after']['total']:,} parameters ({removed:.1%} removed)",
    )


def _verify(run: _Run) -> tuple[dict[str, Any], str]:
    from zhprune_hub.verify import verify_checkpoint

    pulled = run.outputs["pull"]
    base = pulled["reference"] if pulled["gguf_file"] else pulled["local_dir"]
    result = verify_checkpoint(Path(run.outputs["prune"]["model_dir"]), base=base)
    path = run.ws.dir("verify") / "verify.json"
    _write_json(path, result.to_dict())
    if not result.ok:
        failed = [c.name for c in result.checks if not c.ok]
        raise VerificationError(
            f"The pruned checkpoint failed {len(failed)} check(s) ({', '.join(failed)}); details are in {path}."
        )
    return {"verify_path": str(path)}, f"{len(result.checks)} checks passed"


def _evaluate(run: _Run) -> tuple[dict[str, Any], str]:
    """Base then pruned, one at a time, under readable ids (a minimal adapter over evaluate_model)."""
    import gc

    from zhprune_hub.evaluate import compare, evaluate_model
    from zhprune_hub.evaluate.runner import build_protocol, default_ppl_names, model_language
    from zhprune_hub.loading import ModelSource, load_model, needs_remote_code
    from zhprune_hub.results import save_results

    v, ev = run.variant, run.variant.evaluate
    pruned = ModelSource(reference=v.repo_id, local_dir=Path(run.outputs["prune"]["model_dir"]))
    ppl = ev.ppl
    measured = []
    for label, source in ((v.model, _base_source(run)), (v.repo_id, pruned)):
        run.reporter.log(f"evaluating {label}")
        started = time.perf_counter()
        model, tokenizer = load_model(source, device=v.prune.device, dtype=v.prune.dtype)
        load_s = time.perf_counter() - started
        if ppl is None:
            ppl = default_ppl_names(model_language(tokenizer))
        result = evaluate_model(
            model, tokenizer, model_id=label, ppl=ppl, tasks=ev.tasks, limit=ev.limit, seq_len=ev.ppl_seq_len,
            max_tokens=ev.max_tokens, batch_size=ev.eval_batch_size, data_dir=v.prune.data_dir,
            revision=source.revision, commit=source.commit, notify=run.reporter.log,
        )  # fmt: skip
        remote = source.gguf_file is None and needs_remote_code(source.local_dir)
        timings = result.timings.model_copy(update={"load_s": load_s, "total_s": result.timings.total_s + load_s})
        measured.append(
            result.model_copy(update={"timings": timings, "trust_remote_code": remote or result.trust_remote_code})
        )
        del model, tokenizer
        gc.collect()
    first = measured[0]
    protocol = build_protocol(
        first, ppl=[p.dataset for p in first.perplexity], tasks=[z.task for z in first.zeroshot], limit=ev.limit,
        seq_len=ev.ppl_seq_len, max_tokens=ev.max_tokens, batch_size=ev.eval_batch_size,
        task_source=first.zeroshot[0].source if first.zeroshot else None,
    )  # fmt: skip
    results = compare(first, measured[1:], protocol=protocol)
    path = save_results(results, run.ws.dir("evaluate") / RESULTS_NAME)
    from zhprune_hub.card import headline_ppl_delta

    delta = headline_ppl_delta(results, v.repo_id)
    return {"results_path": str(path)}, ("" if delta is None else f"perplexity {delta:+.1%}")


def _relabel(results: Any, old: str, new: str) -> Any:
    """The same results with the pruned model renamed (the repo id may change without re-evaluating)."""
    if old == new:
        return results
    models = [m.model_copy(update={"model_id": new}) if m.model_id == old else m for m in results.models]
    deltas = [d.model_copy(update={"model_id": new}) if d.model_id == old else d for d in results.deltas]
    return results.model_copy(update={"models": models, "deltas": deltas})


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def assemble_repo(
    target: Path,
    *,
    model_dir: Path,
    report: dict[str, Any],
    results: Any,
    repo_id: str,
    command: str,
    base_dir: Path | None,
) -> tuple[Path, Any]:
    """Build the folder to push (weights, config, code, card, picture, results, report) atomically."""
    from zhprune_hub.card import write_card
    from zhprune_hub.results import save_results

    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    for path in sorted(Path(model_dir).rglob("*")):
        if path.is_file():
            _link_or_copy(path, staging / path.relative_to(model_dir))
    save_results(results, staging / RESULTS_NAME)
    readme, ctx = write_card(
        staging, report=report, results=results, repo_id=repo_id, command=command, base_dir=base_dir, pruned_id=repo_id
    )
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target / readme.name, ctx


def _card(run: _Run) -> tuple[dict[str, Any], str]:
    from zhprune_hub.card import headline_ppl_delta, metrics_table
    from zhprune_hub.pruning import read_report
    from zhprune_hub.results import load_results

    v = run.variant
    results = load_results(run.outputs["evaluate"]["results_path"])
    results = _relabel(results, results.models[1].model_id, v.repo_id)
    model_dir = Path(run.outputs["prune"]["model_dir"])
    repo_dir = run.ws.dir("card") / "repo"
    readme, _ = assemble_repo(
        repo_dir,
        model_dir=model_dir,
        report=read_report(model_dir),
        results=results,
        repo_id=v.repo_id,
        command=v.command(),
        base_dir=Path(run.outputs["pull"]["local_dir"]),
    )
    outputs = {
        "repo_dir": str(repo_dir),
        "readme_path": str(readme),
        "results_path": str(repo_dir / RESULTS_NAME),
        "ppl_delta": headline_ppl_delta(results, v.repo_id),
        "deltas_markdown": metrics_table(results, v.repo_id),
    }
    return outputs, f"{sum(1 for p in repo_dir.rglob('*') if p.is_file())} files in {repo_dir}"


def _push(run: _Run) -> tuple[dict[str, Any], str]:
    from zhprune_hub.hub import push_folder

    v = run.variant
    message = v.push.commit_message or (
        f"Publish {Path(v.model).name} pruned by {v.prune.ratio:.0%} ({v.prune.method}, {v.prune.calibration})"
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
        commit_description=f"Made with zhprune-hub {__version__}: `{v.command()}`",
    )
    if not result.changed:
        detail = f"identical content is already on {result.revision}: no new commit ({result.commit_url})"
    else:
        detail = result.pr_url or result.commit_url
    return asdict(result), detail


RUNNERS: dict[str, Callable[[_Run], tuple[dict[str, Any], str]]] = {
    "pull": _pull,
    "prune": _prune,
    "verify": _verify,
    "evaluate": _evaluate,
    "card": _card,
    "push": _push,
}


# --- one variant, several variants -----------------------------------------------------------------------


@dataclass
class VariantOutcome:
    """What publishing one variant did; `to_json()` is one entry of the `--json` document."""

    name: str
    repo_id: str
    status: Status
    work_dir: str
    failed_stage: str | None = None
    error: str | None = None
    repo_url: str | None = None
    commit_url: str | None = None
    pr_url: str | None = None
    results: str = ""
    card: str = ""
    repo_dir: str = ""
    ppl_delta: float | None = None
    deltas_markdown: str = ""
    stages: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "repo_id": self.repo_id,
            "status": self.status,
            "failed_stage": self.failed_stage,
            "error": self.error,
            "repo_url": self.repo_url,
            "commit_url": self.commit_url,
            "pr_url": self.pr_url,
            "work_dir": self.work_dir,
            "results": self.results,
            "card": self.card,
            "ppl_delta": self.ppl_delta,
            "deltas_markdown": self.deltas_markdown,
        }


def _error_sentence(stage: str, exc: BaseException, ws: Workspace) -> str:
    if isinstance(exc, ZhpruneError):
        return str(exc)
    # A bug, not a user mistake: keep the traceback beside the stage for the report.
    path = ws.dir(stage) / "error.txt"
    path.write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
    return f"The {stage} stage failed with {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} (traceback in {path})."


def publish_variant(
    variant: Variant,
    *,
    work_dir: Path = DEFAULT_WORK_DIR,
    dry_run: bool = False,
    reporter: Reporter | None = None,
    endpoint: str | None = None,
    token: str | None = None,
) -> VariantOutcome:
    """Run (or resume) every stage of one variant; a failure is recorded in the outcome, not raised."""
    reporter = reporter or Reporter()
    ws = Workspace(Path(work_dir).expanduser().resolve() / variant.plan_hash())
    ws.root.mkdir(parents=True, exist_ok=True)
    _write_json(ws.root / "plan.json", {"plan_hash": variant.plan_hash(), **variant.model_dump(mode="json")})
    run = _Run(variant=variant, ws=ws, reporter=reporter, endpoint=endpoint, token=token)
    outcome = VariantOutcome(name=variant.name, repo_id=variant.repo_id, status="dry-run", work_dir=str(ws.root))
    reporter.variant_start(variant, ws.root)
    chain: dict[str, Any] = {}
    for stage in STAGES:
        if stage == "push" and dry_run:
            break
        digest = _digest({"stage": stage, "inputs": _stage_inputs(run, stage), "upstream": chain})
        record = ws.marker(stage)
        if stage != "push" and record and record.get("digest") == digest and _outputs_exist(record["outputs"]):
            run.outputs[stage] = record["outputs"]
            outcome.stages[stage] = "resumed"
            reporter.stage_done(variant, stage, skipped=True, seconds=0.0)
        else:
            reporter.stage_start(variant, stage)
            started_at, started = _now(), time.perf_counter()
            try:
                outputs, detail = RUNNERS[stage](run)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                message = _error_sentence(stage, exc, ws)
                reporter.stage_failed(variant, stage, message)
                outcome.status, outcome.failed_stage, outcome.error = "failed", stage, message
                outcome.stages[stage] = "failed"
                break
            seconds = time.perf_counter() - started
            record = {
                "stage": stage,
                "digest": digest,
                "started_at": started_at,
                "finished_at": _now(),
                "seconds": round(seconds, 3),
                "tool": __version__,
                "outputs": outputs,
            }
            ws.mark(stage, record)
            run.outputs[stage] = outputs
            outcome.stages[stage] = "ran"
            reporter.stage_done(variant, stage, skipped=False, seconds=seconds, detail=detail)
        chain = {"digest": digest, "finished_at": record["finished_at"]}

    card = run.outputs.get("card")
    if card is not None:
        outcome.results, outcome.card, outcome.repo_dir = card["results_path"], card["readme_path"], card["repo_dir"]
        outcome.ppl_delta, outcome.deltas_markdown = card["ppl_delta"], card["deltas_markdown"]
    elif "evaluate" in run.outputs:
        outcome.results = run.outputs["evaluate"]["results_path"]
    push = run.outputs.get("push")
    if push is not None:
        outcome.status = "published" if push["changed"] else "unchanged"
        outcome.repo_url, outcome.commit_url, outcome.pr_url = push["repo_url"], push["commit_url"], push["pr_url"]
    return outcome


@dataclass
class PublishReport:
    dry_run: bool
    variants: list[VariantOutcome]

    @property
    def ok(self) -> bool:
        return all(v.status != "failed" for v in self.variants)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": JSON_SCHEMA_VERSION,
            "dry_run": self.dry_run,
            "variants": [v.to_json() for v in self.variants],
        }


def check_token(token: str | None = None) -> None:
    """Fail before any pruning when a real push would have no token (HF_TOKEN or the login file).

    Raises:
        HubError: no token is configured.
    """
    from huggingface_hub import get_token

    if not token and not get_token():
        raise HubError(
            "No Hub token found: set HF_TOKEN (or run `hf auth login`) before publishing, or pass --dry-run; "
            "nothing was pruned or pushed."
        )


def publish(
    variants: list[Variant],
    *,
    work_dir: Path = DEFAULT_WORK_DIR,
    dry_run: bool = False,
    fail_fast: bool = False,
    reporter: Reporter | None = None,
    endpoint: str | None = None,
    token: str | None = None,
) -> PublishReport:
    """Publish every variant in turn; after a failure go on with the next unless `fail_fast`."""
    if not dry_run:
        check_token(token)
    reporter = reporter or Reporter()
    outcomes: list[VariantOutcome] = []
    try:
        for variant in variants:
            outcome = publish_variant(
                variant, work_dir=work_dir, dry_run=dry_run, reporter=reporter, endpoint=endpoint, token=token
            )
            outcomes.append(outcome)
            if outcome.status == "failed" and fail_fast:
                break
    finally:
        reporter.close()
    return PublishReport(dry_run=dry_run, variants=outcomes)


# --- the `card` and `push` sub-commands ------------------------------------------------------------------


def prune_command(report: dict[str, Any], directory: Path) -> str:
    """The `zhprune-hub prune` command recorded in a pruning report."""
    import shlex

    options = report.get("options", {})
    parts = [
        "zhprune-hub prune",
        shlex.quote(report["base_model"]["reference"]),
        "--output",
        shlex.quote(str(directory)),
    ]
    if options.get("repair") is False:
        parts.append("--no-repair")
    for key in ("ratio", "method", "layout", "head_unit", "calibration", "language", "num_samples", "seq_len",
                "damping", "temperature", "tau", "seed", "gguf_file", "revision"):  # fmt: skip
        value = options.get(key)
        if value is not None or key == "tau":
            parts += [f"--{key.replace('_', '-')}", shlex.quote("None" if value is None else str(value))]
    return " ".join(parts)


def card_into(directory: Path, *, base: str, results_path: Path, repo_id: str | None = None) -> tuple[Path, Any]:
    """Render README.md and the per-layer PNG into a pruned checkpoint, and copy the results beside them.

    Raises:
        ZhpruneError: no pruning report, unreadable results, an unknown base model, a bad repo id.
    """
    from zhprune_hub.card import pruned_results, write_card
    from zhprune_hub.loading import resolve_source
    from zhprune_hub.plan import render_repo_id
    from zhprune_hub.pruning import read_report
    from zhprune_hub.results import load_results, save_results

    directory = Path(directory)
    report = read_report(directory)
    results = load_results(results_path)
    pruned = pruned_results(results)
    if repo_id is None:
        repo_id = pruned.model_id if pruned.model_id.count("/") == 1 and not Path(pruned.model_id).exists() else None
    repo_id = repo_id or f"OWNER/{directory.resolve().name}"
    if not repo_id.startswith("OWNER/"):
        from zhprune_hub.plan import PruneSettings

        render_repo_id(repo_id, owner=None, model=base, name="card", prune=PruneSettings(), label="--repo-id")
    results = _relabel(results, pruned.model_id, repo_id)
    source = resolve_source(base)
    save_results(results, directory / RESULTS_NAME)
    return write_card(
        directory,
        report=report,
        results=results,
        repo_id=repo_id,
        command=prune_command(report, directory),
        base_dir=source.local_dir,
        pruned_id=repo_id,
    )
