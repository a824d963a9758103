"""`publish`: run, or resume, the stages of each variant of a plan, and report what happened.

Every stage writes its outputs and then a `stage.json` marker into `<work-dir>/<plan-hash>/<stage>/`.
A marker records a digest of the stage's inputs chained to the marker before it, and fingerprints of
the data the stage read, so a rerun skips every stage whose marker still matches (a crash or a failed
push costs no second pruning), while a stage whose settings or data changed runs again and makes every
later one run again. `push` always runs: it is cheap when nothing changed (no commit is made). A
variant's work directory is locked while it runs: a second publish of the same variant stops at once.
What each stage does lives in stages.py; the work directory and its lock in workspace.py.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from zhprune_hub import __version__
from zhprune_hub.errors import HubError, ZhpruneError
from zhprune_hub.fingerprint import first_change
from zhprune_hub.plan import Variant
from zhprune_hub.stages import RUNNERS, STAGES, Reporter, StageRun, base_results, stage_inputs
from zhprune_hub.workspace import Workspace, WorkspaceBusyError, digest, now, outputs_exist, write_json

DEFAULT_WORK_DIR = Path(".zhprune/work")
#: Base-model results shared by the variants that use one work directory (unless --base-results-dir).
BASE_RESULTS_DIR = "base-results"
JSON_SCHEMA_VERSION = 1

Status = Literal["published", "unchanged", "dry-run", "failed"]


@dataclass
class VariantOutcome:
    """What publishing one variant did; `to_json()` is one entry of the `--json` document."""

    name: str
    repo_id: str
    status: Status
    work_dir: str
    id: str = ""
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
    base_evaluation: str | None = None
    metrics: dict[str, Any] | None = None
    stages: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
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
            "base_evaluation": self.base_evaluation,
            "metrics": self.metrics,
        }


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


def _error_sentence(stage: str, exc: BaseException, ws: Workspace) -> str:
    if isinstance(exc, ZhpruneError):
        return str(exc)
    # A bug, not a user mistake: keep the traceback beside the stage for the report.
    path = ws.dir(stage) / "error.txt"
    path.write_text("".join(traceback.format_exception(exc)), encoding="utf-8")
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"The {stage} stage failed with {type(exc).__name__}: {first} (traceback in {path})."


def _resumable(run: StageRun, stage: str, stage_digest: str) -> dict[str, Any] | None:
    """The stage's marker when it still holds: same digest, outputs present, data read unchanged."""
    record = run.ws.marker(stage)
    if stage == "push" or not record or record.get("digest") != stage_digest or not outputs_exist(record["outputs"]):
        return None
    changed = first_change(record.get("reads", []))
    if changed:
        run.reporter.log(f"{stage}: {changed} since the stage ran, so it runs again")
        return None
    return record


def _run_stages(run: StageRun, outcome: VariantOutcome, *, stages: tuple[str, ...] = STAGES) -> None:
    """Each of `stages` in order: resumed from its marker, or run and marked; stop at the first failure."""
    variant, ws, reporter = run.variant, run.ws, run.reporter
    chain: dict[str, Any] = {}
    for stage in stages:
        stage_digest = digest({"stage": stage, "inputs": stage_inputs(run, stage), "upstream": chain})
        record = _resumable(run, stage, stage_digest)
        if record is not None:
            run.outputs[stage] = record["outputs"]
            outcome.stages[stage] = "resumed"
            reporter.stage_done(variant, stage, skipped=True, seconds=0.0)
        else:
            reporter.stage_start(variant, stage)
            started_at, started = now(), time.perf_counter()
            try:
                result = RUNNERS[stage](run)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                message = _error_sentence(stage, exc, ws)
                reporter.stage_failed(variant, stage, message)
                outcome.status, outcome.failed_stage, outcome.error = "failed", stage, message
                outcome.stages[stage] = "failed"
                return
            seconds = time.perf_counter() - started
            record = {
                "stage": stage,
                "digest": stage_digest,
                "started_at": started_at,
                "finished_at": now(),
                "seconds": round(seconds, 3),
                "tool": __version__,
                "outputs": result.outputs,
                "reads": result.reads,
            }
            ws.mark(stage, record)
            run.outputs[stage] = result.outputs
            outcome.stages[stage] = "ran"
            reporter.stage_done(variant, stage, skipped=False, seconds=seconds, detail=result.detail)
        chain = {"digest": stage_digest, "finished_at": record["finished_at"]}


def _fill(outcome: VariantOutcome, outputs: dict[str, dict[str, Any]]) -> None:
    card, push, evaluate = outputs.get("card"), outputs.get("push"), outputs.get("evaluate")
    if evaluate is not None:
        outcome.results, outcome.base_evaluation = evaluate["results_path"], evaluate.get("base_evaluation")
    if card is not None:
        outcome.results, outcome.card, outcome.repo_dir = card["results_path"], card["readme_path"], card["repo_dir"]
        outcome.ppl_delta, outcome.deltas_markdown = card["ppl_delta"], card["deltas_markdown"]
        outcome.metrics = card.get("metrics")
    if push is not None:
        outcome.status = "published" if push["changed"] else "unchanged"
        outcome.repo_url, outcome.commit_url, outcome.pr_url = push["repo_url"], push["commit_url"], push["pr_url"]


def publish_variant(
    variant: Variant,
    *,
    work_dir: Path = DEFAULT_WORK_DIR,
    dry_run: bool = False,
    reporter: Reporter | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    base_results_dir: Path | None = None,
) -> VariantOutcome:
    """Run (or resume) every stage of one variant; a failure is recorded in the outcome, not raised.

    Args:
        base_results_dir: where base-model results are looked up and stored; default
            `<work_dir>/base-results`, shared by the variants of one work directory.
    """
    run = _stage_run(
        variant, work_dir=work_dir, reporter=reporter or Reporter(), endpoint=endpoint, token=token,
        base_results_dir=base_results_dir,
    )  # fmt: skip
    outcome = VariantOutcome(
        id=variant.id, name=variant.name, repo_id=variant.repo_id, status="dry-run", work_dir=str(run.ws.root)
    )
    run.reporter.variant_start(variant, run.ws.root)
    _locked(run, outcome, stages=STAGES[:-1] if dry_run else STAGES)
    if outcome.failed_stage != "lock":
        _fill(outcome, run.outputs)
    return outcome


def _stage_run(
    variant: Variant,
    *,
    work_dir: Path,
    reporter: Reporter,
    endpoint: str | None,
    token: str | None,
    base_results_dir: Path | None,
) -> StageRun:
    work_dir = Path(work_dir).expanduser().resolve()
    shared = Path(base_results_dir).expanduser().resolve() if base_results_dir else work_dir / BASE_RESULTS_DIR
    return StageRun(
        variant=variant, ws=Workspace(work_dir / variant.plan_hash()), reporter=reporter, endpoint=endpoint,
        token=token, base_results_dir=shared,
    )  # fmt: skip


def _locked(run: StageRun, outcome: VariantOutcome, *, stages: tuple[str, ...]) -> None:
    """Run `stages` holding the variant's work directory; a busy one fails the outcome at `lock`."""
    variant = run.variant
    try:
        with run.ws.lock(label=f"variant {variant.name!r} ({variant.repo_id})"):
            write_json(run.ws.root / "plan.json", {"plan_hash": variant.plan_hash(), **variant.model_dump(mode="json")})
            _run_stages(run, outcome, stages=stages)
    except WorkspaceBusyError as exc:
        run.reporter.log(str(exc))
        outcome.status, outcome.failed_stage, outcome.error = "failed", "lock", str(exc)


@dataclass
class BaseOutcome:
    """What evaluating one variant's base did: `computed` or `reused`, and where the result lies."""

    id: str
    base: str
    status: Literal["computed", "reused", "failed"]
    path: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "base": self.base, "status": self.status, "path": self.path, "error": self.error}


def evaluate_bases(
    variants: list[Variant],
    *,
    work_dir: Path = DEFAULT_WORK_DIR,
    base_results_dir: Path | None = None,
    reporter: Reporter | None = None,
    endpoint: str | None = None,
    token: str | None = None,
) -> list[BaseOutcome]:
    """Pull and evaluate each variant's base once into the base-results store (a base-evaluation job).

    Variants that share a base and a protocol share one entry: the first computes it, the others find it.
    """
    reporter = reporter or Reporter()
    outcomes = []
    try:
        for variant in variants:
            run = _stage_run(
                variant, work_dir=work_dir, reporter=reporter, endpoint=endpoint, token=token,
                base_results_dir=base_results_dir,
            )  # fmt: skip
            pulled = VariantOutcome(id=variant.id, name=variant.name, repo_id=variant.repo_id, status="dry-run",
                                    work_dir=str(run.ws.root))  # fmt: skip
            reporter.variant_start(variant, run.ws.root)
            _locked(run, pulled, stages=("pull",))
            if pulled.status == "failed":
                outcomes.append(BaseOutcome(variant.id, variant.model, "failed", error=pulled.error))
                continue
            name = run.outputs["pull"]["public_name"]
            try:
                _, how, path = base_results(run)
            except ZhpruneError as exc:
                outcomes.append(BaseOutcome(variant.id, name, "failed", error=str(exc)))
                continue
            outcomes.append(BaseOutcome(variant.id, name, how, path=str(path)))  # type: ignore[arg-type]
    finally:
        reporter.close()
    return outcomes


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
    base_results_dir: Path | None = None,
) -> PublishReport:
    """Publish every variant in turn; after a failure go on with the next unless `fail_fast`."""
    from zhprune_hub.preflight import publish_preflight

    publish_preflight(variants, work_dir=work_dir)
    if not dry_run:
        check_token(token)
    reporter = reporter or Reporter()
    outcomes: list[VariantOutcome] = []
    try:
        for variant in variants:
            outcome = publish_variant(
                variant, work_dir=work_dir, dry_run=dry_run, reporter=reporter, endpoint=endpoint, token=token,
                base_results_dir=base_results_dir,
            )  # fmt: skip
            outcomes.append(outcome)
            if outcome.status == "failed" and fail_fast:
                break
    finally:
        reporter.close()
    return PublishReport(dry_run=dry_run, variants=outcomes)
