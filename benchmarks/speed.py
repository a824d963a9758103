"""Speed and memory: pruning cost per method against its floor, and the pruned model's inference speed.

    python benchmarks/speed.py --models smollm2 qwen2.5 --ratios 0.1,0.2,0.3 \
        --out results/speed.json --markdown results/speed.md

Pruning cost: wall time and peak RSS of `prune_model` for each method (at --prune-ratio, layout
--prune-layout), against the floor measured in the same run on the same calibration windows:
one forward+backward pass (taylor's floor) and one forward pass (activation's floor), gradients
on the same prunable weights taylor scores. Every measurement runs in a fresh subprocess so its
peak RSS (ru_maxrss) is its own. Inference: prefill and decode tokens/s (batch 1, KV cache, greedy)
of the pruned model at each ratio and layout against the base model, beside the ideal speed-up
1 / (1 - removed fraction of decoder-layer parameters). Evaluation throughput: eval_throughput.py.
Resumable: one key per measurement (for a clean comparison of floors and methods use a fresh --out).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    REPO_ROOT,
    SHORTGPT,
    Store,
    base_parser,
    config_key,
    display_model,
    fmt,
    log,
    normalise,
    percent,
    pruning_summary,
    resolve_model,
    run_configs,
    table,
    work_dir,
    write_markdown,
)

CHILD_FLAG = "--child"
FLOORS = {"obs": "forward_backward", "taylor": "forward_backward", "activation": "forward"}


def parse_args(argv: list[str] | None = None):
    parser = base_parser(__doc__.splitlines()[0], out="results/speed.json", markdown="results/speed.md")
    parser.set_defaults(methods=["taylor", "activation", "magnitude", "random"])
    parser.add_argument("--prune-ratio", type=float, default=0.2, help="Ratio at which pruning cost is measured.")
    parser.add_argument("--prune-layout", default="global", help="Layout at which pruning cost is measured.")
    parser.add_argument("--speed-method", default="taylor", help="Method of the checkpoints timed for inference.")
    parser.add_argument("--prefill-len", type=int, default=512, help="Prompt tokens for prefill (batch 1).")
    parser.add_argument("--decode-tokens", type=int, default=128, help="Greedy tokens generated after the prompt.")
    parser.add_argument("--repeats", type=int, default=3, help="Best of N timings (after one warm-up).")
    parser.add_argument("--no-inference", action="store_true", help="Measure pruning cost only.")
    return normalise(parser.parse_args(argv))


def protocol(args) -> dict[str, Any]:
    return {
        "calibration": {"spec": args.calibration, "num_samples": args.num_samples, "seq_len": args.seq_len},
        "prune": {"ratio": args.prune_ratio, "layout": args.prune_layout},
        "inference": {
            "method": args.speed_method,
            "prefill_len": args.prefill_len,
            "decode_tokens": args.decode_tokens,
            "repeats": args.repeats,
            "batch": 1,
        },
        "device": args.device,
        "dtype": args.dtype,
    }


# --- children: each runs in a fresh process and prints one JSON line -----------------------------


def run_child(task: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; return its JSON result (with its own peak RSS)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), CHILD_FLAG, json.dumps(task)],
        capture_output=True,
        text=True,
        env=env,
    )
    if completed.returncode != 0:
        tail = "\n".join(completed.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"measurement {task['kind']} exited {completed.returncode}: {tail}")
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def _peak(device: Any) -> dict[str, float]:
    import torch

    peaks = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peaks["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    peaks["torch_threads"] = torch.get_num_threads()
    return peaks


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize()


def child_prune(task: dict[str, Any], args) -> dict[str, Any]:
    from common import prune_with_method

    report = prune_with_method(
        Path(task["model_dir"]),
        Path(task["output"]),
        ratio=task["ratio"],
        method=task["method"],
        layout=task["layout"],
        args=args,
        seed=task["seed"],
    )
    return {**pruning_summary(report), "memory": _peak(args.device)}


def child_floor(task: dict[str, Any], args) -> dict[str, Any]:
    """One forward(+backward) pass over the calibration windows `prune_model` would use."""
    import torch
    from common import quiet_transformers

    from zhprune_hub.data import calibration_windows
    from zhprune_hub.loading import load_model, resolve_source
    from zhprune_hub.prune.families import family_for
    from zhprune_hub.prune.importance import prunable_parameters
    from zhprune_hub.prune.structure import decoder_layers
    from zhprune_hub.pruning import card_languages

    quiet_transformers()
    torch.manual_seed(task["seed"])
    source = resolve_source(task["model_dir"])
    model, tokenizer = load_model(source, device=args.device, dtype=args.dtype)
    windows = calibration_windows(
        args.calibration,
        tokenizer,
        num_samples=args.num_samples,
        seq_len=args.seq_len,
        seed=task["seed"],
        data_dir=args.data_dir,
        model=model,
        model_card_languages=card_languages(source.local_dir),
    )
    device = next(model.parameters()).device
    backward = task["floor"] == "forward_backward"
    if backward:
        spec = family_for(model.config.model_type)
        prunable = {id(p) for layer in decoder_layers(model, spec) for p in prunable_parameters(layer, spec)}
        for p in model.parameters():
            p.requires_grad_(id(p) in prunable)
    _sync(device)
    started = time.perf_counter()
    with torch.set_grad_enabled(backward):
        for row in windows.input_ids:
            batch = row[None].to(device)
            if backward:
                model(input_ids=batch, labels=batch, use_cache=False).loss.backward()
            else:
                model(input_ids=batch, use_cache=False)
    _sync(device)
    seconds = time.perf_counter() - started
    return {"floor": task["floor"], "seconds": seconds, "token_hash": windows.token_hash, "memory": _peak(device)}


def child_infer(task: dict[str, Any], args) -> dict[str, Any]:
    """Prefill and greedy-decode tokens/s at batch 1 with the KV cache, best of `repeats`."""
    import torch
    from common import quiet_transformers

    from zhprune_hub.data import evaluation_text
    from zhprune_hub.evaluate.perplexity import tokenize
    from zhprune_hub.loading import load_model, resolve_source

    quiet_transformers()
    model, tokenizer = load_model(resolve_source(task["checkpoint"]), device=args.device, dtype=args.dtype)
    device = next(model.parameters()).device
    ids = tokenize(tokenizer, evaluation_text("wikitext2", data_dir=args.data_dir).text[:200_000])
    prompt = ids[: args.prefill_len][None].to(device)

    def once() -> tuple[float, float]:
        _sync(device)
        started = time.perf_counter()
        out = model(input_ids=prompt, use_cache=True)
        _sync(device)
        prefill = time.perf_counter() - started
        cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        started = time.perf_counter()
        for _ in range(args.decode_tokens):
            out = model(input_ids=token, past_key_values=cache, use_cache=True)
            cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        _sync(device)
        return prefill, time.perf_counter() - started

    with torch.inference_mode():
        once()  # warm-up
        timings = [once() for _ in range(args.repeats)]
    prefill = min(t[0] for t in timings)
    decode = min(t[1] for t in timings)
    return {
        "prefill_tokens": int(prompt.shape[1]),
        "prefill_tokens_per_s": prompt.shape[1] / prefill,
        "decode_tokens": args.decode_tokens,
        "decode_tokens_per_s": args.decode_tokens / decode,
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(device),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "memory": _peak(device),
    }


def child_main(payload: str) -> int:
    task = json.loads(payload)
    args = parse_args(task["argv"])
    kind = task["kind"]
    if kind == "prune_infer":
        # Pruning for the inference table: its cost is not what is measured here.
        result = child_prune(task, args)
        result["inference"] = child_infer({"checkpoint": task["output"]}, args)
    else:
        result = {"prune": child_prune, "floor": child_floor, "infer": child_infer}[kind](task, args)
    print(json.dumps(result))
    return 0


# --- parent ------------------------------------------------------------------------------------


def build_configs(args, argv: list[str]) -> list:
    import shutil

    configs = []
    calib = {"calibration": args.calibration, "n": args.num_samples, "L": args.seq_len}

    def pruned(task: dict[str, Any]) -> dict[str, Any]:
        scratch = work_dir(args)
        try:
            return run_child({**task, "output": str(scratch / "pruned"), "argv": argv})
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    for name in args.models:
        label, directory = resolve_model(name)
        common = {"model_dir": str(directory), "seed": args.seeds[0]}
        for floor in dict.fromkeys(FLOORS[m] for m in args.methods if m in FLOORS):
            configs.append(
                (
                    config_key(model=label, measure="floor", floor=floor, seed=args.seeds[0], **calib),
                    lambda c=common, f=floor, m=label: {
                        "model": m,
                        "measure": "floor",
                        **run_child({**c, "kind": "floor", "floor": f, "argv": argv}),
                    },
                )
            )
        for method in args.methods:
            layout = "blocks" if method == SHORTGPT else args.prune_layout
            key = config_key(
                model=label, measure="prune", method=method, layout=layout, ratio=args.prune_ratio, seed=args.seeds[0]
            )
            configs.append(
                (
                    key + "|" + config_key(**calib),
                    lambda c=common, me=method, la=layout, m=label: {
                        "model": m,
                        "measure": "prune",
                        "method": me,
                        "layout": la,
                        "ratio": args.prune_ratio,
                        **pruned({**c, "kind": "prune", "method": me, "layout": la, "ratio": args.prune_ratio}),
                    },
                )
            )
        if args.no_inference:
            continue
        configs.append(
            (
                config_key(model=label, measure="infer", method="base"),
                lambda d=directory, m=label: {
                    "model": m,
                    "measure": "infer",
                    "method": "base",
                    "ratio": 0.0,
                    "removed_fraction_of_layers": 0.0,
                    "inference": run_child({"kind": "infer", "checkpoint": str(d), "argv": argv}),
                },
            )
        )
        method = args.speed_method
        for ratio in args.ratios:
            for layout in ["blocks"] if method == SHORTGPT else args.layouts:
                configs.append(
                    (
                        config_key(
                            model=label,
                            measure="infer",
                            method=method,
                            layout=layout,
                            ratio=ratio,
                            seed=args.seeds[0],
                            **calib,
                        ),
                        lambda c=common, r=ratio, la=layout, m=label, me=method: {
                            "model": m,
                            "measure": "infer",
                            "method": me,
                            "layout": la,
                            "ratio": r,
                            **pruned({**c, "kind": "prune_infer", "method": me, "layout": la, "ratio": r}),
                        },
                    )
                )
    return configs


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def render(store: Store) -> str:
    results = [r for r in store.results.values() if "error" not in r]
    failed = [k for k, r in store.results.items() if "error" in r]
    proto = store.data["protocol"]
    calib, inference = proto["calibration"], proto["inference"]
    threads = sorted({r["memory"]["torch_threads"] for r in results if "torch_threads" in r.get("memory", {})})
    parts = [
        f"Calibration `{calib['spec']}`, {calib['num_samples']} windows × {calib['seq_len']} tokens; device "
        f"{proto['device']}, dtype {proto['dtype']}, torch threads {', '.join(map(str, threads)) or '?'}. Each measurement in "
        "a fresh process; peak RSS is that process's ru_maxrss. Floor: one forward+backward (taylor) or forward "
        "(activation) pass over the same windows, batch 1, after loading the model; x floor = method time / floor "
        f"time. Inference: batch 1, {inference['prefill_len']}-token prompt, {inference['decode_tokens']} greedy "
        f"tokens with the KV cache, best of {inference['repeats']}; checkpoints pruned with {inference['method']}; "
        "ideal speed-up = 1 / (1 - removed fraction of decoder-layer parameters)."
    ]
    for model in dict.fromkeys(r["model"] for r in results):
        rows = [r for r in results if r["model"] == model]
        floors = {r["floor"]: r for r in rows if r["measure"] == "floor"}
        gpu = any("peak_gpu_mb" in (r.get("memory") or {}) for r in rows)
        cost = []
        for r in (r for r in rows if r["measure"] == "prune"):
            timings, memory = r.get("prune_timings") or {}, r.get("memory") or {}
            floor = floors.get(FLOORS.get(r["method"], ""))
            # The sequential engine's collection pass (scores and statistics); older results call it importance_s.
            scoring_s = timings.get("collect_s", timings.get("importance_s"))
            floor_s = floor["seconds"] if floor else None
            floor_rss = floor["memory"]["peak_rss_mb"] if floor else None
            same = None
            if floor:
                same = "yes" if floor["token_hash"] == (r.get("calibration") or {}).get("token_hash") else "NO"
            cost.append(
                [
                    r["method"],
                    r["layout"],
                    fmt(r["ratio"], 1),
                    fmt(scoring_s),
                    fmt(timings.get("total_s")),
                    floor["floor"].replace("_", "+") if floor else "—",
                    fmt(floor_s),
                    fmt(_ratio(scoring_s, floor_s)),
                    fmt(_ratio(timings.get("total_s"), floor_s)),
                    fmt(memory.get("peak_rss_mb"), 0),
                    fmt(floor_rss, 0),
                    fmt(_ratio(memory.get("peak_rss_mb"), floor_rss)),
                    *(
                        [fmt(memory.get("peak_gpu_mb"), 0), fmt(floor and floor["memory"].get("peak_gpu_mb"), 0)]
                        if gpu
                        else []
                    ),
                    same or "—",
                ]
            )
        header = ["method", "layout", "ratio", "scoring s", "total s", "floor", "floor s", "scoring x floor"]
        header += ["total x floor", "peak RSS MB", "floor peak RSS MB", "RSS x floor"]
        header += [*(["peak GPU MB", "floor peak GPU MB"] if gpu else []), "same windows"]
        parts.append(f"## {display_model(model)}: pruning cost\n\n{table(header, cost)}")

        infer = sorted((r for r in rows if r["measure"] == "infer"), key=lambda r: (r["ratio"], str(r.get("layout"))))
        base = next((r["inference"] for r in infer if r["method"] == "base"), None)
        speed = []
        for r in infer:
            inf = r["inference"]
            removed = r.get("removed_fraction_of_layers")
            speed.append(
                [
                    r["method"],
                    r.get("layout") or "—",
                    fmt(r["ratio"], 1),
                    fmt(percent(removed), 1),
                    fmt(inf["parameters"] / 1e6, 1),
                    fmt(inf["prefill_tokens_per_s"], 0),
                    fmt(_ratio(inf["prefill_tokens_per_s"], base and base["prefill_tokens_per_s"])),
                    fmt(inf["decode_tokens_per_s"], 1),
                    fmt(_ratio(inf["decode_tokens_per_s"], base and base["decode_tokens_per_s"])),
                    fmt(None if removed is None else 1 / (1 - removed)),
                ]
            )
        header = ["method", "layout", "ratio", "removed % layers", "params (M)", "prefill tok/s", "prefill x base"]
        header += ["decode tok/s", "decode x base", "ideal x"]
        parts.append(f"## {display_model(model)}: inference\n\n{table(header, speed)}")
    if failed:
        parts.append("Failed measurements (rerun with --retry-failed):\n\n" + "\n".join(f"- `{k}`" for k in failed))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [CHILD_FLAG]:
        return child_main(argv[1])
    args = parse_args(argv)
    store = Store(args.out, protocol(args), retry_failed=args.retry_failed)
    failures = run_configs(
        store,
        build_configs(args, argv),
        after=lambda: write_markdown(args.markdown, "Speed and memory", store, render(store)),
    )
    log(f"results: {args.out}; table: {args.markdown}; failed this run: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
