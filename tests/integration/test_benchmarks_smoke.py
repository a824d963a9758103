"""Each benchmark script, once, on a tiny Qwen2 for one configuration, so the scripts cannot silently rot.

Benchmarks are not tests: this only checks that every script runs end to end, writes finite numbers
under the expected keys, prints its command into the Markdown, and skips finished work on a rerun.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.tiny_models import make_tiny_checkpoint

# One ratio, one method, tiny calibration and evaluation budgets.
COMMON = ["--ratios", "0.2", "--methods", "taylor", "--layouts", "global", "--calibration", "c4"]
COMMON += ["--num-samples", "4", "--seq-len", "32", "--device", "cpu"]
EVAL = ["--ppl-seq-len", "64", "--ppl-max-tokens", "256", "--tasks", "piqa", "--limit", "4"]


@pytest.fixture(scope="module")
def tiny_qwen2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint("qwen2", tmp_path_factory.mktemp("bench") / "tiny_qwen2")


def run_script(script: str, model: Path, out: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, f"benchmarks/{script}", "--models", str(model), *COMMON, *extra]
    command += ["--data-dir", str(data), "--work-dir", str(out.parent / "work")]
    command += ["--out", str(out), "--markdown", str(out.with_suffix(".md"))]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def load(out: Path) -> dict:
    data = json.loads(out.read_text())
    for key, record in data["results"].items():
        assert "error" not in record, (key, record["error"])
    return data


def check_eval(record: dict, corpora: list[str]) -> None:
    assert sorted(record["perplexity"]) == sorted(corpora)
    for corpus in corpora:
        assert finite(record["perplexity"][corpus]["ppl"]) and record["perplexity"][corpus]["tokens"] > 0
    assert record["zeroshot"]["piqa"]["samples"] == 4
    assert finite(record["zeroshot_mean"]["acc_norm"])


def test_quality_runs_and_resumes(tiny_qwen2: Path, shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "quality.json"
    run_script("quality.py", tiny_qwen2, out, shared_data, *EVAL)
    results = load(out)["results"]
    model = str(tiny_qwen2.resolve())
    tail = "ratio=0.2|seed=0|calibration=c4|n=4|L=32"
    expected = {
        f"model={model}|method=base",
        f"model={model}|method=taylor|layout=global|{tail}",
        f"model={model}|method=shortgpt|layout=blocks|{tail}",
    }
    assert set(results) == expected
    for record in results.values():
        check_eval(record, ["wikitext2", "ptb", "c4_zh"])
    shortgpt = results[f"model={model}|method=shortgpt|layout=blocks|{tail}"]
    assert shortgpt["removed_blocks"] and shortgpt["removed_fraction_of_total"] >= 0.2
    assert 0.2 <= results[f"model={model}|method=taylor|layout=global|{tail}"]["removed_fraction_of_total"] < 0.3
    markdown = out.with_suffix(".md").read_text()
    assert "python benchmarks/quality.py --models" in markdown and "| shortgpt | blocks |" in markdown

    rerun = run_script("quality.py", tiny_qwen2, out, shared_data, *EVAL)
    assert rerun.stderr.count("skip (done)") == 3 and "] run:" not in rerun.stderr
    again = load(out)
    assert again["results"] == results
    assert len(again["commands"]) == 2


def test_calibration_language_runs(tiny_qwen2: Path, shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "calibration.json"
    run_script(
        "calibration_language.py",
        tiny_qwen2,
        out,
        shared_data,
        *EVAL,
        "--calibrations",
        "c4",
        "--seeds",
        "0",
        "--no-base",
    )
    results = load(out)["results"]
    assert len(results) == 1
    pruned = [r for r in results.values() if r["method"] == "taylor"]
    assert len(pruned) == 1 and pruned[0]["calibration"]["name"] == "c4"
    for record in results.values():
        check_eval(record, ["wikitext2", "c4_zh"])
    assert "python benchmarks/calibration_language.py" in out.with_suffix(".md").read_text()


def test_speed_runs(tiny_qwen2: Path, shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    extra = ["--prefill-len", "32", "--decode-tokens", "4", "--repeats", "1"]
    run_script("speed.py", tiny_qwen2, out, shared_data, *extra)
    results = load(out)["results"]
    by_measure: dict[str, list[dict]] = {}
    for record in results.values():
        by_measure.setdefault(record["measure"], []).append(record)
    assert [r["floor"] for r in by_measure["floor"]] == ["forward_backward"]
    (prune,) = by_measure["prune"]
    assert prune["calibration"]["token_hash"] == by_measure["floor"][0]["token_hash"]
    assert finite(prune["prune_timings"]["collect_s"]) and prune["memory"]["peak_rss_mb"] > 0
    assert sorted(r["method"] for r in by_measure["infer"]) == ["base", "taylor"]
    for record in by_measure["infer"]:
        assert finite(record["inference"]["prefill_tokens_per_s"]) and record["inference"]["decode_tokens_per_s"] > 0
    markdown = out.with_suffix(".md").read_text()
    assert "python benchmarks/speed.py" in markdown and "| taylor | global | 0.2 |" in markdown


def test_eval_throughput_runs(tiny_qwen2: Path, shared_data: Path) -> None:
    command = [sys.executable, "benchmarks/eval_throughput.py", "--model", str(tiny_qwen2), "--seq-len", "32"]
    command += ["--max-tokens", "256", "--batch-size", "2", "--repeats", "1", "--data-dir", str(shared_data)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    document = json.loads(completed.stdout[completed.stdout.index("\n{") :])
    (row,) = document["results"]
    assert (row["seq_len"], row["tokens"], row["batch_size"]) == (32, 256, 2)
    assert finite(row["perplexity"]) and row["ppl_tokens_per_s"] > 0 and row["bare_forward_tokens_per_s"] > 0


def test_eval_memory_runs(tiny_qwen2: Path, shared_data: Path) -> None:
    command = [sys.executable, "benchmarks/eval_memory.py", "--model", str(tiny_qwen2), "--seq-len", "32"]
    command += ["--max-tokens", "128", "--data-dir", str(shared_data)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    row = json.loads(completed.stdout.strip().splitlines()[-1])
    assert (row["seq_len"], row["tokens"], row["kernel"]) == (32, 128, "current")
    assert finite(row["perplexity"]) and row["peak_rss_mb"] >= row["peak_rss_model_mb"] > 0


@pytest.mark.skipif(not os.environ.get("ZHPRUNE_EXPORT_PYTHON"), reason="ZHPRUNE_EXPORT_PYTHON is unset")
def test_export_speed_runs(tiny_qwen2: Path, shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "export_speed.json"
    command = [sys.executable, "benchmarks/export_speed.py", "--models", str(tiny_qwen2), "--method", "magnitude"]
    command += ["--weights", "int8"]  # one format keeps it short; fp16 exports are checked in test_export_openvino
    command += ["--ppl-tokens", "1024", "--prefill-len", "32", "--decode-tokens", "4", "--repeats", "1"]
    command += ["--data-dir", str(shared_data), "--work-dir", str(tmp_path / "work")]
    command += ["--out", str(out), "--markdown", str(out.with_suffix(".md"))]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = load(out)["results"]
    speeds = [r for key, r in results.items() if key.startswith("stage=speed")]
    assert len(speeds) == 4 and all(r["decode_tokens_per_s"] > 0 for r in speeds)
    exports = [r for key, r in results.items() if key.startswith("stage=export")]
    assert len(exports) == 2 and all(r["check"]["passed"] for r in exports)
    markdown = out.with_suffix(".md").read_text()
    assert "python benchmarks/export_speed.py" in markdown and "| pruned | OpenVINO | int8 |" in markdown
    assert "| OpenVINO | fp16 |" not in markdown
    pytorch_row = next(line for line in markdown.splitlines() if line.startswith("| pruned | PyTorch |"))
    assert "—" not in pytorch_row.split("|")[9]  # its perplexity comes from the int8 export's check
