"""Perplexity-evaluation throughput against a bare forward pass over the same token windows.

    python benchmarks/eval_throughput.py --model ~/.cache/zhprune-hub/models/smollm2-135m --max-tokens 8192

Prints a table and one JSON document (tokens/s of `zhprune_hub.evaluate.perplexity.perplexity`
and of plain `model(input_ids=...)` calls over identical windows, same batch size).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch

from zhprune_hub.data import evaluation_text
from zhprune_hub.evaluate.perplexity import make_windows, model_context, perplexity, tokenize
from zhprune_hub.loading import load_model, resolve_source


def bare_forward(model, windows: torch.Tensor, batch_size: int) -> float:
    device = next(model.parameters()).device
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, windows.shape[0], batch_size):
            model(input_ids=windows[start : start + batch_size].to(device), use_cache=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--corpus", default="wikitext2")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--max-tokens", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="Best of N for each side.")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()

    text = evaluation_text(args.corpus, data_dir=args.data_dir).text
    rows = []
    for reference in args.model:
        model, tokenizer = load_model(resolve_source(reference), device=args.device, dtype=args.dtype)
        ids = tokenize(tokenizer, text)
        windows = make_windows(ids, seq_len=args.seq_len, max_tokens=args.max_tokens, context=model_context(model))
        tokens = windows.numel()
        bare_forward(model, windows[:1], 1)  # warm-up
        bare = min(bare_forward(model, windows, args.batch_size) for _ in range(args.repeats))
        evals = [
            perplexity(model, ids, seq_len=args.seq_len, max_tokens=args.max_tokens, batch_size=args.batch_size)
            for _ in range(args.repeats)
        ]
        best = min(evals, key=lambda e: e.seconds)
        rows.append(
            {
                "model": reference,
                "device": str(next(model.parameters()).device),
                "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                "seq_len": best.seq_len,
                "tokens": tokens,
                "batch_size": args.batch_size,
                "perplexity": best.perplexity,
                "ppl_tokens_per_s": tokens / best.seconds,
                "bare_forward_tokens_per_s": tokens / bare,
                "overhead_pct": (best.seconds / bare - 1) * 100,
            }
        )
        del model
    header = f"{'model':40} {'device':6} {'tokens':>7} {'ppl tok/s':>10} {'bare tok/s':>11} {'overhead':>9}"
    print(header)
    for r in rows:
        print(
            f"{Path(r['model']).name[:40]:40} {r['device']:6} {r['tokens']:>7} {r['ppl_tokens_per_s']:>10.0f} "
            f"{r['bare_forward_tokens_per_s']:>11.0f} {r['overhead_pct']:>8.1f}%"
        )
    print(json.dumps({"machine": platform.machine(), "torch": torch.__version__, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
