"""How `publish` talks to people and machines: stage lines and bars on stderr, tables, `--json`.

Kept apart from the runner: the stages report through the silent `Reporter` interface that
stages.py defines, and this module implements it for a terminal (or a CI log).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zhprune_hub.stages import STAGES, Reporter

if TYPE_CHECKING:
    from zhprune_hub.plan import Variant
    from zhprune_hub.publish import PublishReport

__all__ = ["Reporter", "RichReporter", "print_report", "summary_table"]


def _step(stage: str) -> str:
    return f"[{STAGES.index(stage) + 1}/{len(STAGES)}]"


# --- progress reporting ------------------------------------------------------------------------------


class RichReporter(Reporter):
    """One line per stage on stderr, and a bar for calibration."""

    def __init__(self) -> None:
        from zhprune_hub.console import make_console

        self.console = make_console(stderr=True)
        self._progress: Any = None

    def variant_start(self, variant: Variant, work_dir: Path) -> None:
        self.console.rule(f"[bold]{variant.name}[/bold] → {variant.repo_id}")
        self.console.print(f"[dim]work directory {work_dir}[/dim]")

    def stage_start(self, variant: Variant, stage: str) -> None:
        self.console.print(f"{_step(stage)} {stage} …")

    def stage_done(self, variant: Variant, stage: str, *, skipped: bool, seconds: float, detail: str = "") -> None:
        self._stop_progress()
        if skipped:
            self.console.print(f"{_step(stage)} {stage} [cyan]done earlier[/cyan] (resumed)")
        else:
            extra = f" — {detail}" if detail else ""
            self.console.print(f"{_step(stage)} {stage} [green]ok[/green] {seconds:.1f} s{extra}")

    def stage_failed(self, variant: Variant, stage: str, message: str) -> None:
        self._stop_progress()
        self.console.print(f"{_step(stage)} {stage} [red]failed[/red]: {message}")

    def log(self, message: str) -> None:
        self.console.print(f"[dim]{message}[/dim]")

    def progress(self, description: str, total: int) -> Callable[[int], None] | None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._stop_progress()
        self._progress = Progress(
            TextColumn("    {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        task = self._progress.add_task(description, total=total)
        return lambda n: self._progress.advance(task, n)

    def _stop_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def close(self) -> None:
        self._stop_progress()


# --- human output -----------------------------------------------------------------------------------------


def summary_table(report: PublishReport) -> Any:
    from rich.table import Table

    colours = {"published": "green", "unchanged": "cyan", "dry-run": "yellow", "failed": "red"}
    table = Table(title="publish" + (" (dry run: nothing pushed)" if report.dry_run else ""))
    for column in ("variant", "repo id", "status", "PPL Δ", "where"):
        table.add_column(column, overflow="fold")
    for v in report.variants:
        if v.status == "failed":
            where = f"{v.failed_stage}: {v.error}"
        elif v.status == "dry-run":
            where = f"would-be repository: {v.repo_dir}"
        else:
            where = "\n".join(x for x in (v.pr_url, v.commit_url) if x)
            if v.status == "unchanged":
                where = f"no new commit: identical content\n{where}"
        delta = f"{v.ppl_delta:+.1%}" if v.ppl_delta is not None else "—"
        table.add_row(v.name, v.repo_id, f"[{colours[v.status]}]{v.status}[/]", delta, where)
    return table


def markdown_table(markdown: str) -> Any:
    """The card's Markdown deltas table as a rich Table whose cells fold instead of ending in "…"."""
    from rich.table import Table

    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in markdown.splitlines()
        if line.strip().startswith("|")
    ]
    table = Table()
    if not rows:
        return table
    header, body = rows[0], [r for r in rows[1:] if not all(set(c) <= set(":-") for c in r)]
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index == 0 else "right", overflow="fold")
    for row in body:
        table.add_row(*row)
    return table


def print_report(report: PublishReport, *, json_output: bool, quiet: bool) -> None:
    """`--json`: one document on stdout; otherwise the card tables and a summary table."""
    if json_output:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
        return
    if quiet:
        for v in report.variants:
            if v.status == "failed":
                print(f"{v.name}: failed at {v.failed_stage}: {v.error}")
        return
    from zhprune_hub.console import make_console

    console = make_console()
    for v in report.variants:
        if v.deltas_markdown:
            console.print(f"[bold]{v.name}[/bold] ({v.repo_id}): base vs pruned, as in the card {v.card}")
            console.print(markdown_table(v.deltas_markdown))
    console.print(summary_table(report))
    for v in report.variants:
        if v.status == "dry-run":
            console.print(f"{v.name}: the would-be repository lies in {v.repo_dir}")
        elif v.status in {"published", "unchanged"}:
            console.print(
                f"{v.name}: repo {v.repo_url}, commit {v.commit_url}" + (f", PR {v.pr_url}" if v.pr_url else "")
            )
