"""`zhprune-hub plan ...`: a publish plan fanned out over CI jobs (matrix, base evaluation, aggregate).

A thin typer sub-app, registered by cli.py: each command parses, calls one library function, prints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

plan_app = typer.Typer(
    name="plan",
    help=(
        "Run a zhprune.yaml plan as CI jobs: `matrix` (validate, pin the base, print the job matrix), "
        "`evaluate-base` (measure each base once), `publish --variant ID` per job, then `aggregate`."
    ),
    no_args_is_help=True,
)

PlanArgument = Annotated[Path, typer.Argument(help="The zhprune.yaml publish plan.")]
WorkDirOption = Annotated[Path, typer.Option("--work-dir", help="Where stage outputs are kept.")]
BaseResultsOption = Annotated[
    Path | None,
    typer.Option("--base-results-dir", help="Base-model results store (an artifact shared by the jobs)."),
]


def _variants(plan: Path) -> list:
    from zhprune_hub.plan import load_plan, resolve_variants

    return resolve_variants(load_plan(plan), where=str(plan))


@plan_app.command("matrix")
def matrix_cmd(
    plan: PlanArgument,
    pin: Annotated[
        bool, typer.Option("--pin/--no-pin", help="Resolve each Hub base's revision to its commit id now.")
    ] = True,
) -> None:
    """Validate the plan and print its variants as one line of JSON for `strategy.matrix` (fromJSON)."""
    from zhprune_hub.matrix import plan_matrix

    typer.echo(json.dumps(plan_matrix(_variants(plan), pin=pin, where=str(plan)), separators=(",", ":")))


@plan_app.command("evaluate-base")
def evaluate_base_cmd(
    plan: PlanArgument,
    matrix: Annotated[
        Path | None, typer.Option("--matrix", help="File with the output of `plan matrix`: its pinned revisions.")
    ] = None,
    base_results_dir: BaseResultsOption = None,
    work_dir: WorkDirOption = Path(".zhprune/work"),
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Evaluate every base of the plan once into the base-results store; variant jobs then reuse it."""
    from zhprune_hub.matrix import apply_pins, load_matrix
    from zhprune_hub.publish import evaluate_bases
    from zhprune_hub.publish_output import RichReporter

    variants = _variants(plan)
    if matrix is not None:
        variants = apply_pins(variants, load_matrix(_read(matrix), where=f"--matrix {matrix}"))
    outcomes = evaluate_bases(
        variants, work_dir=work_dir, base_results_dir=base_results_dir, reporter=None if json_output else RichReporter()
    )
    if json_output:
        typer.echo(json.dumps({"bases": [o.to_json() for o in outcomes]}, indent=2))
    else:
        for o in outcomes:
            typer.echo(f"{o.id}: base {o.base} {o.status}" + (f" ({o.path})" if o.path else f": {o.error}"))
    if any(o.status == "failed" for o in outcomes):
        raise typer.Exit(1)  # standalone typer ignores return values


@plan_app.command("aggregate")
def aggregate_cmd(
    plan: PlanArgument,
    results_dir: Annotated[
        Path, typer.Option("--results-dir", help="Folder holding the variant jobs' `publish --json` documents.")
    ],
    summary: Annotated[
        Path | None, typer.Option("--summary", help="Write the Markdown summary here (e.g. for a job summary).")
    ] = None,
    collection: Annotated[
        str | None, typer.Option("--collection", help="Hub collection title; default: the plan's `collection`.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """One table of all variants against the base, the failures, and the Hub collection of the published ones."""
    from zhprune_hub.aggregate import collect, publish_collection, summary_markdown
    from zhprune_hub.errors import PlanError
    from zhprune_hub.plan import load_plan

    if not results_dir.is_dir():
        raise PlanError(
            f"--results-dir {str(results_dir)!r} is not a folder; pass the folder the jobs' results are in."
        )
    loaded = load_plan(plan)
    variants = _variants(plan)
    agg = collect(variants, results_dir)
    title = collection or loaded.collection
    if title and any(r.status in {"published", "unchanged"} for r in agg.rows):
        publish_collection(agg, variants, title=title, namespace=loaded.owner)
    markdown = summary_markdown(agg, title=f"zhprune-hub: {len(agg.rows)} variants of {plan.name}")
    if summary is not None:
        from zhprune_hub.workspace import write_text

        write_text(summary, markdown)
    if json_output:
        typer.echo(json.dumps(agg.to_json(), indent=2, ensure_ascii=False))
    else:
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(markdown))
    if agg.failed:
        raise typer.Exit(1)


def _read(path: Path) -> str:
    from zhprune_hub.errors import PlanError

    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        raise PlanError(f"--matrix file {str(path)!r} cannot be read; pass the file `plan matrix` wrote.") from None
