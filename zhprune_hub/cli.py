"""The `zhprune-hub` command line: parse arguments, build a config, call one library function.

Heavy libraries (torch, transformers, lm-eval) are imported inside commands so `--help` is instant.
Known failures (ZhpruneError) become one sentence on stderr and a non-zero exit code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from zhprune_hub import __version__
from zhprune_hub.cli_plan import plan_app
from zhprune_hub.errors import ZhpruneError

app = typer.Typer(
    name="zhprune-hub",
    help=(
        "Structurally prune a Hugging Face LLM with language-matched calibration, verify it, evaluate it "
        "and publish it. A Hub token is read only from HF_TOKEN or the huggingface_hub login file, and "
        "is never printed."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(plan_app, name="plan")  # matrix, evaluate-base, aggregate: a plan fanned out over CI jobs

# Shared options, defined once so every command spells them the same way.
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Local data directory (layout in the README); defaults to $ZHPRUNE_DATA_DIR.",
        envvar="ZHPRUNE_DATA_DIR",
    ),
]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, mps, cuda or cuda:N.")]
DtypeOption = Annotated[
    str,
    typer.Option(
        "--dtype",
        help="auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16, float16. A GGUF base is dequantised and "
        "saved as bfloat16 unless this names another dtype.",
    ),
]
RevisionOption = Annotated[str | None, typer.Option("--revision", help="Hub branch, tag or commit of MODEL.")]
GgufOption = Annotated[
    str | None,
    typer.Option(
        "--gguf-file",
        help="GGUF file of MODEL (directory or Hub repo) to use; default: the largest (highest precision).",
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]
QuietFlag = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")]
DEFAULT_TASKS = "auto"
TasksOption = Annotated[
    str,
    typer.Option(
        "--tasks",
        help=(
            "Zero-shot tasks, comma-separated (boolq, piqa, hellaswag, winogrande, arc_easy, xcopa_zh, cmmlu), "
            "'auto' (the tasks of the model's measured languages) or 'none'."
        ),
    ),
]
LimitOption = Annotated[int | None, typer.Option("--limit", min=1, help="Items per zero-shot task (quick runs).")]
IncludePathOption = Annotated[
    Path | None,
    typer.Option("--include-path", help="Folder of your own lm-eval task YAMLs; their task names work in --tasks."),
]
MethodOption = Annotated[
    str,
    typer.Option(
        "--method",
        help="obs (compensated, the default), taylor, activation, magnitude or random; see the README's table.",
    ),
]
RepairOption = Annotated[
    bool,
    typer.Option(
        "--repair/--no-repair",
        help="Re-fit the kept o_proj/down_proj columns by damped least squares after each cut (default: on).",
    ),
]
DampingOption = Annotated[
    float, typer.Option("--damping", help="Least-squares dampening, relative to the mean diagonal of XᵀX.")
]
CorrectionOption = Annotated[
    float,
    typer.Option(
        "--correction",
        help="Share (0–1) of the residual-stream error of earlier blocks that each repair undoes; 0 = local fit only.",
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"zhprune-hub {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """zhprune-hub: prune, verify, evaluate and publish structured-pruned LLMs."""


#: What an interruption leaves behind, per command (default: nothing, since outputs are atomic).
_INTERRUPTED = {
    "publish": "Interrupted; finished stages are kept in the work directory and a rerun resumes after the last "
    "of them (nothing was pushed unless the push stage had started).",
    "push": "Interrupted; the commit may or may not have reached the Hub, so run the same push again "
    "(identical content makes no new commit).",
}


class _Interruption:
    """Remembers a SIGINT/SIGTERM, then lets it unwind the stack as KeyboardInterrupt.

    typer turns KeyboardInterrupt into a silent exit code (and other versions into "Aborted!"), so
    the entry point needs its own record of the signal to say what happened.
    """

    def __init__(self) -> None:
        self.signal: int | None = None

    def install(self) -> None:
        import signal

        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, self._handle)

    def _handle(self, number: int, frame: object) -> None:
        self.signal = number
        raise KeyboardInterrupt

    def exit(self, command: str | None) -> None:
        import signal

        from zhprune_hub.outputs import committed_outputs

        message = _INTERRUPTED.get(command or "", "Interrupted; nothing was written.")
        done = committed_outputs()
        if done and command not in _INTERRUPTED:
            message = f"Interrupted after {', '.join(map(str, done))} had been written completely."
        print(message, file=sys.stderr)
        sys.exit(128 + (self.signal or signal.SIGINT))


def _command_name(argv: list[str]) -> str | None:
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main() -> None:
    """Entry point: run the app; known errors become one sentence, usage errors click's usage message."""
    interruption = _Interruption()
    interruption.install()
    command = _command_name(sys.argv[1:])
    try:
        app()  # standalone: typer prints usage errors itself, in the form its version documents
    except ZhpruneError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        if os.environ.get("ZHPRUNE_DEBUG"):
            raise
        print("Set ZHPRUNE_DEBUG=1 for the traceback.", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        interruption.exit(command)
    except SystemExit:
        if interruption.signal is not None:
            interruption.exit(command)
        raise


# --- prune / verify (pruning engine) ---------------------------------------------------------


@app.command(
    help=(
        "Structurally prune MODEL (Hub id, local checkpoint, or directory with a GGUF file) and write a "
        "safetensors checkpoint to --output. --ratio is the fraction of the model's TOTAL parameter count "
        "(embeddings included) to remove; the hidden size is always kept."
    )
)
def prune(
    model: Annotated[str, typer.Argument(help="Hub id, local checkpoint directory, or directory with a GGUF file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the pruned checkpoint.")],
    ratio: Annotated[float, typer.Option(help="Fraction of TOTAL parameters to remove (0 ≤ ratio < 1).")] = 0.2,
    method: MethodOption = "obs",
    repair: RepairOption = True,
    damping: DampingOption = 0.001,
    correction: CorrectionOption = 0.5,
    layout: Annotated[
        str,
        typer.Option(
            help="global: per-block widths, loads with trust_remote_code; uniform: same widths everywhere, stock config."
        ),
    ] = "global",
    head_unit: Annotated[
        str,
        typer.Option(
            help="group: remove whole KV groups; query: the same number of query heads per group; none: keep attention "
            "whole (only MLP channels go)."
        ),
    ] = "group",
    calibration: Annotated[
        str, typer.Option(help="Corpus name, alias, mix like wikitext_zh:0.7,c4:0.3, a file path, or auto.")
    ] = "auto",
    language: Annotated[str | None, typer.Option(help="zh or en: language of a calibration file.")] = None,
    data_dir: DataDirOption = None,
    num_samples: Annotated[int, typer.Option(help="Calibration windows.")] = 512,
    seq_len: Annotated[int, typer.Option(help="Tokens per calibration window.")] = 128,
    batch_size: Annotated[
        int | None, typer.Option(help="Calibration windows per block call (default: 4,096 tokens' worth).")
    ] = None,
    temperature: Annotated[
        float,
        typer.Option(
            help="Layer prior strength: scores are scaled by (block importance / mean)^T; 0 = pure global ranking."
        ),
    ] = 1.0,
    tau: Annotated[
        str,
        typer.Option(
            help="A block whose importance lies more than tau robust deviations below the median may be removed "
            "whole; None (auto) = 3, a large value disables it."
        ),
    ] = "None",
    round_to: Annotated[
        int,
        typer.Option(
            help="Keep every pruned MLP width a multiple of N (e.g. 64) so GPU kernels stay fast; 1 = any width."
        ),
    ] = 1,
    seed: Annotated[int, typer.Option(help="Seed for calibration sampling and random scores.")] = 0,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    gguf_file: GgufOption = None,
    revision: RevisionOption = None,
    trust_remote_code: Annotated[
        bool, typer.Option(help="Run modeling code shipped with MODEL (needed for foreign remote code).")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output directory.")] = False,
    json_output: JsonFlag = False,
    quiet: QuietFlag = False,
) -> None:
    from zhprune_hub.console import run_prune

    run_prune(
        dict(
            model=model,
            output=output,
            ratio=ratio,
            method=method,
            repair=repair,
            damping=damping,
            correction=correction,
            layout=layout,
            head_unit=head_unit,
            calibration=calibration,
            language=language,
            data_dir=data_dir,
            num_samples=num_samples,
            seq_len=seq_len,
            batch_size=batch_size,
            temperature=temperature,
            tau=tau,
            round_to=round_to,
            seed=seed,
            device=device,
            dtype=dtype,
            gguf_file=gguf_file,
            revision=revision,
            trust_remote_code=trust_remote_code or None,
            overwrite=overwrite,
        ),
        json_output=json_output,
        quiet=quiet,
    )


@app.command(help="Check every block's weight and bias shapes against the config, reload, and run a forward pass.")
def verify(
    directory: Annotated[Path, typer.Argument(help="A checkpoint written by `zhprune-hub prune`.")],
    base: Annotated[str | None, typer.Option(help="Base model, to compare biases, tokenizer and counts.")] = None,
    json_output: JsonFlag = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="No table: only failed checks, on stderr; the exit code says (0 ok, 1 failed)."
        ),
    ] = False,
) -> None:
    from zhprune_hub.console import run_verify

    if not run_verify(directory, base=base, json_output=json_output, quiet=quiet):
        raise typer.Exit(1)


@app.command(
    "export",
    help="Write a deployable OpenVINO copy of DIR (default DIR/openvino) through optimum-intel's exporter, with NNCF "
    "weight compression for int8/int4, and keep it only if it agrees with the PyTorch checkpoint: fp16 by its "
    "logits on a fixed text, every format by WikiText-2 perplexity. Runs in the export environment named by "
    "$ZHPRUNE_EXPORT_PYTHON (scripts/install_export_env.sh builds it).",
)
def export_cmd(
    directory: Annotated[Path, typer.Argument(help="A uniform-layout checkpoint written by `zhprune-hub prune`.")],
    export_format: Annotated[str, typer.Option("--format", help="Deployment format: openvino.")] = "openvino",
    weights: Annotated[str, typer.Option("--weights", help="fp16, int8 or int4 (NNCF weight compression).")] = "int8",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Export directory [default: DIR/openvino].")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a previous export at the output path.")] = False,
    group_size: Annotated[
        int | None, typer.Option("--group-size", help="int4 group size [default: 128, adjusted per tensor].")
    ] = None,
    ppl: Annotated[str, typer.Option("--ppl", help="Perplexity text of the check: corpus name or file.")] = "wikitext2",
    ppl_tokens: Annotated[int, typer.Option("--ppl-tokens", help="Leading tokens of the text evaluated.")] = 8192,
    ppl_seq_len: Annotated[int, typer.Option("--ppl-seq-len", help="Perplexity window in tokens.")] = 512,
    max_ppl_increase: Annotated[
        float,
        typer.Option("--max-ppl-increase", help="Largest relative perplexity increase over the PyTorch model kept."),
    ] = 0.10,
    max_logit_diff: Annotated[
        float, typer.Option("--max-logit-diff", help="fp16: largest absolute logit difference on the probe text.")
    ] = 0.5,
    data_dir: DataDirOption = None,
    json_output: JsonFlag = False,
    quiet: QuietFlag = False,
) -> None:
    from zhprune_hub.console import run_export

    run_export(
        dict(
            directory=directory,
            format=export_format,
            weights=weights,
            output=output,
            overwrite=overwrite,
            group_size=group_size,
            ppl_corpus=ppl,
            ppl_tokens=ppl_tokens,
            ppl_seq_len=ppl_seq_len,
            max_ppl_increase=max_ppl_increase,
            max_logit_diff=max_logit_diff,
            data_dir=data_dir,
        ),
        json_output=json_output,
        quiet=quiet,
    )


# --- datasets (corpora registry) -------------------------------------------------------------


@app.command("datasets")
def datasets_command(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Only these corpora (names or aliases); all when omitted.", show_default=False),
    ] = None,
    data_dir: DataDirOption = None,
    as_json: JsonFlag = False,
) -> None:
    """List calibration/evaluation corpora: aliases, language, use, and where each is read from here."""
    import json

    from zhprune_hub.data import get_corpus, list_datasets

    rows = list_datasets(data_dir)
    if names:
        wanted = {"auto" if name.strip().lower() == "auto" else get_corpus(name).name for name in names}
        rows = [row for row in rows if row["name"] in wanted]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return

    from rich.table import Table

    from zhprune_hub.console import make_console

    table = Table(title="Corpora: read from the local data directory when found, else from the Hub")
    for column in ("name", "aliases", "lang", "used for", "calibration read from", "evaluation read from"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["name"],
            ", ".join(row["aliases"]),
            row["language"],
            ", ".join(row["purposes"]),
            row["calibration"]["read_from"] if row["calibration"] else row.get("resolves_to", "-"),
            row["evaluation"]["read_from"] if row["evaluation"] else "-",
        )
    make_console().print(table)


# --- evaluate ----------------------------------------------------------------------------------


@app.command("evaluate")
def evaluate_cmd(
    models: Annotated[list[str], typer.Argument(help="Hub ids or checkpoint directories; the first is the reference.")],
    ppl: Annotated[
        str | None,
        typer.Option(
            "--ppl",
            help="Perplexity corpora, comma-separated, or 'none' [default: wikitext2,ptb (+c4_zh for a model "
            "measured competent in zh)].",
        ),
    ] = None,
    tasks: TasksOption = DEFAULT_TASKS,
    limit: LimitOption = None,
    include_path: IncludePathOption = None,
    seq_len: Annotated[
        int, typer.Option("--seq-len", min=2, help="Perplexity window (capped at the model context).")
    ] = 2048,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", min=2, help="Evaluate only this many leading tokens of each text.")
    ] = None,
    batch_size: Annotated[str, typer.Option("--batch-size", help="auto or a number of windows/requests.")] = "auto",
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    data_dir: DataDirOption = None,
    trust_remote_code: Annotated[
        bool | None,
        typer.Option(
            "--trust-remote-code/--no-trust-remote-code",
            help="Run modeling code shipped in a checkpoint (our own `global` layout is trusted automatically).",
        ),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the results JSON here ('-' prints it to stdout).")
    ] = None,
    quiet: QuietFlag = False,
) -> None:
    """Evaluate models (perplexity + lm-eval zero-shot) and compare each with the first."""
    from zhprune_hub.evaluate import evaluate_models, render_table
    from zhprune_hub.evaluate.runner import parse_batch_size, parse_names
    from zhprune_hub.preflight import evaluate_preflight
    from zhprune_hub.results import save_results

    # Before hours of evaluation, not after.
    json_out = evaluate_preflight(models, ppl=parse_names(ppl), device=device, dtype=dtype, json_out=json_out)
    results = evaluate_models(
        models,
        ppl=parse_names(ppl),
        tasks=parse_names(tasks) or [],
        limit=limit,
        seq_len=seq_len,
        max_tokens=max_tokens,
        batch_size=parse_batch_size(batch_size),
        data_dir=data_dir,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        quiet=quiet,
        include_path=include_path,
    )
    if json_out is not None and str(json_out) == "-":
        typer.echo(results.model_dump_json(indent=2))
        return
    failure = None
    if json_out is not None:
        try:
            save_results(results, json_out)
        except OSError as exc:  # the disk filled up or the folder went away during the evaluation
            from zhprune_hub.outputs import keep_elsewhere

            failure = keep_elsewhere(json_out, results.model_dump_json(indent=2) + "\n", error=exc, flag="--json")
    if not quiet:
        from zhprune_hub.console import make_console

        make_console().print(render_table(results))
        if json_out is not None and failure is None:
            make_console(stderr=True).print(f"Results written to {json_out}")
    if failure is not None:
        raise failure


# --- card / push / publish --------------------------------------------------------------------

_TOKEN_HELP = (
    " The Hub token is read only from HF_TOKEN (or the huggingface_hub login file) and is never printed or "
    "logged; HF_ENDPOINT selects a mirror or another Hub."
)


@app.command("card")
def card_cmd(
    directory: Annotated[Path, typer.Argument(help="A pruned checkpoint written by `zhprune-hub prune`.")],
    base: Annotated[str, typer.Option("--base", help="The base model (Hub id or directory): license, language.")],
    results: Annotated[Path, typer.Option("--results", help="Results JSON of `evaluate BASE DIR`.")],
    repo_id: Annotated[
        str | None, typer.Option("--repo-id", help="OWNER/NAME shown in the card; default: the results' model id.")
    ] = None,
) -> None:
    """Render README.md (model card) and the per-layer picture into DIR, and copy the results beside them."""
    from zhprune_hub.repo_assembly import card_into

    readme, ctx = card_into(directory, base=base, results_path=results, repo_id=repo_id)
    typer.echo(ctx.metrics_table)
    typer.echo(f"wrote {readme}")


@app.command(
    "push", help="Push DIR to the Hub as one commit (or one pull request), then verify it remotely." + _TOKEN_HELP
)
def push_cmd(
    directory: Annotated[Path, typer.Argument(help="Folder to push: weights, config, code, card, results.")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Target repository OWNER/NAME (created if missing).")],
    private: Annotated[bool, typer.Option("--private", help="Create the repository as private.")] = False,
    create_pr: Annotated[bool, typer.Option("--create-pr", help="Open a pull request instead of committing.")] = False,
    revision: Annotated[
        str | None, typer.Option("--revision", help="Target branch (created from main when missing).")
    ] = None,
    commit_message: Annotated[str, typer.Option("--commit-message", help="Commit title.")] = "Upload pruned model",
) -> None:
    from zhprune_hub.hub import push_folder
    from zhprune_hub.preflight import check_repo_id

    check_repo_id(repo_id)
    result = push_folder(
        directory,
        repo_id,
        endpoint=None,
        token=None,
        private=private,
        create_pr=create_pr,
        revision=revision,
        commit_message=commit_message,
    )
    if not result.changed:
        typer.echo(f"Identical content is already on {result.revision}: no new commit was made.")
    typer.echo(f"repo:   {result.repo_url}")
    typer.echo(f"commit: {result.commit_url}")
    if result.pr_url:
        typer.echo(f"PR:     {result.pr_url}")


#: publish flag -> plan field, for flags whose names differ from the plan's.
_PUBLISH_RENAMES = {"model": "model", "publish_seq_len": "seq_len", "publish_batch_size": "batch_size"}


@app.command(
    "publish",
    help="Pull MODEL, prune it, verify, evaluate base and pruned, write the model card and push it all as one "
    "commit. Every stage's output is kept under --work-dir keyed by a hash of the plan: a rerun resumes at the "
    "first unfinished stage. --config runs a zhprune.yaml plan with several variants (command-line options "
    "override its defaults)." + _TOKEN_HELP,
)
def publish_cmd(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="Hub id, checkpoint directory or GGUF directory.")] = None,
    repo_id: Annotated[
        str | None,
        typer.Option("--repo-id", help="OWNER/NAME, or a template such as {owner}/{model}-pruned-{percent}."),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="A zhprune.yaml publish plan.")] = None,
    ratio: Annotated[float, typer.Option(help="Fraction of TOTAL parameters to remove.")] = 0.2,
    method: MethodOption = "obs",
    repair: RepairOption = True,
    damping: DampingOption = 0.001,
    correction: CorrectionOption = 0.5,
    layout: Annotated[str, typer.Option(help="global (trust_remote_code) or uniform (stock config).")] = "global",
    head_unit: Annotated[str, typer.Option(help="group, query or none.")] = "group",
    calibration: Annotated[str, typer.Option(help="Corpus name, alias, mix, file path, or auto.")] = "auto",
    language: Annotated[str | None, typer.Option(help="zh or en: language of a calibration file.")] = None,
    data_dir: DataDirOption = None,
    num_samples: Annotated[int, typer.Option(help="Calibration windows.")] = 512,
    publish_seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per calibration window.")] = 128,
    publish_batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Calibration windows per block call (default: 4,096 tokens).")
    ] = None,
    temperature: Annotated[float, typer.Option(help="Layer prior strength; 0 = pure global ranking.")] = 1.0,
    tau: Annotated[str, typer.Option(help="Whole-block removal threshold; None = auto.")] = "None",
    round_to: Annotated[int, typer.Option(help="Keep every pruned MLP width a multiple of N.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed for calibration sampling.")] = 0,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    gguf_file: GgufOption = None,
    model_revision: Annotated[
        str | None, typer.Option("--model-revision", help="Hub branch, tag or commit of MODEL.")
    ] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="Run modeling code shipped with MODEL.")] = False,
    ppl: Annotated[
        str | None, typer.Option("--ppl", help="Perplexity corpora, comma-separated, or 'none' [default: by language].")
    ] = None,
    tasks: TasksOption = DEFAULT_TASKS,
    limit: LimitOption = None,
    include_path: IncludePathOption = None,
    ppl_seq_len: Annotated[int, typer.Option("--ppl-seq-len", help="Perplexity window in tokens.")] = 2048,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", help="Evaluate only this many leading tokens.")
    ] = None,
    eval_batch_size: Annotated[
        str, typer.Option("--eval-batch-size", help="auto or windows/requests per pass.")
    ] = "auto",
    export: Annotated[
        str | None,
        typer.Option(
            "--export",
            help="Also publish an OpenVINO export (fp16, int8 or int4) in openvino/; needs $ZHPRUNE_EXPORT_PYTHON "
            "and the uniform layout.",
        ),
    ] = None,
    export_max_ppl_increase: Annotated[
        float, typer.Option("--export-max-ppl-increase", help="Largest relative perplexity increase of the export.")
    ] = 0.10,
    private: Annotated[bool, typer.Option("--private", help="Create the repository as private.")] = False,
    create_pr: Annotated[bool, typer.Option("--create-pr", help="Open a pull request instead of committing.")] = False,
    revision: Annotated[str | None, typer.Option("--revision", help="Target branch (created from main).")] = None,
    commit_message: Annotated[str | None, typer.Option("--commit-message", help="Commit title.")] = None,
    work_dir: Annotated[Path, typer.Option("--work-dir", help="Where stage outputs are kept.")] = Path(".zhprune/work"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Everything but the push; print the would-be repo.")
    ] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failed variant.")] = False,
    variant: Annotated[
        str | None, typer.Option("--variant", help="Publish only the --config variant with this id (`plan matrix`).")
    ] = None,
    base_results_dir: Annotated[
        Path | None,
        typer.Option("--base-results-dir", help="Base-model results store [default: WORK_DIR/base-results]."),
    ] = None,
    json_output: JsonFlag = False,
    quiet: QuietFlag = False,
) -> None:
    from zhprune_hub.plan import load_plan, plan_from_flags, resolve_variants
    from zhprune_hub.publish import publish
    from zhprune_hub.publish_output import RichReporter, print_report

    skip = {"config", "work_dir", "dry_run", "fail_fast", "json_output", "quiet", "variant", "base_results_dir"}
    if config is None and model is not None and model.endswith((".yaml", ".yml")) and Path(model).is_file():
        config, model = Path(model), None  # `publish zhprune.yaml`: a plan file is never a model
        skip.add("model")
    # By name: typer >= 0.29 ships its own copy of click, whose ParameterSource is another enum.
    typed = {k for k in ctx.params if getattr(ctx.get_parameter_source(k), "name", None) == "COMMANDLINE"}
    values = {_PUBLISH_RENAMES.get(k, k): v for k, v in ctx.params.items() if k not in skip}
    given = {_PUBLISH_RENAMES.get(k, k) for k in typed if k not in skip} | ({"model"} if model else set())
    values["trust_remote_code"] = values["trust_remote_code"] or None
    if values["eval_batch_size"].isdigit():
        values["eval_batch_size"] = int(values["eval_batch_size"])
    if config is None:
        plan = plan_from_flags({k: v for k, v in values.items() if v is not None})
        variants = resolve_variants(plan, where="The command line")
    else:
        # Only what was typed overrides the plan; typer's defaults must not mask its values.
        typed_values = {k: v for k, v in values.items() if k in given and v is not None}
        overrides = plan_from_flags(typed_values).defaults.model_dump(exclude_unset=True)
        variants = resolve_variants(load_plan(config), overrides=overrides, where=str(config))
    if variant is not None:
        from zhprune_hub.plan import select_variant

        variants = [select_variant(variants, variant, where=str(config or "The command line"))]
    # Stage lines go to stderr, so they stay visible (e.g. in an Actions log) beside --json on stdout.
    reporter = None if quiet else RichReporter()
    report = publish(
        variants,
        work_dir=work_dir,
        dry_run=dry_run,
        fail_fast=fail_fast,
        reporter=reporter,
        base_results_dir=base_results_dir,
    )
    print_report(report, json_output=json_output, quiet=quiet)
    if not report.ok:
        raise typer.Exit(1)
