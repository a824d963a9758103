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

# Shared options, defined once so every command spells them the same way.
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Local data directory (layout in the README); defaults to $ZHPRUNE_DATA_DIR.",
        envvar="ZHPRUNE_DATA_DIR",
    ),
]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
DtypeOption = Annotated[
    str, typer.Option("--dtype", help="auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16, float16.")
]
RevisionOption = Annotated[str | None, typer.Option("--revision", help="Hub branch, tag or commit of MODEL.")]
GgufOption = Annotated[str | None, typer.Option("--gguf-file", help="GGUF file inside MODEL's directory to load.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]
QuietFlag = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or tables.")]


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


def main() -> None:
    """Entry point: run the app, turning known errors into one sentence."""
    try:
        code = app(standalone_mode=False)
    except ZhpruneError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        if os.environ.get("ZHPRUNE_DEBUG"):
            raise
        print("Set ZHPRUNE_DEBUG=1 for the traceback.", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("Aborted.", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("Interrupted; nothing was published and partial outputs were discarded.", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)


# --- prune / verify (pruning engine) ---------------------------------------------------------

# --- datasets (corpora registry) -------------------------------------------------------------

# --- evaluate ----------------------------------------------------------------------------------

# --- card / push / publish --------------------------------------------------------------------
