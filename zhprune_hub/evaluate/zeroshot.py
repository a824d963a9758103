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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from zhprune_hub.errors import EvaluationError
from zhprune_hub.fingerprint import sha256_of_files

STANDARD_TASKS = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy")
CHINESE_TASKS = ("xcopa_zh", "cmmlu")
#: The task set of each language `--tasks auto` can pick (see zhprune_hub.data.language).
TASKS_BY_LANGUAGE: dict[str, tuple[str, ...]] = {"en": STANDARD_TASKS, "zh": CHINESE_TASKS}
AUTO = "auto"
#: Hub dataset id and config of each known task, for the card's model-index.
HUB_DATASETS: dict[str, tuple[str, str | None]] = {
    "boolq": ("google/boolq", None),
    "piqa": ("ybisk/piqa", None),
    "hellaswag": ("Rowan/hellaswag", None),
    "winogrande": ("allenai/winogrande", "winogrande_xl"),
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy"),
    "xcopa_zh": ("cambridgeltl/xcopa", "zh"),
    "cmmlu": ("haonan-li/cmmlu", None),
}
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
    #: What the upstream file holds: every row has these fields, and there are this many rows.
    fields: tuple[str, ...] = ("query", "choices", "gold")
    rows: int | None = None


LOCAL_TASKS: dict[str, LocalTask] = {
    t.name: t
    for t in (
        LocalTask("boolq", "boolq.jsonl", _read_jsonl, _boolq_text, ["no", "yes"], "gold", (_ACC,), rows=3270),
        LocalTask("piqa", "piqa.jsonl", _read_jsonl, _piqa_text, "choices", "gold", (_ACC, _ACC_NORM), rows=1838),
        LocalTask(
            "arc_easy", "arc_easy.jsonl", _read_jsonl, _arc_text, "choices", "gold", (_ACC, _ACC_NORM), rows=2376
        ),
        LocalTask(
            "hellaswag",
            "hellaswag_val_full.txt.bz2",
            _read_hellaswag,
            "{{query}}",
            "choices",
            "gold",
            (_ACC, _ACC_NORM),
            rows=10042,
        ),
        # lm-eval's partial scoring: doc_to_text is the gold index, the choices are the contexts,
        # and the shared continuation is the target scored after each of them.
        LocalTask(
            "winogrande",
            "winogrande.jsonl",
            _read_jsonl,
            "gold",
            "context_options",
            "continuation",
            (_ACC,),
            fields=("context_options", "continuation", "gold"),
            rows=1267,
        ),
    )
}


# --- lm-eval's own task definitions over local copies of their upstream files ----------------------


def _read_csv(path: Path) -> list[dict[str, Any]]:
    import csv

    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # Upstream CMMLU CSVs start with an unnamed row-index column.
    return [{key: value for key, value in row.items() if key} for row in rows]


@dataclass(frozen=True)
class LocalSplit:
    """One split file of an upstream data set, with what it must hold."""

    split: str
    relative: str
    fields: tuple[str, ...]
    rows: int | None = None


@dataclass(frozen=True)
class Overlay:
    """A task lm-eval defines (prompt, choices, metric), whose dataset is read from local upstream files.

    The task config is lm-eval's own YAML; only the dataset is replaced, so offline and Hub runs
    score the same items the same way.
    """

    name: str
    #: lm-eval leaf task -> its split files.
    leaves: Callable[[Path], dict[str, tuple[LocalSplit, ...]]]
    reader: Callable[[Path], list[dict[str, Any]]]


def _xcopa_leaves(root: Path) -> dict[str, tuple[LocalSplit, ...]]:
    fields = ("premise", "choice1", "choice2", "question", "label")
    return {
        "xcopa_zh": (
            LocalSplit("validation", "xcopa_zh/val.zh.jsonl", fields, 100),
            LocalSplit("test", "xcopa_zh/test.zh.jsonl", fields, 500),
        )
    }


CMMLU_SUBJECTS_TOTAL = 67
CMMLU_TEST_ROWS = 11_582


def _cmmlu_leaves(root: Path) -> dict[str, tuple[LocalSplit, ...]]:
    fields = ("Question", "A", "B", "C", "D", "Answer")
    subjects = sorted(path.stem for path in (root / "cmmlu" / "test").glob("*.csv"))
    return {
        f"cmmlu_{subject}": (
            LocalSplit("dev", f"cmmlu/dev/{subject}.csv", fields),
            LocalSplit("test", f"cmmlu/test/{subject}.csv", fields),
        )
        for subject in subjects
    }


OVERLAYS: dict[str, Overlay] = {
    "xcopa_zh": Overlay("xcopa_zh", _xcopa_leaves, _read_jsonl),
    "cmmlu": Overlay("cmmlu", _cmmlu_leaves, _read_csv),
}


def _lm_eval_index(include_path: Path | None = None) -> Any:
    """lm-eval's task index with the user's `--include-path` YAMLs (built once per path: it scans every YAML)."""
    key = str(include_path) if include_path is not None else None
    if key not in _INDEX:
        from lm_eval.tasks import TaskManager

        if include_path is not None:
            check_include_path(include_path)
        _INDEX[key] = TaskManager(include_path=key)
    return _INDEX[key]


_INDEX: dict[str | None, Any] = {}


def check_include_path(include_path: Path) -> None:
    """Every YAML under `--include-path` parses (lm-eval itself skips a broken file without a word).

    Raises:
        EvaluationError: the directory is missing, or a YAML file is malformed.
    """
    import yaml
    from lm_eval.tasks._yaml_loader import load_yaml

    root = Path(include_path)
    if not root.is_dir():
        raise EvaluationError(f"--include-path {str(root)!r} is not a directory; give the folder of your task YAMLs.")
    for path in sorted(root.rglob("*.yaml")):
        try:
            load_yaml(path, resolve_func=False, recursive=False)
        except (yaml.YAMLError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EvaluationError(
                f"Task YAML {str(path)!r} under --include-path is malformed ({first}); fix or remove it."
            ) from None


def _read_split(split: LocalSplit, path: Path, reader: Callable[[Path], list[dict[str, Any]]], task: str) -> list:
    if not path.is_file():
        raise EvaluationError(
            f"Zero-shot task {task!r} needs {path}, which is missing; copy the upstream file into the data "
            "directory (layout in the data README) or drop the task from --tasks."
        )
    try:
        rows = reader(path)
    except (ValueError, UnicodeDecodeError, KeyError) as exc:
        raise EvaluationError(f"{path} for task {task!r} is not readable ({exc}); restore the upstream file.") from None
    missing = [name for name in split.fields if rows and name not in rows[0]]
    if not rows or missing:
        raise EvaluationError(
            f"{path} for task {task!r} lacks the fields {missing or list(split.fields)}; restore the upstream file."
        )
    if split.rows is not None and len(rows) != split.rows:
        raise EvaluationError(
            f"{path} for task {task!r} has {len(rows)} rows, not the upstream {split.rows}; restore the upstream file."
        )
    return rows


def overlay_configs(name: str, data_dir: Path) -> tuple[list[dict[str, Any]], str]:
    """lm-eval's own configs of `name`'s leaf tasks, each with its dataset read from `<data_dir>/zeroshot/`.

    Raises:
        EvaluationError: a file is missing or does not have the upstream fields and row count.
    """
    from lm_eval.tasks._yaml_loader import load_yaml

    overlay = OVERLAYS[name]
    root = Path(data_dir) / "zeroshot"
    leaves = overlay.leaves(root)
    if not leaves:
        raise EvaluationError(
            f"Zero-shot task {name!r} found no files under {root / name}; copy the upstream data there "
            "(layout in the data README) or drop the task from --tasks."
        )
    index = _lm_eval_index().task_index
    configs = []
    for leaf, splits in leaves.items():
        entry = index.get(leaf)
        if entry is None or entry.yaml_path is None:
            raise EvaluationError(
                f"lm-eval {_lm_eval_version()} has no task {leaf!r} for {root / splits[0].relative}; "
                "remove that file or upgrade lm-eval."
            )
        data = {split.split: _read_split(split, root / split.relative, overlay.reader, name) for split in splits}

        def dataset(data: dict[str, list] = data, **_: Any) -> Any:
            import datasets

            return datasets.DatasetDict({key: datasets.Dataset.from_list(rows) for key, rows in data.items()})

        config = dict(load_yaml(entry.yaml_path, resolve_func=True))
        for key in ("tag", "group", "task_list"):
            config.pop(key, None)
        config["custom_dataset"] = dataset
        config["metadata"] = {**(config.get("metadata") or {}), "source": str(root / splits[-1].relative)}
        configs.append(config)
    source = str(root / name) if len(configs) > 1 else str(root / leaves[next(iter(leaves))][-1].relative)
    files = sorted(root / split.relative for splits in leaves.values() for split in splits)
    digest = sha256_of_files(files)
    for config in configs:
        config["metadata"]["sha256"] = digest
    return configs, source


def _lm_eval_version() -> str:
    import lm_eval

    return str(lm_eval.__version__)


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

    rows = _read_split(LocalSplit("validation", spec.filename, spec.fields, spec.rows), path, spec.reader, name)

    def dataset(**_: Any) -> Any:
        import datasets

        return datasets.DatasetDict({"validation": datasets.Dataset.from_list(rows)})

    return {
        "task": name,
        "custom_dataset": dataset,
        "output_type": "multiple_choice",
        "validation_split": "validation",
        "doc_to_text": spec.doc_to_text,
        "doc_to_choice": spec.doc_to_choice,
        "doc_to_target": spec.doc_to_target,
        "metric_list": [dict(m) for m in spec.metrics],
        "metadata": {"version": 1.0, "source": str(path), "sha256": sha256_of_files([path])},
    }


def _task_spec(name: str) -> LocalTask:
    try:
        return LOCAL_TASKS[name]
    except KeyError:
        raise EvaluationError(
            f"Zero-shot task {name!r} is not supported; choose from {', '.join(known_tasks())}, or 'auto'."
        ) from None


def known_tasks() -> list[str]:
    """Every task name zhprune-hub runs from local files or the Hub."""
    return [*STANDARD_TASKS, *CHINESE_TASKS]


def validate_tasks(tasks: list[str], include_path: Path | None = None) -> list[str]:
    """The names, checked; `auto` may stand alone (resolved per model by `auto_tasks`).

    Besides zhprune-hub's own tasks, any name lm-eval's registry knows (or a YAML under
    `include_path` defines) is accepted; the registry is only built when such a name is given.

    Raises:
        EvaluationError: an unknown name, `auto` mixed with names, or a malformed include path.
    """
    if AUTO in tasks:
        if tasks != [AUTO]:
            raise EvaluationError(
                f"--tasks {','.join(tasks)!r} mixes 'auto' with task names; give 'auto' alone or list the tasks."
            )
        return tasks
    others = [name for name in tasks if name not in OVERLAYS and name not in LOCAL_TASKS]
    if include_path is not None:
        check_include_path(include_path)
    if others:
        known = set(_lm_eval_index(include_path).all_tasks)
        for name in others:
            if name not in known:
                raise EvaluationError(
                    f"Zero-shot task {name!r} is not supported; choose from {', '.join(known_tasks())}, 'auto', "
                    f"or a task lm-eval {_lm_eval_version()} knows (`lm-eval ls tasks`), or add its YAML with "
                    "--include-path DIR."
                )
    return tasks


def registry_dataset(task: str, include_path: Path | None = None) -> str:
    """`dataset_path` (and config) of a registry task, for messages and the card; `?` when unknown."""
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = _lm_eval_index(include_path).task_index.get(task)
    if entry is None or entry.yaml_path is None:
        return "?"
    try:
        config = load_yaml(entry.yaml_path, resolve_func=False)
    except Exception:
        return "?"
    data_files = (config.get("dataset_kwargs") or {}).get("data_files")
    if data_files:
        return f"{config.get('dataset_path', '?')} files {data_files}"
    name = config.get("dataset_name")
    return f"{config.get('dataset_path', '?')}" + (f" (config {name})" if name else "")


def auto_tasks(languages: list[str]) -> list[str]:
    """The task sets of the model's competent languages, best language first."""
    names: list[str] = []
    for language in languages:
        names += [name for name in TASKS_BY_LANGUAGE[language] if name not in names]
    return names


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
class SubtaskOutcome:
    """One leaf of a task group (a CMMLU subject)."""

    task: str
    acc: float
    acc_stderr: float | None
    acc_norm: float | None
    samples: int


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
    subtasks: tuple[SubtaskOutcome, ...] = ()
    #: local: the items came from local files; hub: from a Hub dataset as lm-eval's YAML names it.
    source: str = "local"
    #: sha256 of the local file(s) scored (several files: their bytes concatenated in path order).
    data_sha256: str | None = None


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


def run_task(
    lm: Any,
    task: str,
    *,
    source: str,
    data_dir: Path | None,
    limit: int | None,
    quiet: bool,
    include_path: Path | None = None,
) -> TaskOutcome:
    """One zero-shot task through `simple_evaluate`; a group (cmmlu) is the size-weighted mean of its leaves.

    Raises:
        EvaluationError: the task data could not be loaded (offline, missing or damaged file).
    """
    import lm_eval
    from lm_eval.tasks import TaskManager

    _quiet_lm_eval()
    ours = task in OVERLAYS or task in LOCAL_TASKS
    if source == "local" and ours:
        if data_dir is None:
            raise EvaluationError(f"Local zero-shot task {task!r} needs a data directory; pass --data-dir DIR.")
        if task in OVERLAYS:
            specs, data_source = overlay_configs(task, data_dir)
        else:
            spec = local_task_config(task, data_dir)
            specs, data_source = [spec], spec["metadata"]["source"]
        manager = TaskManager(include_defaults=False)
    else:
        # lm-eval's own definition (registry or --include-path), data wherever its YAML says.
        validate_tasks([task], include_path)
        specs, manager, data_source = [task], _lm_eval_index(include_path), "hub"
    started = time.perf_counter()
    sink = io.StringIO()
    try:
        with contextlib.redirect_stderr(sink) if quiet else contextlib.nullcontext():
            out = lm_eval.simple_evaluate(
                model=lm,
                tasks=specs,
                num_fewshot=0,
                limit=limit,
                task_manager=manager,
                log_samples=False,
                bootstrap_iters=0 if limit is not None and limit < 2 else 100000,
            )
    except (ConnectionError, OSError) as exc:
        if ours:
            raise EvaluationError(
                f"Zero-shot task {task!r} could not load its data ({str(exc).splitlines()[0]}); "
                "pass --data-dir DIR to use local files."
            ) from exc
        raise EvaluationError(
            f"Zero-shot task {task!r} needs the dataset {registry_dataset(task, include_path)}, which is not "
            f"reachable here ({str(exc).splitlines()[0]}); run with Hub access, or copy the data and pass "
            "--include-path DIR with a task YAML that reads the local copy."
        ) from exc
    seconds = time.perf_counter() - started
    if out is None:
        raise EvaluationError(f"lm-eval returned no results for task {task!r}; run without --quiet to see its log.")
    counts = out.get("n-samples", {})
    if data_source == "hub":
        config = out.get("configs", {}).get(task) or next(iter(out.get("configs", {}).values()), {})
        files = (config.get("dataset_kwargs") or {}).get("data_files")
        data_source = str(files if files else config.get("dataset_path", "hub"))
    where = "local" if ours and source == "local" else ("local" if _is_local(data_source) else "hub")
    digest = specs[0]["metadata"].get("sha256") if isinstance(specs[0], dict) else None
    leaves = sorted(name for name in out["results"] if name in counts)
    if task in counts:
        res = out["results"][task]
        return TaskOutcome(
            task=task,
            acc=float(res["acc,none"]),
            acc_stderr=_number(res.get("acc_stderr,none")),
            acc_norm=_number(res.get("acc_norm,none")),
            acc_norm_stderr=_number(res.get("acc_norm_stderr,none")),
            samples=int(counts[task].get("effective", 0)),
            samples_total=int(counts[task].get("original", 0)),
            data_source=data_source,
            seconds=seconds,
            source=where,
            data_sha256=digest,
        )
    outcome = _group_outcome(task, out["results"], counts, leaves, data_source, seconds, where)
    return replace(outcome, data_sha256=digest)


def _is_local(data_source: str) -> bool:
    """True when a data source names files on this machine (e.g. a user YAML's `data_files`)."""
    import ast

    try:
        value = ast.literal_eval(data_source)
    except (ValueError, SyntaxError):
        value = data_source
    paths = [value] if isinstance(value, str) else list(value.values()) if isinstance(value, dict) else list(value)
    flat = [str(item) for path in paths for item in (path if isinstance(path, list) else [path])]
    return bool(flat) and all(Path(item).expanduser().exists() for item in flat)


def _group_outcome(
    task: str,
    results: dict[str, Any],
    counts: dict[str, Any],
    leaves: list[str],
    data_source: str,
    seconds: float,
    where: str,
) -> TaskOutcome:
    """Size-weighted mean over the leaves, as lm-eval's own `cmmlu` group aggregates."""
    subtasks = tuple(
        SubtaskOutcome(
            task=leaf,
            acc=float(results[leaf]["acc,none"]),
            acc_stderr=_number(results[leaf].get("acc_stderr,none")),
            acc_norm=_number(results[leaf].get("acc_norm,none")),
            samples=int(counts[leaf].get("effective", 0)),
        )
        for leaf in leaves
    )
    total = sum(sub.samples for sub in subtasks)
    if not total:
        raise EvaluationError(f"Zero-shot task {task!r} scored no items; check its data files and --limit.")

    def weighted(values: list[float | None]) -> float | None:
        if any(value is None for value in values):
            return None
        return sum(sub.samples * v for sub, v in zip(subtasks, values, strict=True) if v is not None) / total

    def pooled(values: list[float | None]) -> float | None:
        if any(value is None for value in values):
            return None
        return (
            sum((sub.samples * v) ** 2 for sub, v in zip(subtasks, values, strict=True) if v is not None) ** 0.5 / total
        )

    acc = weighted([sub.acc for sub in subtasks])
    assert acc is not None
    return TaskOutcome(
        task=task,
        acc=acc,
        acc_stderr=pooled([sub.acc_stderr for sub in subtasks]),
        acc_norm=weighted([sub.acc_norm for sub in subtasks]),
        acc_norm_stderr=None,
        samples=total,
        samples_total=sum(int(counts[leaf].get("original", 0)) for leaf in leaves),
        data_source=data_source,
        seconds=seconds,
        subtasks=subtasks,
        source=where,
    )
