"""Zero-shot multiple-choice tasks through lm-eval, on the model already in memory.

Online the standard lm-eval task names run as lm-eval defines them. Offline the same tasks are
generated as lm-eval task configs (dicts given to its TaskManager) over the local files in
`<data-dir>/zeroshot/` (layouts in the data README), with the prompts of lm-eval's defaults;
lm-eval still does all the request building and scoring.
"""

from __future__ import annotations

import bz2
import contextlib
import io
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhprune_hub.errors import EvaluationError

STANDARD_TASKS = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy")
CPU_BATCH_SIZE = 4  # measured: larger CPU batches spend their time paging in padded logits

_ACC = {"metric": "acc", "aggregation": "mean", "higher_is_better": True}
_ACC_NORM = {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}


# --- prompts: the same strings lm-eval's default YAMLs build, from the local layouts -------------


def _piqa_text(doc: dict[str, Any]) -> str:
    # lm-eval: "Question: {{goal}}\nAnswer:"; local query is "Question: {goal}\n".
    return doc["query"].rstrip("\n") + "\nAnswer:"


def _boolq_text(doc: dict[str, Any]) -> str:
    # lm-eval: "{{passage}}\nQuestion: {{question}}?\nAnswer:"; local: "Passage: {passage}\nQuestion: {question}?".
    return doc["query"].removeprefix("Passage: ") + "\nAnswer:"


def _arc_text(doc: dict[str, Any]) -> str:
    # lm-eval: "Question: {{question}}\nAnswer:"; local query is "Question: {question}".
    return doc["query"] + "\nAnswer:"


def _hellaswag_clean(text: str) -> str:
    # lm-eval's hellaswag utils.preprocess, applied to the already de-bracketed local text.
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _read_hellaswag(path: Path) -> list[dict[str, Any]]:
    with bz2.open(path, "rt", encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    if len(lines) % 6:
        raise EvaluationError(f"{path} has {len(lines)} lines, not 6 per item; restore the original file.")
    return [
        {
            "query": _hellaswag_clean(lines[i]),
            "gold": int(lines[i + 1]),
            "choices": [_hellaswag_clean(e) for e in lines[i + 2 : i + 6]],
        }
        for i in range(0, len(lines), 6)
    ]


@dataclass(frozen=True)
class LocalTask:
    """How one standard task is rebuilt from a local file."""

    name: str
    filename: str
    reader: Callable[[Path], list[dict[str, Any]]]
    doc_to_text: Callable[[dict[str, Any]], Any] | str
    doc_to_choice: str | list[str]
    doc_to_target: str
    metrics: tuple[dict[str, Any], ...]


LOCAL_TASKS: dict[str, LocalTask] = {
    t.name: t
    for t in (
        LocalTask("boolq", "boolq.jsonl", _read_jsonl, _boolq_text, ["no", "yes"], "gold", (_ACC,)),
        LocalTask("piqa", "piqa.jsonl", _read_jsonl, _piqa_text, "choices", "gold", (_ACC, _ACC_NORM)),
        LocalTask("arc_easy", "arc_easy.jsonl", _read_jsonl, _arc_text, "choices", "gold", (_ACC, _ACC_NORM)),
        LocalTask(
            "hellaswag",
            "hellaswag_val_full.txt.bz2",
            _read_hellaswag,
            "{{query}}",
            "choices",
            "gold",
            (_ACC, _ACC_NORM),
        ),
        # lm-eval's partial scoring: doc_to_text is the gold index, the choices are the contexts,
        # and the shared continuation is the target scored after each of them.
        LocalTask("winogrande", "winogrande.jsonl", _read_jsonl, "gold", "context_options", "continuation", (_ACC,)),
    )
}


def local_task_config(name: str, data_dir: Path) -> dict[str, Any]:
    """An lm-eval task config (dict) for standard task `name` over `<data_dir>/zeroshot/`.

    Raises:
        EvaluationError: unknown task, or its file is missing.
    """
    spec = _task_spec(name)
    path = Path(data_dir) / "zeroshot" / spec.filename
    if not path.is_file():
        raise EvaluationError(
            f"Zero-shot task {name!r} needs {path}, which is missing; copy it into the data directory "
            "(layout in the README) or drop the task from --tasks."
        )

    def dataset(**_: Any) -> Any:
        import datasets

        return datasets.DatasetDict({"validation": datasets.Dataset.from_list(spec.reader(path))})

    return {
        "task": name,
        "custom_dataset": dataset,
        "output_type": "multiple_choice",
        "validation_split": "validation",
        "doc_to_text": spec.doc_to_text,
        "doc_to_choice": spec.doc_to_choice,
        "doc_to_target": spec.doc_to_target,
        "metric_list": [dict(m) for m in spec.metrics],
        "metadata": {"version": 1.0, "source": str(path)},
    }


def _task_spec(name: str) -> LocalTask:
    try:
        return LOCAL_TASKS[name]
    except KeyError:
        raise EvaluationError(
            f"Zero-shot task {name!r} is not supported; choose from {', '.join(STANDARD_TASKS)}."
        ) from None


def validate_tasks(tasks: list[str]) -> list[str]:
    for name in tasks:
        _task_spec(name)
    return tasks


def hub_reachable(timeout: float = 3.0) -> bool:
    """False when offline mode is set or the Hub endpoint does not answer quickly."""
    if any(
        os.environ.get(k, "").lower() in {"1", "true", "yes", "on"} for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    ):
        return False
    import httpx
    from huggingface_hub import constants

    try:
        httpx.head(constants.ENDPOINT, timeout=timeout, follow_redirects=True)
    except httpx.HTTPError:
        return False
    return True


def choose_task_source(data_dir: Path | None) -> str:
    """`local` when a data directory is known, else `hub` when it answers.

    Raises:
        EvaluationError: neither a data directory nor the Hub is available.
    """
    if data_dir is not None:
        return "local"
    if hub_reachable():
        return "hub"
    raise EvaluationError(
        "Zero-shot tasks need the Hugging Face Hub or a local data directory, and neither is available; "
        "pass --data-dir DIR (or set ZHPRUNE_DATA_DIR) with a zeroshot/ folder, or run with --tasks none."
    )


@dataclass(frozen=True)
class TaskOutcome:
    task: str
    acc: float
    acc_stderr: float | None
    acc_norm: float | None
    acc_norm_stderr: float | None
    samples: int
    samples_total: int
    data_source: str
    seconds: float


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _quiet_lm_eval() -> None:
    for name in ("lm-eval", "lm_eval", "lm_eval.api.task", "lm_eval.evaluator"):
        logging.getLogger(name).setLevel(logging.ERROR)


def make_lm(model: Any, tokenizer: Any, *, batch_size: int | str, quiet: bool) -> Any:
    """lm-eval's HFLM around the in-memory model (no second load)."""
    from lm_eval.models.huggingface import HFLM

    class _HFLM(HFLM):
        def loglikelihood(self, requests: Any, disable_tqdm: bool = False) -> Any:
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm or quiet)

    device = next(model.parameters()).device
    if batch_size == "auto" and device.type != "cuda":
        batch_size = CPU_BATCH_SIZE  # lm-eval's auto search runs full-length forwards: slow on CPU
    _quiet_lm_eval()
    with contextlib.redirect_stderr(io.StringIO()):
        return _HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_batch_size=64)


def run_task(lm: Any, task: str, *, source: str, data_dir: Path | None, limit: int | None, quiet: bool) -> TaskOutcome:
    """One zero-shot task through `simple_evaluate`.

    Raises:
        EvaluationError: the task data could not be loaded (offline, missing file).
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    _quiet_lm_eval()
    if source == "local":
        if data_dir is None:
            raise EvaluationError(f"Local zero-shot task {task!r} needs a data directory; pass --data-dir DIR.")
        spec = local_task_config(task, data_dir)
        manager = TaskManager(include_defaults=False)
        data_source = spec["metadata"]["source"]
    else:
        validate_tasks([task])
        spec, manager, data_source = task, TaskManager(), "hub"
    started = time.perf_counter()
    sink = io.StringIO()
    try:
        with contextlib.redirect_stderr(sink) if quiet else contextlib.nullcontext():
            out = lm_eval.simple_evaluate(
                model=lm,
                tasks=[spec],
                num_fewshot=0,
                limit=limit,
                task_manager=manager,
                log_samples=False,
                bootstrap_iters=0 if limit is not None and limit < 2 else 100000,
            )
    except (ConnectionError, OSError) as exc:
        raise EvaluationError(
            f"Zero-shot task {task!r} could not load its data ({str(exc).splitlines()[0]}); "
            "pass --data-dir DIR to use local files."
        ) from exc
    seconds = time.perf_counter() - started
    if out is None:
        raise EvaluationError(f"lm-eval returned no results for task {task!r}; run without --quiet to see its log.")
    res = out["results"][task]
    counts = out.get("n-samples", {}).get(task, {})
    if source == "hub":
        data_source = str(out.get("configs", {}).get(task, {}).get("dataset_path", "hub"))
    return TaskOutcome(
        task=task,
        acc=float(res["acc,none"]),
        acc_stderr=_number(res.get("acc_stderr,none")),
        acc_norm=_number(res.get("acc_norm,none")),
        acc_norm_stderr=_number(res.get("acc_norm_stderr,none")),
        samples=int(counts.get("effective", res.get("sample_len", 0))),
        samples_total=int(counts.get("original", 0)),
        data_source=data_source,
        seconds=seconds,
    )
