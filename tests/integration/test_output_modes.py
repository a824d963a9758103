"""`--json` and `--quiet` of prune, verify, evaluate and publish, and tables that never cut a number.

Real processes through the installed `zhprune-hub` console script on a tiny random checkpoint. `--json`
must leave stdout holding exactly one JSON document (logs and progress go to stderr); `--quiet` must
leave stdout empty. Tables printed to a pipe (a CI log) or a narrow terminal fold, never end in "…".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import TEXT, make_tiny_checkpoint

ENTRY_POINT = Path(sys.executable).with_name("zhprune-hub")
SCRUBBED = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "COLUMNS")


def _run(*args: str, columns: int | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", HF_HUB_DISABLE_XET="1", TOKENIZERS_PARALLELISM="false")
    if columns is not None:
        env["COLUMNS"] = str(columns)
    process = subprocess.run([str(ENTRY_POINT), *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd)
    assert "Traceback" not in process.stdout + process.stderr, process.stderr[-3000:]
    return process


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not ENTRY_POINT.exists():
        pytest.skip(f"the zhprune-hub console script is not installed beside {sys.executable}; pip install -e .")
    root = tmp_path_factory.mktemp("modes")
    text = root / "corpus.txt"
    text.write_text("\n\n".join([TEXT] * 20))
    return {"root": root, "model": make_tiny_checkpoint("llama", root / "model"), "text": text}


def _prune(tiny: dict[str, Path], name: str, *flags: str, columns: int | None = None):
    out = tiny["root"] / name
    return out, _run("prune", str(tiny["model"]), "-o", str(out), "--method", "magnitude", *flags, columns=columns)


def test_prune_json_quiet_and_full_numbers(tiny) -> None:
    out, as_json = _prune(tiny, "json", "--json")
    assert as_json.returncode == 0, as_json.stderr[-3000:]
    document = json.loads(as_json.stdout)  # the whole of stdout, nothing else
    assert Path(document["output"]) == out.resolve() and document["report"]["family"] == "llama"

    _, quiet = _prune(tiny, "quiet", "--quiet")
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stdout == "" and "Pruned" not in quiet.stderr

    # A pipe (a CI log): full width, so every count appears whole, on one line.
    _, piped = _prune(tiny, "piped")
    assert piped.returncode == 0, piped.stderr[-3000:]
    before = document["report"]["parameters"]["before"]
    after = document["report"]["parameters"]["after"]
    for number in (*before.values(), *after.values()):
        assert f"{number:,}" in piped.stdout, piped.stdout
    assert "…" not in piped.stdout

    # A narrow terminal: cells fold onto more lines, never end in an ellipsis.
    _, narrow = _prune(tiny, "narrow", columns=30)
    assert narrow.returncode == 0 and "…" not in narrow.stdout, narrow.stdout
    # Folding moves digits onto more lines but drops none: the table holds the same digits as the wide one.
    assert _digits(narrow.stdout) == _digits(piped.stdout), (narrow.stdout, piped.stdout)


def _digits(text: str) -> list[str]:
    """The digits of what comes before the closing `wrote ...` line (which holds timings), sorted."""
    return sorted(ch for ch in text.split("wrote ")[0] if ch.isdigit())


def test_verify_json_and_quiet(tiny) -> None:
    out, pruned = _prune(tiny, "to_verify", "--quiet")
    assert pruned.returncode == 0, pruned.stderr[-3000:]
    as_json = _run("verify", str(out), "--base", str(tiny["model"]), "--json")
    assert as_json.returncode == 0, as_json.stderr[-3000:]
    document = json.loads(as_json.stdout)
    assert document["ok"] is True and document["checks"]
    quiet = _run("verify", str(out), "--quiet")
    assert quiet.returncode == 0 and quiet.stdout == "", quiet.stdout + quiet.stderr[-3000:]
    narrow = _run("verify", str(out), columns=30)
    assert narrow.returncode == 0 and "…" not in narrow.stdout, narrow.stdout


def test_evaluate_json_and_quiet(tiny) -> None:
    flags = ("--ppl", str(tiny["text"]), "--tasks", "none", "--seq-len", "64", "--max-tokens", "256")
    to_stdout = _run("evaluate", str(tiny["model"]), *flags, "--json", "-")
    assert to_stdout.returncode == 0, to_stdout.stderr[-3000:]
    document = json.loads(to_stdout.stdout)  # progress and notes went to stderr
    assert document["models"][0]["perplexity"], document

    target = tiny["root"] / "results.json"
    quiet = _run("evaluate", str(tiny["model"]), *flags, "--json", str(target), "--quiet")
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stdout == "" and json.loads(target.read_text())["models"]

    narrow = _run("evaluate", str(tiny["model"]), *flags, columns=30)
    assert narrow.returncode == 0 and "…" not in narrow.stdout, narrow.stdout


def test_publish_json_and_quiet(tiny) -> None:
    flags = ("--repo-id", "me/tiny-pruned", "--method", "magnitude", "--tasks", "none", "--ppl", str(tiny["text"]))
    flags += ("--max-tokens", "256", "--ppl-seq-len", "64", "--dry-run")
    work = tiny["root"] / "work"
    as_json = _run("publish", str(tiny["model"]), *flags, "--work-dir", str(work), "--json")
    assert as_json.returncode == 0, as_json.stderr[-3000:]
    document = json.loads(as_json.stdout)
    assert document["variants"][0]["status"] == "dry-run", document
    quiet = _run("publish", str(tiny["model"]), *flags, "--work-dir", str(work), "--quiet")
    assert quiet.returncode == 0 and quiet.stdout == "", quiet.stdout + quiet.stderr[-3000:]
    narrow = _run("publish", str(tiny["model"]), *flags, "--work-dir", str(work), columns=30)
    assert narrow.returncode == 0 and "…" not in narrow.stdout, narrow.stdout
