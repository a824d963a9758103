"""Human and machine output for the prune and verify commands (rich tables, progress, --json).

Progress and logs go to stderr so that `--json` leaves stdout as one JSON document.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from zhprune_hub.errors import PlanError

#: Width of tables written to a pipe or a CI log (rich would assume 80 columns and cut numbers).
NON_TTY_WIDTH = 200


def make_console(*, stderr: bool = False) -> Console:
    """A console whose tables are never cut: the terminal's width on a TTY (or $COLUMNS), else a wide one."""
    import os
    import sys

    stream = sys.stderr if stderr else sys.stdout
    wide = not (hasattr(stream, "isatty") and stream.isatty()) and not os.environ.get("COLUMNS")
    return Console(stderr=stderr, width=NON_TTY_WIDTH if wide else None)


stderr = make_console(stderr=True)
stdout = make_console()


def build_config(model_class: type, values: dict[str, Any]) -> Any:
    """Validate options into a frozen config; a bad value becomes one sentence naming the field."""
    try:
        return model_class(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "value"
        raise PlanError(f"Invalid --{field.replace('_', '-')}: {first['msg']} (got {first.get('input')!r}).") from None


def parameter_table(report: dict[str, Any]) -> Table:
    params = report["parameters"]
    table = Table(title=f"Pruned {report['base_model']['reference']} ({report['method']}, {report['layout']} layout)")
    for column in ("parameters", "before", "after", "removed"):
        table.add_column(column, justify="right" if column != "parameters" else "left", overflow="fold")
    for key in ("total", "non_embedding"):
        before, after = params["before"][key], params["after"][key]
        table.add_row(key.replace("_", "-"), f"{before:,}", f"{after:,}", f"{(before - after) / before:.1%}")
    return table


def run_prune(values: dict[str, Any], *, json_output: bool, quiet: bool) -> dict[str, Any]:
    from zhprune_hub.pruning import PruneConfig, prune_model

    config = build_config(PruneConfig, values)
    silent = quiet or json_output
    log = (lambda message: None) if silent else (lambda message: stderr.print(f"[dim]{message}[/dim]"))
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        disable=silent or not stderr.is_terminal,  # a bar in a log is only noise
        transient=True,
    )

    def bar(description: str, total: int) -> Any:
        task = progress.add_task(description, total=total)
        return lambda n: progress.advance(task, n)

    with progress:
        outcome = prune_model(config, progress=bar, log=log)
    if json_output:
        stdout.print_json(json.dumps({"output": str(outcome.output), "report": outcome.report}))
    elif not quiet:
        stdout.print(parameter_table(outcome.report))
        for note in outcome.report["notes"]:
            stderr.print(f"note: {note}")
        if outcome.report["removed_blocks"]:
            stdout.print(f"removed whole blocks: {outcome.report['removed_blocks']}")
        timings = outcome.report["timings"]
        memory = outcome.report["memory"]
        stdout.print(
            f"wrote {outcome.output} in {timings['total_s']:.1f} s (peak RSS {memory['peak_rss_mb']:.0f} MiB); "
            f"load it with {'trust_remote_code=True' if outcome.report['layout'] == 'global' else 'stock transformers'}"
        )
    return outcome.report


def run_verify(directory: Path, *, base: str | None, json_output: bool, quiet: bool = False) -> bool:
    from zhprune_hub.verify import verify_checkpoint

    result = verify_checkpoint(directory, base=base)
    if json_output:
        stdout.print_json(json.dumps(result.to_dict()))
        return result.ok
    if quiet:  # only what failed, on stderr
        for check in result.checks:
            if not check.ok:
                stderr.print(f"FAIL {check.name}: {check.detail}", markup=False, highlight=False)
        return result.ok
    table = Table(title=f"verify {result.directory}")
    table.add_column("check", overflow="fold")
    table.add_column("result", overflow="fold")
    table.add_column("detail", overflow="fold")
    for check in result.checks:
        table.add_row(check.name, "[green]ok[/green]" if check.ok else "[red]FAIL[/red]", check.detail)
    stdout.print(table)
    return result.ok


def run_export(values: dict[str, Any], *, json_output: bool, quiet: bool) -> dict[str, Any]:
    from zhprune_hub.export import ExportConfig, export_checkpoint

    config = build_config(ExportConfig, values)
    silent = quiet or json_output
    log = (lambda message: None) if silent else (lambda message: stderr.print(f"[dim]{message}[/dim]"))
    outcome = export_checkpoint(config, log=log)
    record = outcome.record
    if json_output:
        stdout.print_json(json.dumps({"output": str(outcome.output), "record": record}))
    elif not quiet:
        check = record["check"]
        table = Table(title=f"OpenVINO {record['weights']} export of {record['checkpoint']} against PyTorch float32")
        for column in ("check", "PyTorch", "OpenVINO", "bound"):
            table.add_column(column, overflow="fold")
        bounds = check["bounds"]
        table.add_row(
            f"{check['ppl_corpus']} perplexity ({check['tokens_predicted']:,} tokens, {check['seq_len']}-token windows)",
            f"{check['ppl_pytorch']:.3f}",
            f"{check['ppl_exported']:.3f} ({check['ppl_increase']:+.2%})",
            f"≤ {bounds['max_ppl_increase']:+.0%}",
        )
        table.add_row(
            f"max |logit diff| ({check['probe_tokens']} probe tokens)",
            "—",
            f"{check['max_abs_diff']:.4f}",
            "—" if bounds["max_logit_diff"] is None else f"≤ {bounds['max_logit_diff']:g}",
        )
        table.add_row(
            "top-1 agreement",
            "—",
            f"{check['top1_agreement']:.1%}",
            "—" if bounds["min_top1"] is None else f"≥ {bounds['min_top1']:.0%}",
        )
        stdout.print(table)
        stdout.print(
            f"wrote {outcome.output} in {record['timings']['export_s']:.1f} s (export); load it with "
            "optimum.intel.OVModelForCausalLM.from_pretrained"
        )
    return record
