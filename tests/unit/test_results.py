"""The results schema: round trip, atomic write, and one-sentence errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zhprune_hub.errors import EvaluationError
from zhprune_hub.results import (
    SCHEMA_VERSION,
    Environment,
    EvaluationResults,
    ModelResults,
    PerplexityResult,
    Protocol,
    ZeroShotResult,
    compute_deltas,
    load_results,
    save_results,
)


def make_model(model_id: str, *, ppl: float = 10.0, acc: float = 0.5, params: int = 1000) -> ModelResults:
    return ModelResults(
        model_id=model_id,
        parameters=params,
        device="cpu",
        dtype="float32",
        perplexity=[
            PerplexityResult(
                dataset="wikitext2",
                source="wiki.test.raw",
                language="en",
                perplexity=ppl,
                perplexity_stderr=0.1,
                nll=2.3,
                seq_len=2048,
                windows=2,
                tokens_evaluated=4096,
                tokens_predicted=4094,
                tokens_total=300000,
                seconds=1.0,
                tokens_per_second=4096.0,
            )
        ],
        zeroshot=[
            ZeroShotResult(
                task="piqa",
                acc=acc,
                acc_stderr=0.05,
                acc_norm=acc,
                acc_norm_stderr=0.05,
                samples=50,
                samples_total=1838,
                source="local",
                data_source="piqa.jsonl",
                seconds=1.0,
            )
        ],
    )


def make_results(*models: ModelResults) -> EvaluationResults:
    ref, *others = models
    return EvaluationResults(
        created_at="2025-01-01T00:00:00+00:00",
        reference=ref.model_id,
        models=list(models),
        deltas=compute_deltas(ref, others),
        protocol=Protocol(device="cpu", dtype="float32", batch_size="auto"),
        environment=Environment(zhprune_hub="0.1.0", python="3.11", torch="2", transformers="5"),
    )


def test_round_trip(tmp_path: Path) -> None:
    results = make_results(make_model("base"), make_model("pruned", ppl=12.0, acc=0.4))
    path = save_results(results, tmp_path / "sub" / "results.json")
    assert load_results(path) == results
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert {d["metric"] for d in data["deltas"]} == {"ppl/wikitext2", "acc/piqa", "acc_norm/piqa"}
    assert not [p for p in path.parent.iterdir() if p.name != "results.json"], "temp file left behind"
    assert path.stat().st_mode & 0o777 == 0o644  # readable by the runner's other users, like any output


def test_failed_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_results(make_results(make_model("base")), tmp_path / "r.json")
    before = path.read_text()

    def boom(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("zhprune_hub.outputs.os.replace", boom)
    with pytest.raises(OSError):
        save_results(make_results(make_model("other")), path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "is not valid JSON"),
        (json.dumps({"schema_version": 99}), "has schema_version 99"),
        (json.dumps({"schema_version": SCHEMA_VERSION, "models": []}), "is invalid at"),
    ],
)
def test_bad_files_give_one_sentence(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "r.json"
    path.write_text(content)
    with pytest.raises(EvaluationError, match=fragment) as info:
        load_results(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "re-run" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="does not exist; run `zhprune-hub evaluate` first"):
        load_results(tmp_path / "nope.json")


def test_metrics_keys_and_mean_directions() -> None:
    metrics = make_model("m").metrics()
    assert metrics["ppl/wikitext2"].better == "lower"
    assert metrics["acc/piqa"].better == "higher"
    assert metrics["acc_norm/piqa"].stderr == 0.05
