"""Zero-shot tasks beyond the English five, scored by real lm-eval.

xcopa_zh and cmmlu offline (lm-eval's own task configs over the local upstream files), a user's task
via --include-path, any registry name, and the one-sentence errors.
"""

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
    assert outcome.data_sha256 is not None and len(outcome.data_sha256) == 64
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


USER_TASK = """task: my_yes_no
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: gold
metric_list:
  - metric: acc
metadata:
  version: 1.0
"""

ITEMS = [
    {"question": "The sky on a clear day is", "choices": ["blue", "green", "loud"], "gold": 0},
    {"question": "Two plus two is", "choices": ["four", "seven"], "gold": 0},
    {"question": "Fire feels", "choices": ["cold", "hot"], "gold": 1},
    {"question": "结构化剪枝会移除", "choices": ["注意力头", "天气"], "gold": 0},
]


def test_include_path_task_equals_a_direct_computation(tiny, tmp_path: Path) -> None:
    model, tokenizer = tiny
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in ITEMS), encoding="utf-8")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "my_yes_no.yaml").write_text(USER_TASK.format(data=data), encoding="utf-8")
    result = evaluate_model(model, tokenizer, model_id="tiny", ppl=[], tasks=["my_yes_no"], include_path=tasks,
                            data_dir=None, task_source="local", batch_size=2)  # fmt: skip
    (outcome,) = result.zeroshot
    correct = 0
    for item in ITEMS:
        scores = [_loglikelihood(model, tokenizer, item["question"], " " + choice) for choice in item["choices"]]
        correct += int(scores.index(max(scores)) == item["gold"])
    assert outcome.acc == pytest.approx(correct / len(ITEMS)) and outcome.samples == len(ITEMS)
    assert outcome.source == "local" and str(data) in outcome.data_source


def test_local_data_identity(shared_data: Path, tmp_path: Path) -> None:
    # The digest the data README records for CMMLU: every dev/ and test/ CSV, sorted by path, concatenated.
    configs, _ = zeroshot.overlay_configs("cmmlu", shared_data)
    assert configs[0]["metadata"]["sha256"] == "5e1db330b82765f70f45dab62bb2e5fe8891dcb315d838ee4b4a9aaa58dc73ef"
    assert len(configs) == 67 and configs[0]["task"] == "cmmlu_agronomy" and "custom_dataset" in configs[0]
    piqa = zeroshot.local_task_config("piqa", shared_data)
    assert piqa["metadata"]["sha256"] == "d2870e73aec5154df3faf259b7700876e11608eebdf69e9d6667435673dbe4e0"
    # A file renamed to arc_easy.jsonl is not scored as ARC-Easy.
    (tmp_path / "zeroshot").mkdir()
    shutil.copy(shared_data / "zeroshot/piqa.jsonl", tmp_path / "zeroshot/arc_easy.jsonl")
    with pytest.raises(
        EvaluationError, match=r"arc_easy.jsonl for task 'arc_easy' has 1838 rows, not the upstream 2376"
    ):
        zeroshot.local_task_config("arc_easy", tmp_path)
    shutil.copy(shared_data / "zeroshot/winogrande.jsonl", tmp_path / "zeroshot/piqa.jsonl")
    with pytest.raises(EvaluationError, match=r"lacks the fields \['query', 'choices'\]"):
        zeroshot.local_task_config("piqa", tmp_path)


def test_task_names_and_their_errors(tiny, shared_data: Path, tmp_path: Path) -> None:
    assert zeroshot.validate_tasks(["xcopa_zh", "cmmlu", "piqa"]) == ["xcopa_zh", "cmmlu", "piqa"]
    assert zeroshot.validate_tasks(["auto"]) == ["auto"]
    assert zeroshot.validate_tasks(["arc_challenge", "mmlu"]) == ["arc_challenge", "mmlu"]  # lm-eval's registry
    with pytest.raises(
        EvaluationError, match=r"'nosuchtask' is not supported; choose from boolq.*--include-path DIR\.$"
    ):
        zeroshot.validate_tasks(["nosuchtask"])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "mine.yaml").write_text("task: mine\n  dataset_path: [oops\n")
    with pytest.raises(EvaluationError, match=r"mine.yaml' under --include-path is malformed .*; fix or remove it\.$"):
        zeroshot.validate_tasks(["mine"], broken)
    model, tokenizer = tiny
    # Offline, a registry task whose data lives on the Hub: one sentence naming the data set.
    with pytest.raises(EvaluationError, match=r"'arc_challenge' needs the dataset allenai/ai2_arc \(config ARC-Challenge\), "
                       r"which is not reachable here .*--include-path DIR"):  # fmt: skip
        evaluate_model(model, tokenizer, model_id="tiny", ppl=[], tasks=["arc_challenge"], limit=2,
                       data_dir=shared_data, batch_size=2)  # fmt: skip
    assert zeroshot.HUB_DATASETS["xcopa_zh"] == ("cambridgeltl/xcopa", "zh")
    assert zeroshot.HUB_DATASETS["cmmlu"] == ("haonan-li/cmmlu", None)
