"""Deployable export speed: prefill and decode tokens/s of base and pruned, PyTorch and OpenVINO, one CPU.

    python benchmarks/export_speed.py --models smollm2 --ratio 0.2 \
        --out benchmarks/results/export_speed.json --markdown benchmarks/results/export_speed.md

For each model: prune it (uniform layout, the tool's defaults), export base and pruned to
OpenVINO with `zhprune-hub export` (fp16 and int8 weights; each export is checked against its
PyTorch checkpoint on WikiText-2, and its check is recorded), then time batch-1 prefill and
greedy decode with the KV cache of: PyTorch float32 base and pruned (benchmarks/speed.py's
protocol) and each OpenVINO export (the same prompt and step count, timed by the export
environment's worker). Ratios compare OpenVINO base with OpenVINO pruned (same runtime), and
every row with dense PyTorch float32 (the deployment gain). Resumable: one key per measurement;
--stages runs part of it (e.g. `prune export` first, `speed` later).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Store,
    config_key,
    display_model,
    fmt,
    log,
    prune_with_method,
    pruning_summary,
    resolve_model,
    run_configs,
    table,
    write_markdown,
)

STAGES = ("prune", "export", "speed")
RUNTIMES = ("pytorch", "openvino")
OV_WEIGHTS = ("fp16", "int8")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2"], help="smollm2, qwen2.5 or paths.")
    parser.add_argument("--ratio", type=float, default=0.2, help="Fraction of total parameters removed.")
    parser.add_argument("--method", default="obs", help="Pruning method (uniform layout).")
    parser.add_argument("--num-samples", type=int, default=128, help="Calibration windows.")
    parser.add_argument("--seq-len", type=int, default=128, help="Calibration window length.")
    parser.add_argument("--calibration", default="auto")
    parser.add_argument("--prefill-len", type=int, default=512, help="Prompt tokens for prefill (batch 1).")
    parser.add_argument("--decode-tokens", type=int, default=128, help="Greedy tokens generated after the prompt.")
    parser.add_argument("--repeats", type=int, default=3, help="Best of N timings (after one warm-up).")
    parser.add_argument("--ppl-tokens", type=int, default=8192, help="WikiText-2 tokens of each export's check.")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES, help="Runtimes timed.")
    parser.add_argument(
        "--weights", nargs="+", default=list(OV_WEIGHTS), choices=OV_WEIGHTS, help="OpenVINO weight formats."
    )
    parser.add_argument(
        "--pruned",
        nargs="+",
        type=Path,
        default=None,
        help="Already pruned checkpoints, one per --models entry (`zhprune-hub prune MODEL --ratio R --layout "
        "uniform`, the same defaults as the prune stage); the prune stage is then skipped.",
    )
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "zhprune-export-bench")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/export_speed.json"))
    parser.add_argument("--markdown", type=Path, default=Path("benchmarks/results/export_speed.md"))
    parser.add_argument("--retry-failed", action="store_true")
    args = parser.parse_args(argv)
    args.device, args.dtype = "cpu", "float32"
    if args.pruned is not None and len(args.pruned) != len(args.models):
        parser.error("--pruned needs one directory per --models entry")
    return args


def protocol(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "prune": {"ratio": args.ratio, "method": args.method, "layout": "uniform", "num_samples": args.num_samples},
        "inference": {
            "prefill_len": args.prefill_len,
            "decode_tokens": args.decode_tokens,
            "repeats": args.repeats,
            "batch": 1,
        },
        "export_check": {"corpus": "wikitext2", "max_tokens": args.ppl_tokens, "seq_len": 512},
        # PASSIVE (the shared-machine setting) puts OpenMP threads to sleep between ops: it slows
        # PyTorch's per-token decode, not OpenVINO (TBB), so it belongs to the protocol
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def _paths(args: argparse.Namespace, label: str, base_dir: Path, given: Path | None) -> dict[str, Path]:
    root = args.work_dir / display_model(label)
    pruned = given.expanduser().resolve() if given else root / f"pruned-{args.ratio}-uniform"
    return {"base": base_dir, "pruned": pruned, "ov_root": root}


def _prompt(checkpoint: Path, args: argparse.Namespace) -> list[int]:
    """benchmarks/speed.py's prompt: the first tokens of WikiText-2 test."""
    from zhprune_hub.data import evaluation_text
    from zhprune_hub.evaluate.perplexity import tokenize
    from zhprune_hub.loading import load_tokenizer, resolve_source

    tokenizer = load_tokenizer(resolve_source(str(checkpoint)))
    ids = tokenize(tokenizer, evaluation_text("wikitext2", data_dir=args.data_dir).text[:200_000])
    return ids[: args.prefill_len].tolist()


def _export(checkpoint: Path, output: Path, weights: str, args: argparse.Namespace) -> dict[str, Any]:
    from zhprune_hub.export import ExportConfig, export_checkpoint

    config = ExportConfig(
        directory=checkpoint,
        weights=weights,
        output=output,
        overwrite=True,
        ppl_tokens=args.ppl_tokens,
        data_dir=args.data_dir,
    )
    record = export_checkpoint(config, log=log).record
    return {"output": str(output), **record}


def _pytorch_speed(checkpoint: Path, args: argparse.Namespace) -> dict[str, Any]:
    from speed import child_infer

    return child_infer({"checkpoint": str(checkpoint)}, args)


def _openvino_speed(directory: Path, prompt: list[int], args: argparse.Namespace) -> dict[str, Any]:
    from zhprune_hub.export.environment import check_environment
    from zhprune_hub.export.exporter import run_worker

    environment = check_environment()
    request = {
        "action": "speed",
        "model": str(directory),
        "prompt_ids": prompt,
        "decode_tokens": args.decode_tokens,
        "repeats": args.repeats,
        "inference_precision": "f32",
    }
    with tempfile.TemporaryDirectory(prefix="zhprune-speed-") as scratch:
        result = run_worker(environment, request, Path(scratch))
    return {
        key: result[key] for key in ("prefill_tokens", "prefill_tokens_per_s", "decode_tokens", "decode_tokens_per_s")
    }


def configs(args: argparse.Namespace) -> list[tuple[str, Any]]:
    jobs: list[tuple[str, Any]] = []
    for position, name in enumerate(args.models):
        label, base_dir = resolve_model(name)
        given = args.pruned[position] if args.pruned else None
        paths = _paths(args, label, base_dir, given)
        if "prune" in args.stages and given is None:
            jobs.append(
                (
                    config_key(stage="prune", model=label, ratio=args.ratio),
                    lambda p=paths, d=base_dir: pruning_summary(
                        prune_with_method(
                            d, p["pruned"], ratio=args.ratio, method=args.method, layout="uniform", args=args, seed=0
                        )
                    ),
                )
            )
        for variant in ("base", "pruned"):
            checkpoint = paths[variant]
            for weights in args.weights:
                output = paths["ov_root"] / f"ov-{variant}-{weights}"
                if "export" in args.stages:
                    jobs.append(
                        (
                            config_key(stage="export", model=label, variant=variant, weights=weights),
                            lambda c=checkpoint, o=output, w=weights: _export(c, o, w, args),
                        )
                    )
            if "speed" not in args.stages:
                continue
            if "pytorch" in args.runtimes:
                jobs.append(
                    (
                        config_key(stage="speed", model=label, variant=variant, runtime="pytorch", weights="fp32"),
                        lambda c=checkpoint: _pytorch_speed(c, args),
                    )
                )
            for weights in args.weights if "openvino" in args.runtimes else ():
                output = paths["ov_root"] / f"ov-{variant}-{weights}"
                jobs.append(
                    (
                        config_key(stage="speed", model=label, variant=variant, runtime="openvino", weights=weights),
                        lambda c=checkpoint, o=output: _openvino_speed(o, _prompt(c, args), args),
                    )
                )
    return jobs


def _ratio(value: float | None, reference: float | None) -> float | None:
    return value / reference if value and reference else None


def _section(results: dict[str, Any], label: str, formats: list[str]) -> str:
    """One model's table: every runtime and weight format of base and pruned."""

    def record(stage: str, **parts: str) -> dict[str, Any]:
        found = results.get(config_key(stage=stage, model=label, **parts)) or {}
        return found if "error" not in found else {}

    def speed(variant: str, runtime: str, weights: str) -> dict[str, Any]:
        return record(stage="speed", variant=variant, runtime=runtime, weights=weights)

    dense = speed("base", "pytorch", "fp32")
    rows = []
    for variant in ("base", "pruned"):
        for runtime, weights in (("pytorch", "fp32"), *(("openvino", w) for w in formats)):
            timing = speed(variant, runtime, weights)
            same_runtime_base = speed("base", runtime, weights)
            # PyTorch rows take their perplexity from an export's check (the same windows, PyTorch side)
            checked = [weights] if runtime == "openvino" else formats
            check = next(
                (c for w in checked if (c := record(stage="export", variant=variant, weights=w).get("check"))), {}
            )
            exported = runtime == "openvino" and bool(check)
            rows.append(
                [
                    variant,
                    "PyTorch" if runtime == "pytorch" else "OpenVINO",
                    weights,
                    fmt(timing.get("prefill_tokens_per_s"), 0),
                    fmt(timing.get("decode_tokens_per_s"), 1),
                    fmt(_ratio(timing.get("decode_tokens_per_s"), same_runtime_base.get("decode_tokens_per_s"))),
                    fmt(_ratio(timing.get("prefill_tokens_per_s"), dense.get("prefill_tokens_per_s"))),
                    fmt(_ratio(timing.get("decode_tokens_per_s"), dense.get("decode_tokens_per_s"))),
                    fmt(check.get("ppl_exported" if runtime == "openvino" else "ppl_pytorch")),
                    f"{100 * check['ppl_increase']:+.2f}%" if exported else "—",
                    f"{check['max_abs_diff']:.3f} / {100 * check['top1_agreement']:.1f}%" if exported else "—",
                ]
            )
    header = [
        "model",
        "runtime",
        "weights",
        "prefill tok/s",
        "decode tok/s",
        "decode x base (same runtime)",
        "prefill x dense PyTorch",
        "decode x dense PyTorch",
        "WT2 PPL",
        "PPL vs PyTorch",
        "max Δlogit / top-1",
    ]
    return f"## {display_model(label)}\n\n{table(header, rows)}"


def render(store: Store, args: argparse.Namespace) -> str:
    inference = store.data["protocol"]["inference"]
    omp = store.data["protocol"].get("omp_wait_policy") or "unset (OpenMP's default)"
    note = (
        f"Batch 1, {inference['prefill_len']}-token WikiText-2 prompt, {inference['decode_tokens']} greedy tokens with "
        f"the KV cache, best of {inference['repeats']} after a warm-up; all on the same CPU, one process at a time. "
        "OpenVINO runs with INFERENCE_PRECISION_HINT=f32 (weights fp16 or NNCF int8, activations float32); "
        f"OMP_WAIT_POLICY {omp}. "
        f"WT2 PPL: the first {args.ppl_tokens:,} WikiText-2 test tokens in 512-token windows, as each export's check "
        "computed it; 'PPL vs PyTorch' is against the same checkpoint in PyTorch float32."
    )
    sections = [_section(store.results, resolve_model(name)[0], args.weights) for name in args.models]
    return note + "\n\n" + "\n\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    store = Store(args.out, protocol(args), retry_failed=args.retry_failed)

    def after() -> None:
        write_markdown(args.markdown, "Deployable export: OpenVINO speed and quality", store, render(store, args))

    failures = run_configs(store, configs(args), after=after)
    after()
    print(json.dumps({"failures": failures, "markdown": str(args.markdown)}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
