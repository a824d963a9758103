"""Calibration language: the same pruning calibrated on Chinese, English or a 50/50 mix, over seeds.

    python benchmarks/calibration_language.py --models qwen2.5 smollm2 --seeds 0,1,2 \
        --out results/calibration_language.json --markdown results/calibration_language.md

Taylor importance, layouts global and uniform, one ratio (default 0.2); calibration `wikitext_zh`
vs `c4` vs `wikitext_zh:0.5,c4:0.5` with the same N x L windows and the same seeds. Reports English
(WikiText-2) and Chinese (c4_zh stand-in) perplexity and the zero-shot mean, as mean ± sample
standard deviation over seeds; with `--tasks xcopa_zh cmmlu piqa ...` also each Chinese task and the
mean of the English ones. `--calibrations auto` adds what the language rule picks (for a bilingual
model the same windows as the 50/50 mix). Qwen2.5 is the Chinese-capable model; SmolLM2 is the control.
Resumable: one key per (model, layout, calibration, seed).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Store,
    base_parser,
    config_key,
    display_model,
    eval_protocol,
    evaluate_dir,
    fmt,
    log,
    mean_without,
    normalise,
    percent,
    protocol_text,
    prune_and_evaluate,
    resolve_model,
    run_configs,
    table,
    task_score,
    write_markdown,
)

DEFAULT_CALIBRATIONS = ["wikitext_zh", "c4", "wikitext_zh:0.5,c4:0.5"]


def parse_args(argv: list[str] | None = None):
    parser = base_parser(
        __doc__.splitlines()[0], out="results/calibration_language.json", markdown="results/calibration_language.md"
    )
    parser.set_defaults(
        models=["qwen2.5", "smollm2"],
        ratios=["0.2"],
        methods=["taylor"],
        seeds=["0", "1", "2"],
        ppl=["wikitext2", "c4_zh"],
    )
    parser.add_argument(
        "--calibrations",
        nargs="+",
        default=DEFAULT_CALIBRATIONS,
        help="Calibration specs, space-separated (a mix such as wikitext_zh:0.5,c4:0.5 keeps its comma).",
    )
    parser.add_argument("--no-base", action="store_true", help="Skip the unpruned base rows.")
    return normalise(parser.parse_args(argv))


def build_configs(args) -> list:
    configs = []
    for name in args.models:
        label, directory = resolve_model(name)
        if not args.no_base:
            configs.append(
                (
                    config_key(model=label, method="base"),
                    lambda d=directory, m=label: {
                        "model": m,
                        "method": "base",
                        "layout": None,
                        "calibration_spec": None,
                        "seed": None,
                        **evaluate_dir(d, args, model_id=f"{m} (base)", family=m),
                    },
                )
            )
        for ratio in args.ratios:
            for method in args.methods:
                for layout in args.layouts:
                    for calibration in args.calibrations:
                        for seed in args.seeds:
                            key = config_key(
                                model=label,
                                method=method,
                                layout=layout,
                                ratio=ratio,
                                calibration=calibration,
                                seed=seed,
                                n=args.num_samples,
                                L=args.seq_len,
                            )

                            def job(d=directory, m=label, r=ratio, me=method, la=layout, c=calibration, s=seed):
                                record = prune_and_evaluate(
                                    d,
                                    ratio=r,
                                    method=me,
                                    layout=la,
                                    seed=s,
                                    args=args,
                                    model_id=f"{m} {me}/{la}@{r} calib {c} seed {s}",
                                    family=m,
                                    calibration=c,
                                )
                                return {
                                    "model": m,
                                    "method": me,
                                    "layout": la,
                                    "ratio": r,
                                    "seed": s,
                                    **record,
                                    "calibration_spec": c,
                                }

                            configs.append((key, job))
    return configs


ZH_TASKS = ("xcopa_zh", "cmmlu")


def metrics(record: dict) -> dict[str, float | None]:
    """The reported numbers of one run: en PPL, zh PPL, zero-shot mean (%) with and without BoolQ,
    each Chinese task (%) and the mean of the English tasks (%) when Chinese tasks ran too."""
    ppl = record.get("perplexity") or {}
    mean = record.get("zeroshot_mean") or {}
    tasks = list(record.get("zeroshot") or {})
    english = [task for task in tasks if task not in ZH_TASKS]
    en_scores = [task_score(record, task) for task in english]
    return {
        "en": (ppl.get("wikitext2") or {}).get("ppl"),
        "zh": (ppl.get("c4_zh") or {}).get("ppl"),
        "zeroshot": percent(mean.get("acc_norm")),
        "zeroshot_no_boolq": percent(mean_without(record, tasks, "boolq")) if "boolq" in tasks else None,
        **{task: percent(task_score(record, task)) for task in ZH_TASKS},
        "zeroshot_en": percent(sum(en_scores) / len(en_scores))
        if english and len(english) < len(tasks) and None not in en_scores
        else None,
    }


def spread(values: list[float | None]) -> str:
    """`mean ± sd (n)`; sd is the sample standard deviation over seeds."""
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{fmt(values[0])} (n=1)"
    return f"{fmt(statistics.mean(values))} ± {fmt(statistics.stdev(values))} (n={len(values)})"


def aggregate(results: dict[str, dict]) -> dict[tuple, dict[str, list]]:
    groups: dict[tuple, dict[str, list]] = {}
    for record in results.values():
        if "error" in record:
            continue
        group = (
            record["model"],
            record["method"],
            record.get("layout"),
            record.get("ratio"),
            record.get("calibration_spec"),
        )
        bucket = groups.setdefault(group, {"seeds": []})
        for name, value in metrics(record).items():
            bucket.setdefault(name, []).append(value)
        bucket["seeds"].append(record.get("seed"))
    return groups


def render(store: Store, args) -> str:
    groups = aggregate(store.results)
    tasks = store.data["protocol"]["zeroshot"]["tasks"]
    with_boolq = "boolq" in tasks and len(tasks) > 1
    zh_tasks = [task for task in ZH_TASKS if task in tasks]
    with_en = bool(zh_tasks) and len(zh_tasks) < len(tasks)
    failed = [k for k, r in store.results.items() if "error" in r]
    parts = [
        protocol_text(store.data["protocol"])
        + " Pruned rows: mean ± sample standard deviation over seeds (n = number of seeds)."
    ]
    for model in dict.fromkeys(group[0] for group in groups):
        rows = []
        for group, bucket in sorted(
            ((g, b) for g, b in groups.items() if g[0] == model),
            key=lambda item: (item[0][1] != "base", str(item[0][2]), str(item[0][4])),
        ):
            _, method, layout, ratio, calibration = group
            rows.append(
                [
                    method,
                    layout or "—",
                    fmt(ratio, 1) if ratio is not None else "—",
                    f"`{calibration}`" if calibration else "—",
                    ", ".join(str(s) for s in bucket["seeds"] if s is not None) or "—",
                    spread(bucket["en"]),
                    spread(bucket["zh"]),
                    spread(bucket["zeroshot"]),
                    *([spread(bucket["zeroshot_no_boolq"])] if with_boolq else []),
                    *(spread(bucket[task]) for task in zh_tasks),
                    *([spread(bucket["zeroshot_en"])] if with_en else []),
                ]
            )
        header = ["method", "layout", "ratio", "calibration", "seeds", "PPL en (wikitext2)", "PPL zh (c4_zh)"]
        header += ["0-shot mean %", *(["0-shot w/o boolq %"] if with_boolq else [])]
        header += [f"{task} %" for task in zh_tasks] + (["en tasks mean %"] if with_en else [])
        parts.append(f"## {display_model(model)}\n\n{table(header, rows)}")
    if failed:
        parts.append("Failed configurations (rerun with --retry-failed):\n\n" + "\n".join(f"- `{k}`" for k in failed))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    store = Store(args.out, eval_protocol(args), retry_failed=args.retry_failed)
    failures = run_configs(
        store,
        build_configs(args),
        after=lambda: write_markdown(
            args.markdown, "Calibration language: zh vs en vs mix", store, render(store, args)
        ),
    )
    log(f"results: {args.out}; table: {args.markdown}; failed this run: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
