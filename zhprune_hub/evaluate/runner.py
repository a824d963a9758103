"""Orchestrate an evaluation: which texts and tasks, one model after another, into ModelResults."""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from zhprune_hub.errors import EvaluationError
from zhprune_hub.evaluate import perplexity as ppl_mod
from zhprune_hub.evaluate import zeroshot
from zhprune_hub.evaluate.compare import compare
from zhprune_hub.results import (
    EvaluationResults,
    ModelResults,
    PerplexityProtocol,
    PerplexityResult,
    Protocol,
    Timings,
    ZeroShotMean,
    ZeroShotProtocol,
    ZeroShotResult,
    ZeroShotSubtask,
)

Notify = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- data (owned by zhprune_hub.data; imported lazily) ---------------------------------------------


def _data_dir(data_dir: str | Path | None) -> Path | None:
    from zhprune_hub.data import resolve_data_dir

    return resolve_data_dir(Path(data_dir) if data_dir is not None else None)


def _eval_text(name: str, data_dir: Path | None) -> Any:
    from zhprune_hub.data import evaluation_text

    return evaluation_text(name, data_dir=data_dir)


def decide_languages(model: Any, tokenizer: Any, data_dir: Path | None) -> Any:
    """The one language rule (zhprune_hub.data.language) on the model in memory."""
    from zhprune_hub.data.language import decide_languages as decide

    return decide(model, tokenizer, data_dir=data_dir)


def default_ppl_names(languages: str | list[str]) -> list[str]:
    """`wikitext2, ptb`, plus `c4_zh` for a model competent in Chinese."""
    from zhprune_hub.data import default_eval_names

    return list(default_eval_names(languages))


def resolve_defaults(
    model: Any,
    tokenizer: Any,
    *,
    ppl: list[str] | None,
    tasks: list[str] | None,
    data_dir: Path | None,
    languages: list[str] | None = None,
    include_path: Path | None = None,
) -> tuple[list[str], list[str], dict[str, Any] | None]:
    """Perplexity corpora and tasks, with the defaults (`None`, `auto`) filled by the model's languages.

    The model is measured only when a default needs it and `languages` is not given.
    """
    task_list = list(zeroshot.STANDARD_TASKS) if tasks is None else zeroshot.validate_tasks(tasks, include_path)
    needs = ppl is None or task_list == [zeroshot.AUTO]
    record: dict[str, Any] | None = None
    if needs and languages is None:
        decision = decide_languages(model, tokenizer, data_dir)
        languages, record = list(decision.languages), asdict(decision)
    elif needs:
        record = {"languages": list(languages), "how": "given"}
    names = default_ppl_names(languages or ["en"]) if ppl is None else ppl
    if task_list == [zeroshot.AUTO]:
        task_list = zeroshot.auto_tasks(languages or ["en"])
    return names, task_list, record


def parse_names(value: str | None) -> list[str] | None:
    """`a,b` -> [a, b]; `none` or empty -> []; None -> None (use the defaults)."""
    if value is None:
        return None
    if value.strip().lower() in {"", "none"}:
        return []
    return [part.strip() for part in value.split(",") if part.strip()]


def parse_batch_size(value: str | int) -> int | str:
    if isinstance(value, int) or value == "auto":
        return value
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise EvaluationError(f"--batch-size {value!r} is neither 'auto' nor a positive integer; pass e.g. 8 or auto.")


# --- one in-memory model ---------------------------------------------------------------------------


def _progress(quiet: bool) -> Any:
    if quiet:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def _perplexities(
    model: Any,
    tokenizer: Any,
    names: list[str],
    *,
    data_dir: Path | None,
    seq_len: int,
    max_tokens: int | None,
    batch_size: int | str,
    quiet: bool,
    model_id: str,
) -> list[PerplexityResult]:
    results = []
    progress = _progress(quiet)
    with progress if progress is not None else _null():
        for name in names:
            text = _eval_text(name, data_dir)
            ids = ppl_mod.tokenize(tokenizer, text.text)
            bar: dict[str, Any] = {}

            def start(total: int, name: str = name, bar: dict[str, Any] = bar) -> None:
                if progress is not None:
                    bar["id"] = progress.add_task(f"PPL {name} · {model_id}", total=total)

            def advance(done: int, bar: dict[str, Any] = bar) -> None:
                if progress is not None:
                    progress.advance(bar["id"], done)

            out = ppl_mod.perplexity(
                model,
                ids,
                seq_len=seq_len,
                max_tokens=max_tokens,
                batch_size=batch_size,
                on_start=start,
                on_batch=advance,
            )
            results.append(
                PerplexityResult(
                    dataset=name,
                    source=str(text.source),
                    language=str(text.language),
                    perplexity=out.perplexity,
                    perplexity_stderr=out.perplexity_stderr,
                    nll=out.nll,
                    seq_len=out.seq_len,
                    windows=out.windows,
                    tokens_evaluated=out.tokens_evaluated,
                    tokens_predicted=out.tokens_predicted,
                    tokens_total=out.tokens_total,
                    seconds=out.seconds,
                    tokens_per_second=out.tokens_per_second,
                )
            )
    return results


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _mean(results: list[ZeroShotResult]) -> ZeroShotMean | None:
    if not results:
        return None
    n = len(results)

    def stderr(values: list[float | None]) -> float | None:
        if any(v is None for v in values):
            return None
        return sum(v * v for v in values if v is not None) ** 0.5 / n

    norm = [r.acc_norm if r.acc_norm is not None else r.acc for r in results]
    norm_se = [r.acc_norm_stderr if r.acc_norm is not None else r.acc_stderr for r in results]
    return ZeroShotMean(
        tasks=[r.task for r in results],
        acc=sum(r.acc for r in results) / n,
        acc_stderr=stderr([r.acc_stderr for r in results]),
        acc_norm=sum(norm) / n,
        acc_norm_stderr=stderr(norm_se),
    )


def evaluate_model(
    model: Any,
    tokenizer: Any,
    *,
    model_id: str,
    ppl: list[str] | None = None,
    tasks: list[str] | None = None,
    limit: int | None = None,
    seq_len: int = 2048,
    max_tokens: int | None = None,
    batch_size: int | str = "auto",
    data_dir: str | Path | None = None,
    device: str | None = None,
    revision: str | None = None,
    commit: str | None = None,
    task_source: str | None = None,
    quiet: bool = True,
    notify: Notify | None = None,
    languages: list[str] | None = None,
    include_path: Path | None = None,
) -> ModelResults:
    """Perplexity and zero-shot accuracy of a model already in memory.

    Args:
        ppl: corpus names; None = `wikitext2, ptb` (+ `c4_zh` for a model competent in Chinese); [] = skip.
        tasks: zero-shot task names; None = boolq, piqa, hellaswag, winogrande, arc_easy; ["auto"] = the
            task sets of the model's competent languages (xcopa_zh, cmmlu for zh); [] = skip.
        languages: the model's languages when already decided (e.g. by the prune stage); None measures
            the model when a default needs them.
        include_path: a folder of the user's lm-eval task YAMLs (lm-eval's `--include_path`).
        limit: items per zero-shot task (None = full splits).
        seq_len / max_tokens: perplexity window and evaluated prefix.
        batch_size: "auto" or windows/requests per forward.
        data_dir: local data directory; given (or found via $ZHPRUNE_DATA_DIR) means offline tasks.
        device: move the model there first when given (None or "auto" leaves it where it is).
        task_source: "hub" or "local"; None chooses (local when a data directory is known).

    Raises:
        EvaluationError: bad names, missing data, no Hub and no data directory.
    """
    total_started = time.perf_counter()
    notify = notify or (lambda _m: None)
    if device not in (None, "auto"):
        model.to(device)
    model.eval()
    data_path = _data_dir(data_dir)
    names, task_names, language_record = resolve_defaults(
        model, tokenizer, ppl=ppl, tasks=tasks, data_dir=data_path, languages=languages, include_path=include_path
    )
    if language_record is not None and language_record.get("reason"):
        notify(f"languages of {model_id}: {language_record['reason']}")
    if limit is not None and limit < 1:
        raise EvaluationError(f"--limit {limit} must be a positive number of items per task, or left out.")
    batch_size = parse_batch_size(batch_size)
    param = next(model.parameters())

    started = time.perf_counter()
    ppl_results = _perplexities(
        model,
        tokenizer,
        names,
        data_dir=data_path,
        seq_len=seq_len,
        max_tokens=max_tokens,
        batch_size=batch_size,
        quiet=quiet,
        model_id=model_id,
    )
    ppl_seconds = time.perf_counter() - started

    started = time.perf_counter()
    zs_results: list[ZeroShotResult] = []
    if task_names:
        source = task_source or zeroshot.choose_task_source(data_path)
        lm = zeroshot.make_lm(model, tokenizer, batch_size=batch_size, quiet=quiet)
        for task in task_names:
            notify(f"zero-shot {task} · {model_id} ({source} task, limit {limit})")
            out = zeroshot.run_task(
                lm, task, source=source, data_dir=data_path, limit=limit, quiet=quiet, include_path=include_path
            )
            zs_results.append(
                ZeroShotResult(
                    task=out.task,
                    acc=out.acc,
                    acc_stderr=out.acc_stderr,
                    acc_norm=out.acc_norm,
                    acc_norm_stderr=out.acc_norm_stderr,
                    samples=out.samples,
                    samples_total=out.samples_total,
                    source=out.source,
                    data_source=out.data_source,
                    data_sha256=out.data_sha256,
                    seconds=out.seconds,
                    subtasks=[ZeroShotSubtask(**asdict(sub)) for sub in out.subtasks] or None,
                )
            )
    zs_seconds = time.perf_counter() - started

    auto_map = getattr(model.config, "auto_map", None)
    return ModelResults(
        model_id=model_id,
        revision=revision,
        commit=commit,
        architecture=(getattr(model.config, "architectures", None) or [type(model).__name__])[0],
        layout="global" if auto_map else "stock",
        trust_remote_code=bool(auto_map),
        parameters=sum(p.numel() for p in model.parameters()),
        device=str(param.device),
        dtype=str(param.dtype).removeprefix("torch."),
        perplexity=ppl_results,
        zeroshot=zs_results,
        zeroshot_mean=_mean(zs_results),
        timings=Timings(perplexity_s=ppl_seconds, zeroshot_s=zs_seconds, total_s=time.perf_counter() - total_started),
        languages=language_record,
    )


# --- several models by path or id ------------------------------------------------------------------


def evaluate_models(
    models: list[str],
    *,
    ppl: list[str] | None = None,
    tasks: list[str] | None = None,
    limit: int | None = None,
    seq_len: int = 2048,
    max_tokens: int | None = None,
    batch_size: int | str = "auto",
    data_dir: str | Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool | None = None,
    quiet: bool = True,
    notify: Notify | None = None,
    include_path: Path | None = None,
) -> EvaluationResults:
    """Load each model (Hub id, local dir, or pruned checkpoint of either layout), evaluate, compare.

    The first model is the reference. Models are loaded one at a time and freed before the next.
    With ppl=None the reference's language picks the default corpora, so every model is measured
    on the same texts.
    """
    from zhprune_hub.loading import load_model, needs_remote_code, resolve_source, trust_for

    if not models:
        raise EvaluationError("No model was given; pass at least one Hub id or checkpoint directory.")
    notify = notify or (_stderr if not quiet else (lambda _m: None))
    # Fail before loading anything when the zero-shot data cannot be reached.
    data_path = _data_dir(data_dir)
    if tasks is not None:
        zeroshot.validate_tasks(tasks, include_path)
    task_source = zeroshot.choose_task_source(data_path) if tasks != [] else None
    if quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    results: list[ModelResults] = []
    for reference in models:
        source = resolve_source(reference)
        for note in source.notes:  # e.g. which of several GGUF files was chosen
            notify(f"note: {note}")
        # Decided (and foreign code refused) before the note, so the note never promises a load that fails.
        trusted = trust_for(source, trust_remote_code)
        remote = source.gguf_file is None and needs_remote_code(source.local_dir)
        if remote and trusted and trust_remote_code is None:
            notify(
                f"{reference} uses the `global` layout (per-layer widths): loading it with "
                "trust_remote_code=True to run its shipped modeling code."
            )
        started = time.perf_counter()
        model, tokenizer = load_model(source, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        load_s = time.perf_counter() - started
        # The reference decides the defaults; every later model is measured on the same texts and tasks.
        ppl, tasks, record = resolve_defaults(
            model, tokenizer, ppl=ppl, tasks=tasks, data_dir=data_path, include_path=include_path
        )
        if record is not None:
            notify(f"languages of {reference}: {record['reason']}")
        result = evaluate_model(
            model,
            tokenizer,
            model_id=reference,
            ppl=ppl,
            tasks=tasks,
            limit=limit,
            seq_len=seq_len,
            max_tokens=max_tokens,
            batch_size=batch_size,
            data_dir=data_path,
            revision=source.revision,
            commit=source.commit,
            task_source=task_source,
            quiet=quiet,
            notify=notify,
            include_path=include_path,
        )
        timings = result.timings.model_copy(update={"load_s": load_s, "total_s": result.timings.total_s + load_s})
        update = {"timings": timings, "trust_remote_code": remote or result.trust_remote_code}
        if record is not None:
            update["languages"] = record
        results.append(result.model_copy(update=update))
        del model, tokenizer
        gc.collect()
        _empty_cache()
    first = results[0]
    protocol = build_protocol(
        first,
        ppl=[p.dataset for p in first.perplexity],
        tasks=[z.task for z in first.zeroshot],
        limit=limit,
        seq_len=seq_len,
        max_tokens=max_tokens,
        batch_size=batch_size,
        task_source=task_source,
    )
    return compare(first, results[1:], protocol=protocol)


def build_protocol(
    reference: ModelResults,
    *,
    ppl: list[str],
    tasks: list[str],
    limit: int | None,
    seq_len: int,
    max_tokens: int | None,
    batch_size: int | str,
    task_source: str | None,
) -> Protocol:
    """The protocol block of a results file, from the arguments an evaluation ran with."""
    zs = None
    if tasks and task_source is not None:
        import lm_eval

        zs = ZeroShotProtocol(tasks=tasks, limit=limit, task_source=task_source, lm_eval_version=lm_eval.__version__)  # type: ignore[arg-type]
    return Protocol(
        device=reference.device,
        dtype=reference.dtype,
        batch_size=str(batch_size),
        perplexity=PerplexityProtocol(datasets=ppl, seq_len=seq_len, max_tokens=max_tokens) if ppl else None,
        zeroshot=zs,
    )


def _empty_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
