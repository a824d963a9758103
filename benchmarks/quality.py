"""Quality after pruning: perplexity and zero-shot accuracy per method, layout and ratio, plus ShortGPT.

    python benchmarks/quality.py --models smollm2 qwen2.5 --ratios 0.1,0.2,0.3 \
        --out results/quality.json --markdown results/quality.md

Methods taylor / activation / magnitude / random × layouts global / uniform at each ratio of the
TOTAL parameters, the ShortGPT-style baseline (whole blocks with the lowest 1 - cos(input, output)
removed until the same parameter target is reached), and the unpruned base model. Results go to a
resumable JSON file (one key per configuration) and a Markdown table.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    SHORTGPT,
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

METHOD_ORDER = [
    "base",
    "obs",
    "obs:mlp",
    "obs:norepair",
    "taylor",
    "taylor:norepair",
    "activation",
    "magnitude",
    "random",
    SHORTGPT,
]
TASK_LABELS = {"winogrande": "wino", "arc_easy": "arc_e", "hellaswag": "hella"}


def parse_args(argv: list[str] | None = None):
    parser = base_parser(__doc__.splitlines()[0], out="results/quality.json", markdown="results/quality.md")
    parser.add_argument("--no-shortgpt", action="store_true", help="Skip the whole-block (ShortGPT) baseline.")
    parser.add_argument("--no-base", action="store_true", help="Skip the unpruned base rows.")
    return normalise(parser.parse_args(argv))


def key_for(model: str, **parts) -> str:
    return config_key(model=model, **parts)


def build_configs(args) -> list:
    configs = []
    for name in args.models:
        label, directory = resolve_model(name)
        if not args.no_base:
            configs.append(
                (
                    key_for(label, method="base"),
                    lambda d=directory, m=label: {
                        "model": m,
                        "method": "base",
                        "layout": None,
                        "ratio": 0.0,
                        "seed": None,
                        "removed_fraction_of_total": 0.0,
                        "removed_fraction_of_layers": 0.0,
                        **evaluate_dir(d, args, model_id=f"{m} (base)", family=m),
                    },
                )
            )
        for ratio in args.ratios:
            for seed in args.seeds:
                combos = [(method, layout) for method in args.methods for layout in args.layouts]
                if not args.no_shortgpt:
                    combos.append((SHORTGPT, "blocks"))
                for method, layout in combos:
                    key = key_for(
                        label,
                        method=method,
                        layout=layout,
                        ratio=ratio,
                        seed=seed,
                        calibration=args.calibration,
                        n=args.num_samples,
                        L=args.seq_len,
                    )

                    def job(d=directory, m=label, r=ratio, me=method, la=layout, s=seed):
                        record = prune_and_evaluate(
                            d,
                            ratio=r,
                            method=me,
                            layout=la if me != SHORTGPT else "uniform",
                            seed=s,
                            args=args,
                            model_id=f"{m} {me}/{la}@{r}",
                            family=m,
                        )
                        return {"model": m, "method": me, "layout": la, "ratio": r, "seed": s, **record}

                    configs.append((key, job))
    return configs


def calibration_name(record: dict) -> str:
    """The corpus a row was calibrated on ('' for the base model), for telling repeated rows apart."""
    return (record.get("calibration") or {}).get("name") or ""


def render(store: Store, args) -> str:
    results = [r for r in store.results.values() if "error" not in r]
    failed = [k for k, r in store.results.items() if "error" in r]
    corpora = store.data["protocol"]["perplexity"]["corpora"]
    tasks = store.data["protocol"]["zeroshot"]["tasks"]
    seeds = {r.get("seed") for r in results if r.get("seed") is not None}
    parts = [protocol_text(store.data["protocol"])]
    for model in dict.fromkeys(r["model"] for r in results):
        rows = sorted(
            (r for r in results if r["model"] == model),
            key=lambda r: (
                r["ratio"],
                METHOD_ORDER.index(r["method"]) if r["method"] in METHOD_ORDER else len(METHOD_ORDER),
                str(r["layout"]),
                calibration_name(r),
                r.get("seed") or 0,
            ),
        )
        calibrations = {calibration_name(r) for r in rows} - {""}
        show_calibration = len(calibrations) > 1
        header = ["ratio", "method", "layout", *(["calibration"] if show_calibration else [])]
        header += ["seed"] if len(seeds) > 1 else []
        header += ["removed % total", "removed % layers", "params (M)"]
        header += [f"PPL {c}" for c in corpora] + [TASK_LABELS.get(t, t) for t in tasks]
        header += ["0-shot mean", *(["mean w/o boolq"] if "boolq" in tasks and len(tasks) > 1 else [])]
        header += ["prune s", "row s"]
        body = []
        for r in rows:
            mean = r.get("zeroshot_mean") or {}
            timings = r.get("prune_timings") or {}
            body.append(
                [
                    fmt(r["ratio"], 1),
                    r["method"],
                    r["layout"] or "—",
                    *([calibration_name(r) or "—"] if show_calibration else []),
                    *([r.get("seed")] if len(seeds) > 1 else []),
                    fmt(percent(r.get("removed_fraction_of_total")), 1),
                    fmt(percent(r.get("removed_fraction_of_layers")), 1),
                    fmt(r["parameters"] / 1e6, 1),
                    *[fmt((r["perplexity"].get(c) or {}).get("ppl")) for c in corpora],
                    *[fmt(percent(task_score(r, t)), 1) for t in tasks],
                    fmt(percent(mean.get("acc_norm")), 1),
                    *(
                        [fmt(percent(mean_without(r, tasks, "boolq")), 1)]
                        if "boolq" in tasks and len(tasks) > 1
                        else []
                    ),
                    fmt(timings.get("total_s"), 1),
                    fmt(r.get("wall_s"), 1),
                ]
            )
        parts.append(f"## {display_model(model)}\n\n{table(header, body)}")
    if failed:
        parts.append("Failed configurations (rerun with --retry-failed):\n\n" + "\n".join(f"- `{k}`" for k in failed))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    store = Store(args.out, eval_protocol(args), retry_failed=args.retry_failed)
    configs = build_configs(args)
    failures = run_configs(
        store,
        configs,
        after=lambda: write_markdown(args.markdown, "Quality after structured pruning", store, render(store, args)),
    )
    log(f"results: {args.out}; table: {args.markdown}; failed this run: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
