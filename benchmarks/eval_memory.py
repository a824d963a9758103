"""Peak memory of one perplexity evaluation, in a fresh process, for the memory table in BENCHMARKS.md.

    python benchmarks/eval_memory.py --model ~/.cache/zhprune-hub/models/qwen2.5-0.5b --seq-len 2048

Prints one JSON line: peak RSS once the model is loaded and has run one short forward, and after evaluating --max-tokens tokens of
WikiText-2 at --seq-len with --batch-size windows per forward. `--kernel FILE` evaluates with another
perplexity module (e.g. an older version from git) for a before/after comparison.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch

from zhprune_hub.data import evaluation_text
from zhprune_hub.evaluate import perplexity as current_kernel
from zhprune_hub.loading import load_model, resolve_source


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--kernel", type=Path, default=None, help="Another perplexity.py to evaluate with.")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()

    kernel = current_kernel
    if args.kernel is not None:
        spec = importlib.util.spec_from_file_location("other_perplexity", args.kernel)
        kernel = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = kernel  # dataclasses look their module up here
        spec.loader.exec_module(kernel)
    model, tokenizer = load_model(resolve_source(args.model), device="cpu", dtype="float32")
    ids = kernel.tokenize(tokenizer, evaluation_text("wikitext2", data_dir=args.data_dir).text)
    with torch.inference_mode():  # touch every weight once, so the baseline holds the whole model
        model(input_ids=ids[:16][None])
    loaded = peak_rss_mb()
    out = kernel.perplexity(model, ids, seq_len=args.seq_len, max_tokens=args.max_tokens, batch_size=args.batch_size)
    print(
        json.dumps(
            {
                "model": Path(args.model).name,
                "kernel": str(args.kernel or "current"),
                "seq_len": out.seq_len,
                "batch_size": args.batch_size,
                "tokens": out.tokens_evaluated,
                "perplexity": out.perplexity,
                "peak_rss_model_mb": round(loaded, 1),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "evaluation_extra_mb": round(peak_rss_mb() - loaded, 1),
                "seconds": round(out.seconds, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
