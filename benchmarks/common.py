"""Shared plumbing of the benchmark scripts: options, a resumable results store, pruning and evaluation.

Every script keeps its results in one JSON file keyed by a stable configuration key, rewritten
atomically after each configuration, so an interrupted run resumes where it stopped. The eval
protocol is stored beside the results; a rerun with a different protocol refuses to mix them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from zhprune_hub.outputs import write_atomically  # noqa: E402 (re-exported: the package's one atomic writer)

#: Short names accepted by --models, mapped to directories under the models cache.
SHORT_NAMES = {"smollm2": "smollm2-135m", "qwen2.5": "qwen2.5-0.5b"}
ZERO_SHOT_TASKS = ("piqa", "boolq", "winogrande", "arc_easy", "hellaswag")
SHORTGPT = "shortgpt"


# --- options -----------------------------------------------------------------------------------


def split_list(values: Iterable[str] | None) -> list[str]:
    """`--x a,b c` -> [a, b, c]."""
    return [part.strip() for value in values or [] for part in str(value).split(",") if part.strip()]


def base_parser(description: str, *, out: str, markdown: str) -> argparse.ArgumentParser:
    """The options every benchmark script shares; each script adds or re-defaults its own."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["smollm2", "qwen2.5"], help="Paths or smollm2 / qwen2.5.")
    parser.add_argument("--ratios", nargs="+", default=["0.1", "0.2", "0.3"], help="Fractions of total parameters.")
    parser.add_argument("--methods", nargs="+", default=["obs", "taylor", "activation", "magnitude", "random"])
    parser.add_argument("--layouts", nargs="+", default=["global", "uniform"])
    parser.add_argument("--seeds", nargs="+", default=["0"])
    parser.add_argument("--calibration", default="auto", help="Calibration corpus (auto = the model's language).")
    parser.add_argument("--num-samples", type=int, default=128, help="Calibration windows N.")
    parser.add_argument("--seq-len", type=int, default=128, help="Calibration window length L.")
    parser.add_argument(
        "--damping", type=float, default=None, help="Repair dampening (default: the library's, recorded when given)."
    )
    parser.add_argument(
        "--correction",
        type=float,
        default=None,
        help="Stream correction (default: the library's, recorded when given).",
    )
    parser.add_argument("--ppl", nargs="+", default=["wikitext2", "ptb", "c4_zh"], help="Perplexity corpora.")
    parser.add_argument("--ppl-seq-len", type=int, default=2048, help="Perplexity window length.")
    parser.add_argument("--ppl-max-tokens", type=int, default=32768, help="Tokens evaluated per corpus (prefix).")
    parser.add_argument("--tasks", nargs="+", default=list(ZERO_SHOT_TASKS), help="Zero-shot tasks; 'none' skips.")
    parser.add_argument("--limit", type=int, default=500, help="Items per zero-shot task.")
    parser.add_argument(
        "--task-limit",
        nargs="+",
        default=[],
        metavar="TASK=N",
        help="Items for one task instead of --limit (cmmlu=10: ten per subject); 'none' means every item.",
    )
    parser.add_argument("--batch-size", default="auto", help="Perplexity/zero-shot batch size.")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--data-dir", type=Path, default=None, help="Local data (else $ZHPRUNE_DATA_DIR).")
    parser.add_argument("--work-dir", type=Path, default=None, help="Where temporary pruned checkpoints go.")
    parser.add_argument("--out", type=Path, default=Path(out), help="Resumable JSON results.")
    parser.add_argument("--markdown", type=Path, default=Path(markdown), help="Markdown table (rewritten).")
    parser.add_argument("--retry-failed", action="store_true", help="Rerun configurations recorded as failed.")
    return parser


def normalise(args: argparse.Namespace) -> argparse.Namespace:
    """Split comma lists and convert numbers, in place."""
    for name in ("models", "methods", "layouts", "ppl", "tasks"):
        if hasattr(args, name):
            setattr(args, name, split_list(getattr(args, name)))
    if hasattr(args, "tasks") and [t.lower() for t in args.tasks] == ["none"]:
        args.tasks = []
    if hasattr(args, "ppl") and [t.lower() for t in args.ppl] == ["none"]:
        args.ppl = []
    if hasattr(args, "ratios"):
        args.ratios = [float(r) for r in split_list(args.ratios)]
    if hasattr(args, "seeds"):
        args.seeds = [int(s) for s in split_list(args.seeds)]
    if hasattr(args, "task_limit"):
        args.task_limit = dict(parse_task_limit(item) for item in split_list(args.task_limit))
    return args


def parse_task_limit(item: str) -> tuple[str, int | None]:
    """`cmmlu=10` -> ("cmmlu", 10); `xcopa_zh=none` -> every item."""
    task, _, value = item.partition("=")
    if not task or not value:
        raise SystemExit(f"--task-limit wants TASK=N, got {item!r}.")
    return task, None if value.lower() == "none" else int(value)


def task_limits(args: argparse.Namespace) -> dict[str, int | None]:
    """Each zero-shot task's item limit: --limit unless --task-limit names the task."""
    overrides = getattr(args, "task_limit", {}) or {}
    return {task: overrides.get(task, args.limit) for task in args.tasks}


def command_line() -> str:
    """The exact command that was run, for the Markdown output (and so for BENCHMARKS.md)."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_text = str(script.relative_to(REPO_ROOT))
    except ValueError:
        script_text = str(script)
    return shlex.join(["python", script_text, *sys.argv[1:]])


# --- models ------------------------------------------------------------------------------------


def models_dir() -> Path:
    env = os.environ.get("ZHPRUNE_MODELS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "zhprune-hub" / "models"


def resolve_model(name: str) -> tuple[str, Path]:
    """(stable label, directory) for a short name or a path; the label goes into result keys."""
    if name in SHORT_NAMES:
        path = models_dir() / SHORT_NAMES[name]
        if not (path / "config.json").exists():
            raise SystemExit(f"{name}: {path} has no config.json; run `python scripts/fetch_test_models.py`.")
        return name, path
    path = Path(name).expanduser().resolve()
    if not path.is_dir():
        raise SystemExit(f"--models {name!r} is neither smollm2 / qwen2.5 nor an existing directory.")
    for short, directory in SHORT_NAMES.items():
        if path == (models_dir() / directory).resolve():
            return short, path
    return str(path), path


def display_model(label: str) -> str:
    return label if label in SHORT_NAMES else Path(label).name


# --- the resumable store -----------------------------------------------------------------------


def config_key(**parts: Any) -> str:
    """A stable key: `k=v` pairs in the order given, floats written with repr (0.2, not 0.20000001)."""
    return "|".join(f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" for k, v in parts.items())


class Store:
    """A JSON file of {protocol, commands, results{key: record}}, rewritten atomically per record."""

    def __init__(self, path: Path, protocol: dict[str, Any], *, retry_failed: bool = False):
        self.path = Path(path)
        self.retry_failed = retry_failed
        self.data: dict[str, Any] = {"schema_version": 1, "protocol": protocol, "commands": [], "results": {}}
        if self.path.exists():
            stored = json.loads(self.path.read_text())
            if stored.get("protocol") != protocol:
                raise SystemExit(
                    f"{self.path} was written under another protocol:\n  stored: {stored.get('protocol')}\n"
                    f"  now:    {protocol}\nuse another --out, or the same options as before."
                )
            self.data = stored
        self.data["commands"].append(command_line())
        self.save()

    @property
    def results(self) -> dict[str, dict[str, Any]]:
        return self.data["results"]

    def done(self, key: str) -> bool:
        record = self.results.get(key)
        return record is not None and not (self.retry_failed and "error" in record)

    def put(self, key: str, record: dict[str, Any]) -> None:
        self.results[key] = record
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, json.dumps(self.data, indent=1, ensure_ascii=False, allow_nan=True) + "\n")


def run_configs(
    store: Store, configs: list[tuple[str, Callable[[], dict[str, Any]]]], *, after: Callable[[], None]
) -> int:
    """Run each (key, job) not yet in the store; record its result or its error. Returns failures."""
    failures = 0
    for position, (key, job) in enumerate(configs, 1):
        if store.done(key):
            log(f"[{position}/{len(configs)}] skip (done): {key}")
            continue
        log(f"[{position}/{len(configs)}] run: {key}")
        started = time.perf_counter()
        try:
            record = job()
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one failed configuration must not lose the others
            failures += 1
            record = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"  failed: {record['error']}")
        record["wall_s"] = round(time.perf_counter() - started, 2)
        store.put(key, record)
        log(f"  done in {record['wall_s']:.1f}s")
        after()
    after()
    return failures


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- pruning -----------------------------------------------------------------------------------


def work_dir(args: argparse.Namespace) -> Path:
    root = args.work_dir or Path(tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="zhprune-bench-", dir=root))


def prune_with_method(
    model_dir: Path,
    output: Path,
    *,
    ratio: float,
    method: str,
    layout: str,
    args: argparse.Namespace,
    seed: int,
    calibration: str | None = None,
) -> dict[str, Any]:
    """Prune with the library's own pipeline (or the ShortGPT baseline); return the pruning report.

    `method` may carry variants after a colon, joined by `+`: `norepair` (`--no-repair`) and `mlp`
    (`--head-unit none`: attention kept whole), e.g. `obs:mlp` or `taylor:mlp+norepair`.
    """
    method, _, suffix = method.partition(":")
    variants = set(filter(None, suffix.split("+")))
    if variants - {"norepair", "mlp"}:
        raise SystemExit(f"--methods {method}:{suffix}: the variants are 'norepair' and 'mlp' (joined by '+').")
    if method == SHORTGPT:
        return prune_whole_blocks(
            model_dir, output, ratio=ratio, args=args, seed=seed, calibration=calibration or args.calibration
        )
    from zhprune_hub.pruning import PruneConfig, prune_model

    quiet_transformers()
    config = PruneConfig(
        model=str(model_dir),
        output=output,
        ratio=ratio,
        method=method,
        repair="norepair" not in variants,
        layout=layout,
        head_unit="none" if "mlp" in variants else "group",
        calibration=calibration or args.calibration,
        data_dir=args.data_dir,
        num_samples=args.num_samples,
        seq_len=args.seq_len,
        seed=seed,
        device=args.device,
        dtype=args.dtype,
        overwrite=True,
        **repair_options(args),
    )
    return prune_model(config, log=log).report


def prune_whole_blocks(
    model_dir: Path, output: Path, *, ratio: float, args: argparse.Namespace, seed: int, calibration: str
) -> dict[str, Any]:
    """ShortGPT-style baseline: drop the blocks with the lowest 1 - cos(input, output) until the
    removed parameters reach the same target as the other methods (ceil(ratio x total)).

    Block importance is measured on the same calibration windows the other methods use.
    """
    import torch

    from zhprune_hub.data import calibration_windows
    from zhprune_hub.loading import load_model, resolve_source
    from zhprune_hub.prune.families import family_for
    from zhprune_hub.prune.plan import LayerPlan, PruningPlan
    from zhprune_hub.prune.statistics import BlockSimilarity
    from zhprune_hub.prune.structure import count_parameters, decoder_layers, head_dim_of, layer_shapes
    from zhprune_hub.prune.surgery import apply_plan
    from zhprune_hub.pruning import card_languages, parameter_summary, peak_memory_mb

    quiet_transformers()
    started = time.perf_counter()
    timings: dict[str, float] = {}
    torch.manual_seed(seed)
    source = resolve_source(str(model_dir))
    model, tokenizer = load_model(source, device=args.device, dtype=args.dtype)
    saved_dtype = next(model.parameters()).dtype
    spec = family_for(model.config.model_type)
    timings["load_s"] = time.perf_counter() - started

    mark = time.perf_counter()
    windows = calibration_windows(
        calibration,
        tokenizer,
        num_samples=args.num_samples,
        seq_len=args.seq_len,
        seed=seed,
        data_dir=args.data_dir,
        model=model,
        model_card_languages=card_languages(source.local_dir),
    )
    timings["calibration_data_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    scores = block_similarities(model, decoder_layers(model, spec), windows.input_ids, BlockSimilarity)
    timings["importance_s"] = time.perf_counter() - mark

    before = count_parameters(model)
    target = math.ceil(ratio * before["total"])
    layers = decoder_layers(model, spec)
    costs = [sum(p.numel() for p in layer.parameters()) for layer in layers]
    removed: set[int] = set()
    planned = 0
    for index in sorted(range(len(scores)), key=lambda i: (scores[i], i)):
        if planned >= target or len(removed) == len(scores) - 1:
            break
        removed.add(index)
        planned += costs[index]
    shapes = layer_shapes(model, spec)
    plan = PruningPlan(
        layers=[
            LayerPlan(
                index=index,
                removed=index in removed,
                kept_heads=list(range(shape.num_heads)),
                kept_kv_heads=list(range(shape.num_kv_heads)),
                kept_channels=list(range(shape.intermediate_size)),
            )
            for index, shape in enumerate(shapes)
        ],
        head_dim=head_dim_of(model),
        target_removed=target,
        planned_removed=planned,
    )
    mark = time.perf_counter()
    apply_plan(model, plan, spec)
    after = count_parameters(model)
    timings["surgery_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    model.to(saved_dtype)
    from zhprune_hub.outputs import atomic_directory

    with atomic_directory(output, overwrite=True) as staging:
        model.save_pretrained(staging)  # widths unchanged: the stock config describes the shorter model
        tokenizer.save_pretrained(staging)
    layout = "uniform"
    timings["save_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - started
    return {
        "method": SHORTGPT,
        "layout": layout,
        "ratio": ratio,
        "seed": seed,
        "parameters": parameter_summary(before, after, target),
        "calibration": windows.report(),
        "removed_blocks": sorted(removed),
        "block_importance": scores,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "memory": {k: round(v, 1) for k, v in peak_memory_mb().items()},
    }


def block_similarities(model: Any, layers: Any, input_ids: Any, similarity_class: Any) -> list[float]:
    """1 - cos(block input, block output) of every block over the calibration windows (one forward each)."""
    import torch

    measures = [similarity_class() for _ in layers]

    def hook(index: int) -> Callable:
        def record(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
            hidden_in = args[0] if args else kwargs["hidden_states"]
            measures[index].add(hidden_in, output[0] if isinstance(output, tuple) else output)

        return record

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            for row in input_ids:
                model(input_ids=row[None].to(next(model.parameters()).device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return [m.value for m in measures]


def task_score(record: dict[str, Any], task: str) -> float | None:
    """acc_norm where the task has it, else acc: the figure the mean is taken over."""
    score = (record.get("zeroshot") or {}).get(task) or {}
    return score.get("acc_norm") if score.get("acc_norm") is not None else score.get("acc")


def mean_without(record: dict[str, Any], tasks: list[str], left_out: str) -> float | None:
    """The zero-shot mean without one task (BoolQ at a small --limit mostly measures a yes/no bias)."""
    scores = [task_score(record, t) for t in tasks if t != left_out]
    return None if not scores or None in scores else sum(scores) / len(scores)


def pruning_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The part of a pruning report a results table needs."""
    parameters = report["parameters"]
    before, removed = parameters["before"], parameters["removed"]
    calibration = report.get("calibration") or {}
    return {
        "parameters_before": before["total"],
        "parameters_after": parameters["after"]["total"],
        "removed_fraction_of_total": parameters["removed_fraction_of_total"],
        "removed_fraction_of_layers": removed["non_embedding"] / before["non_embedding"],
        "layout_written": report.get("layout"),
        "removed_blocks": report.get("removed_blocks", []),
        "calibration": {k: calibration.get(k) for k in ("name", "language", "num_samples", "seq_len", "token_hash")}
        if calibration
        else None,
        "prune_timings": report.get("timings"),
        "prune_memory": report.get("memory"),
    }


# --- evaluation --------------------------------------------------------------------------------


def eval_protocol(args: argparse.Namespace) -> dict[str, Any]:
    """What every evaluated row shares; stored in the results file and printed under each table."""
    return {
        "perplexity": {"corpora": args.ppl, "seq_len": args.ppl_seq_len, "max_tokens": args.ppl_max_tokens},
        "zeroshot": {"tasks": args.tasks, "limit": args.limit, "limits": task_limits(args), "num_fewshot": 0},
        "calibration": {"num_samples": args.num_samples, "seq_len": args.seq_len},
        "device": args.device,
        "dtype": args.dtype,
        **({"repair": repair} if (repair := repair_options(args)) else {}),
    }


def repair_options(args: argparse.Namespace) -> dict[str, float]:
    """The repair settings given on the command line (the library's defaults otherwise, not recorded)."""
    return {k: getattr(args, k) for k in ("damping", "correction") if getattr(args, k, None) is not None}


_TOKENS: dict[tuple[str, str], Any] = {}


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def corpus_ids(tokenizer: Any, corpus: str, *, family: str, data_dir: Path | None) -> Any:
    """The whole evaluation text tokenized once per base model (pruning keeps the tokenizer)."""
    from zhprune_hub.data import evaluation_text
    from zhprune_hub.evaluate.perplexity import tokenize

    key = (family, corpus)
    if key not in _TOKENS:
        _TOKENS[key] = tokenize(tokenizer, evaluation_text(corpus, data_dir=data_dir).text)
    return _TOKENS[key]


def evaluate_dir(directory: Path, args: argparse.Namespace, *, model_id: str, family: str) -> dict[str, Any]:
    """Load a checkpoint (either layout), measure perplexity and zero-shot accuracy, free it.

    `family` names the base model whose tokenizer the checkpoint carries (token ids are cached by it).
    """
    import gc

    from zhprune_hub.evaluate.perplexity import perplexity
    from zhprune_hub.evaluate.runner import evaluate_model, parse_batch_size
    from zhprune_hub.loading import load_model, resolve_source

    quiet_transformers()
    started = time.perf_counter()
    model, tokenizer = load_model(resolve_source(str(directory)), device=args.device, dtype=args.dtype)
    load_s = time.perf_counter() - started
    try:
        started = time.perf_counter()
        ppl = {}
        for corpus in args.ppl:
            ids = corpus_ids(tokenizer, corpus, family=family, data_dir=args.data_dir)
            out = perplexity(
                model,
                ids,
                seq_len=args.ppl_seq_len,
                max_tokens=args.ppl_max_tokens,
                batch_size=parse_batch_size(args.batch_size),
            )
            ppl[corpus] = {"ppl": out.perplexity, "seq_len": out.seq_len, "tokens": out.tokens_evaluated}
        ppl_s = time.perf_counter() - started
        zeroshot_results = []
        by_limit: dict[int | None, list[str]] = {}
        for task, limit in task_limits(args).items():
            by_limit.setdefault(limit, []).append(task)
        for limit, tasks in by_limit.items():
            result = evaluate_model(
                model,
                tokenizer,
                model_id=model_id,
                ppl=[],
                tasks=tasks,
                limit=limit,
                batch_size=args.batch_size,
                data_dir=args.data_dir,
            )
            zeroshot_results.extend(result.zeroshot)
        if not by_limit:
            result = evaluate_model(
                model,
                tokenizer,
                model_id=model_id,
                ppl=[],
                tasks=[],
                batch_size=args.batch_size,
                data_dir=args.data_dir,
            )
    finally:
        del model
        gc.collect()
    scores = [z.acc_norm if z.acc_norm is not None else z.acc for z in zeroshot_results]
    mean = (
        {"acc": sum(z.acc for z in zeroshot_results) / len(scores), "acc_norm": sum(scores) / len(scores)}
        if scores
        else None
    )
    return {
        "parameters": result.parameters,
        "device": result.device,
        "dtype": result.dtype,
        "perplexity": ppl,
        "zeroshot": {z.task: {"acc": z.acc, "acc_norm": z.acc_norm, "samples": z.samples} for z in zeroshot_results},
        "zeroshot_mean": mean,
        "eval_timings": {
            "load_s": round(load_s, 3),
            "perplexity_s": round(ppl_s, 3),
            "zeroshot_s": round(sum(z.seconds or 0.0 for z in zeroshot_results), 3),
        },
    }


def prune_and_evaluate(
    model_dir: Path,
    *,
    ratio: float,
    method: str,
    layout: str,
    seed: int,
    args: argparse.Namespace,
    model_id: str,
    family: str,
    calibration: str | None = None,
) -> dict[str, Any]:
    """Prune into a temporary directory, evaluate the checkpoint, delete it."""
    scratch = work_dir(args)
    try:
        output = scratch / "pruned"
        report = prune_with_method(
            model_dir,
            output,
            ratio=ratio,
            method=method,
            layout=layout,
            args=args,
            seed=seed,
            calibration=calibration,
        )
        return {**pruning_summary(report), **evaluate_dir(output, args, model_id=model_id, family=family)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --- Markdown ----------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.{digits}f}" if abs(value) < 1e5 else f"{value:.3g}"
    return str(value)


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def protocol_text(protocol: dict[str, Any]) -> str:
    ppl, zs, calib = protocol["perplexity"], protocol["zeroshot"], protocol["calibration"]
    return (
        f"Perplexity: {', '.join(ppl['corpora']) or 'none'}; non-overlapping windows of {ppl['seq_len']} tokens over "
        f"the first {ppl['max_tokens'] or 'all'} tokens of each text (the tail window dropped). "
        f"Zero-shot ({zs['num_fewshot']}-shot, local data files): {', '.join(zs['tasks']) or 'none'}, "
        f"--limit {zs['limit']} items per task{_limit_overrides(zs)}; the mean is of acc_norm where a task has it, else acc. "
        f"Calibration: {calib['num_samples']} windows × {calib['seq_len']} tokens. "
        f"{_repair_text(protocol.get('repair'))}"
        f"Device {protocol['device']}, dtype {protocol['dtype']}."
    )


def _repair_text(repair: dict[str, float] | None) -> str:
    """The repair settings a run gave instead of the library's defaults, if any."""
    if not repair:
        return ""
    return "Repair: " + ", ".join(f"--{name} {value:g}" for name, value in repair.items()) + ". "


def _limit_overrides(zeroshot: dict[str, Any]) -> str:
    """The tasks whose limit differs from --limit (cmmlu's applies per subject)."""
    limits = zeroshot.get("limits") or {}
    named = [f"{task} {'all' if n is None else n}" for task, n in limits.items() if n != zeroshot["limit"]]
    return f" except {', '.join(named)}" if named else ""


def write_markdown(path: Path, title: str, store: Store, body: str) -> None:
    commands = "\n".join(f"    {c}" for c in store.data["commands"])
    text = f"# {title}\n\nCommands (in order; the run is resumable):\n\n{commands}\n\n{body}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, text)


def percent(value: float | None) -> float | None:
    return None if value is None else 100 * value
