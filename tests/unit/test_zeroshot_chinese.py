"""xcopa_zh and cmmlu offline: lm-eval's own task configs over the local upstream files, scored by real lm-eval."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.tiny_models import make_tiny_checkpoint
from zhprune_hub.errors import EvaluationError
from zhprune_hub.evaluate import evaluate_model, zeroshot

LIMIT = 12


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = make_tiny_checkpoint("llama", tmp_path_factory.mktemp("tiny") / "llama", seed=3)
    return AutoModelForCausalLM.from_pretrained(directory).eval(), AutoTokenizer.from_pretrained(directory)


def _loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    """Sum of log-probabilities of the continuation's tokens, split as lm-eval splits a causal pair."""
    import torch

    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    head = tokenizer(context, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([whole[:-1]])).logits[0].log_softmax(-1)
    return sum(logits[i - 1, whole[i]].item() for i in range(len(head), len(whole)))


def test_xcopa_zh_equals_a_direct_loglikelihood_comparison(tiny, shared_data: Path) -> None:
    model, tokenizer = tiny
    result = evaluate_model(model, tokenizer, model_id="tiny", ppl=[], tasks=["xcopa_zh"], limit=LIMIT,
                            data_dir=shared_data, batch_size=4)  # fmt: skip
    (outcome,) = result.zeroshot
    assert (outcome.samples, outcome.samples_total) == (LIMIT, 500)  # lm-eval's xcopa_zh scores the test split
    assert outcome.data_source.endswith("zeroshot/xcopa_zh/test.zh.jsonl") and outcome.acc_norm is None
    rows = [json.loads(line) for line in (shared_data / "zeroshot/xcopa_zh/test.zh.jsonl").open(encoding="utf-8")]
    correct = 0
    for row in rows[:LIMIT]:
        # lm-eval's xcopa_zh prompt: the premise without its full stop, then 因为 (cause) or 所以 (effect).
        context = row["premise"].strip()[:-1] + (" 因为" if row["question"] == "cause" else " 所以")
        scores = [_loglikelihood(model, tokenizer, context, " " + row[key]) for key in ("choice1", "choice2")]
        correct += int(scores.index(max(scores)) == row["label"])
    assert outcome.acc == pytest.approx(correct / LIMIT)


def test_cmmlu_reports_every_subject_and_their_size_weighted_mean(tiny, shared_data: Path) -> None:
    model, tokenizer = tiny
    result = evaluate_model(model, tokenizer, model_id="tiny", ppl=[], tasks=["cmmlu"], limit=1,
                            data_dir=shared_data, batch_size=4)  # fmt: skip
    (outcome,) = result.zeroshot
    subjects = sorted(path.stem for path in (shared_data / "zeroshot/cmmlu/test").glob("*.csv"))
    assert len(subjects) == zeroshot.CMMLU_SUBJECTS_TOTAL
    assert [sub.task for sub in outcome.subtasks] == [f"cmmlu_{name}" for name in subjects]
    assert outcome.samples == 67 and outcome.samples_total == zeroshot.CMMLU_TEST_ROWS
    assert outcome.acc == pytest.approx(sum(sub.acc * sub.samples for sub in outcome.subtasks) / outcome.samples)
    assert all(sub.acc in (0.0, 1.0) for sub in outcome.subtasks)
    assert result.model_dump()["zeroshot"][0]["subtasks"][0]["task"] == "cmmlu_agronomy"
    assert "acc/cmmlu" in result.metrics()


def _copy(shared_data: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / "data" / "zeroshot" / name
    shutil.copytree(shared_data / "zeroshot" / name, target)
    return tmp_path / "data"


def test_damaged_local_files_are_one_sentence(shared_data: Path, tmp_path: Path) -> None:
    data = _copy(shared_data, tmp_path, "xcopa_zh")
    test = data / "zeroshot/xcopa_zh/test.zh.jsonl"
    test.write_text("".join(test.read_text(encoding="utf-8").splitlines(keepends=True)[:3]), encoding="utf-8")
    with pytest.raises(EvaluationError, match=r"has 3 rows, not the upstream 500; restore the upstream file\.$"):
        zeroshot.overlay_configs("xcopa_zh", data)
    data = _copy(shared_data, tmp_path, "cmmlu")
    (data / "zeroshot/cmmlu/test/anatomy.csv").write_text(",Question,A,B\n0,q,a,b\n", encoding="utf-8")
    with pytest.raises(EvaluationError, match=r"anatomy.csv for task 'cmmlu' lacks the fields \['C', 'D', 'Answer'\]"):
        zeroshot.overlay_configs("cmmlu", data)
    with pytest.raises(EvaluationError, match="is missing; copy the upstream file"):
        zeroshot.overlay_configs("xcopa_zh", tmp_path / "nowhere")


def test_task_names(shared_data: Path) -> None:
    assert zeroshot.validate_tasks(["xcopa_zh", "cmmlu", "piqa"]) == ["xcopa_zh", "cmmlu", "piqa"]
    assert zeroshot.validate_tasks(["auto"]) == ["auto"]
    with pytest.raises(EvaluationError, match="'mmlu' is not supported; choose from boolq"):
        zeroshot.validate_tasks(["mmlu"])
    assert zeroshot.HUB_DATASETS["xcopa_zh"] == ("cambridgeltl/xcopa", "zh")
    assert zeroshot.HUB_DATASETS["cmmlu"] == ("haonan-li/cmmlu", None)
