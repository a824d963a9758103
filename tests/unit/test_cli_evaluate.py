"""The evaluate command and its building blocks, on tiny random checkpoints and the local data files."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.tiny_models import make_tiny_checkpoint
from zhprune_hub.cli import app
from zhprune_hub.errors import EvaluationError
from zhprune_hub.evaluate import perplexity as ppl
from zhprune_hub.evaluate import zeroshot
from zhprune_hub.results import load_results


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny_eval")
    return make_tiny_checkpoint("llama", root / "base", seed=0), make_tiny_checkpoint("qwen2", root / "other", seed=1)


def test_windows_are_non_overlapping_capped_and_drop_the_tail() -> None:
    ids = torch.arange(1000)
    windows = ppl.make_windows(ids, seq_len=300, context=256)
    assert windows.shape == (3, 256) and windows[1, 0] == 256
    assert ppl.make_windows(ids, seq_len=128, max_tokens=300).shape == (2, 128)
    assert ppl.make_windows(ids, seq_len=2048, max_tokens=100).shape == (1, 100)
    with pytest.raises(EvaluationError, match="--seq-len 1 is too short"):
        ppl.make_windows(ids, seq_len=1)


def test_perplexity_equals_plain_forward_with_labels(tiny_dirs: tuple[Path, Path]) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dirs[0]).eval()
    ids = torch.randint(0, 320, (700,))
    out = ppl.perplexity(model, ids, seq_len=128, batch_size=2)
    windows = ids[: 5 * 128].view(5, 128)
    with torch.no_grad():
        losses = [model(w[None], labels=w[None]).loss.item() for w in windows]
    assert (out.windows, out.seq_len, out.tokens_evaluated, out.tokens_predicted) == (5, 128, 640, 635)
    assert out.perplexity == pytest.approx(math.exp(sum(losses) / 5), rel=1e-5)
    assert out.perplexity_stderr is not None and out.perplexity_stderr > 0


def test_local_prompts_match_lm_eval_defaults(shared_data: Path) -> None:
    piqa = zeroshot.local_task_config("piqa", shared_data)
    doc = piqa["custom_dataset"]()["validation"][0]
    assert piqa["doc_to_text"](doc) == "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:"
    boolq = zeroshot.local_task_config("boolq", shared_data)
    text = boolq["doc_to_text"](boolq["custom_dataset"]()["validation"][0])
    assert not text.startswith("Passage:") and text.endswith("?\nAnswer:") and "\nQuestion: " in text
    hellaswag = zeroshot.local_task_config("hellaswag", shared_data)["custom_dataset"]()["validation"]
    assert len(hellaswag) == 10042 and hellaswag[0]["query"].startswith("Roof shingle removal: A man")
    assert set(hellaswag["gold"]) == {0, 1, 2, 3} and {len(c) for c in hellaswag["choices"]} == {4}
    wino = zeroshot.local_task_config("winogrande", shared_data)
    assert (wino["doc_to_text"], wino["doc_to_choice"], wino["doc_to_target"]) == (
        "gold",
        "context_options",
        "continuation",
    )


def test_unknown_task_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="'nosuchtask' is not supported; choose from boolq"):
        zeroshot.validate_tasks(["piqa", "nosuchtask"])
    with pytest.raises(EvaluationError, match=r"needs .*piqa\.jsonl, which is missing"):
        zeroshot.local_task_config("piqa", tmp_path)


def test_evaluate_two_models_writes_results_with_deltas(
    tiny_dirs: tuple[Path, Path], shared_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results.json"
    args = ["evaluate", str(tiny_dirs[0]), str(tiny_dirs[1]), "--ppl", "wikitext2", "--max-tokens", "600"]
    args += ["--seq-len", "128", "--tasks", "piqa,winogrande", "--limit", "3", "--data-dir", str(shared_data)]
    result = CliRunner().invoke(app, [*args, "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    results = load_results(out)
    base, other = results.models
    assert results.reference == str(tiny_dirs[0])
    assert base.perplexity[0].tokens_evaluated == 512 and base.perplexity[0].seq_len == 128
    assert [z.task for z in base.zeroshot] == ["piqa", "winogrande"]
    assert {z.source for z in base.zeroshot} == {"local"} and base.zeroshot[0].samples == 3
    assert results.protocol.zeroshot is not None and results.protocol.zeroshot.limit == 3
    assert results.protocol.zeroshot.lm_eval_version
    keys = {d.metric for d in results.deltas}
    assert {"ppl/wikitext2", "acc/piqa", "acc_norm/piqa", "acc/winogrande", "acc/mean"} <= keys
    for d in results.deltas:
        assert d.absolute == pytest.approx(other.metrics()[d.metric].value - base.metrics()[d.metric].value)


def _run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = "from zhprune_hub.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_offline_without_data_dir_is_one_clear_sentence(tiny_dirs: tuple[Path, Path]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ZHPRUNE_DATA_DIR"}
    env["HF_HUB_OFFLINE"] = "1"
    proc = _run_cli(["evaluate", str(tiny_dirs[0]), "--ppl", "none", "--tasks", "piqa"], env)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "Error: Zero-shot tasks need the Hugging Face Hub or a local data directory" in proc.stderr
    assert "--data-dir" in proc.stderr


def test_bad_batch_size_is_refused(tiny_dirs: tuple[Path, Path]) -> None:
    result = CliRunner().invoke(app, ["evaluate", str(tiny_dirs[0]), "--batch-size", "lots", "--quiet"])
    assert isinstance(result.exception, EvaluationError)
    assert "--batch-size 'lots' is neither 'auto' nor a positive integer" in str(result.exception)


def test_json_dash_prints_the_document(tiny_dirs: tuple[Path, Path], shared_data: Path) -> None:
    args = ["evaluate", str(tiny_dirs[0]), "--ppl", "ptb", "--max-tokens", "300", "--tasks", "none"]
    result = CliRunner().invoke(app, [*args, "--data-dir", str(shared_data), "--json", "-", "--quiet"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == 1 and doc["protocol"]["zeroshot"] is None
    assert doc["models"][0]["perplexity"][0]["dataset"] == "ptb"
