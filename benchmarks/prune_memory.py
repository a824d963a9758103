"""Prune peak memory against depth: a random model with LLaMA-2-7B block widths and 2, 4, 8 blocks.

The sequential engine holds one decoder block at a time, so peak resident memory must stay flat
as blocks are added. Each depth runs `zhprune-hub prune` (the defaults, `--ratio 0.2`) in a fresh
process on a random checkpoint written block by block (bf16 on disk, so the test model itself is
never whole in memory) and reads the prune's own peak RSS and timings from its report. The bound
the issue sets is one block in fp32 + the calibration hidden states + the embeddings + 1.5 GB.

Usage:
    python benchmarks/prune_memory.py --depths 2 4 8 --num-samples 32 --seq-len 128
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO_ROOT, Store, config_key, log, models_dir, quiet_transformers, run_configs, write_atomically

GIB = 2**30


def write_random_checkpoint(directory: Path, *, layers: int, args: argparse.Namespace) -> dict[str, int]:
    """A LLaMA checkpoint of random weights (normal, std 0.02), written one block at a time."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig

    from zhprune_hub.prune.writer import CheckpointWriter

    tokenizer = AutoTokenizer.from_pretrained(models_dir() / "smollm2-135m")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        num_hidden_layers=layers,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    writer = CheckpointWriter(directory, dtype=torch.bfloat16, max_shard_size="2GB")
    hidden, inter, head_dim = args.hidden, args.intermediate, args.hidden // args.heads

    def random(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=generator) * 0.02).to(torch.bfloat16)

    writer.add({"model.embed_tokens.weight": random(config.vocab_size, hidden)})
    for index in range(layers):
        prefix = f"model.layers.{index}."
        writer.add(
            {
                prefix + "self_attn.q_proj.weight": random(args.heads * head_dim, hidden),
                prefix + "self_attn.k_proj.weight": random(args.kv_heads * head_dim, hidden),
                prefix + "self_attn.v_proj.weight": random(args.kv_heads * head_dim, hidden),
                prefix + "self_attn.o_proj.weight": random(hidden, args.heads * head_dim),
                prefix + "mlp.gate_proj.weight": random(inter, hidden),
                prefix + "mlp.up_proj.weight": random(inter, hidden),
                prefix + "mlp.down_proj.weight": random(hidden, inter),
                prefix + "input_layernorm.weight": torch.ones(hidden, dtype=torch.bfloat16),
                prefix + "post_attention_layernorm.weight": torch.ones(hidden, dtype=torch.bfloat16),
            }
        )
    writer.add({"model.norm.weight": torch.ones(hidden, dtype=torch.bfloat16)})
    writer.add({"lm_head.weight": random(config.vocab_size, hidden)})
    writer.finish()
    config.dtype = "bfloat16"
    config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    block = 4 * hidden * args.heads * head_dim + 2 * hidden * args.kv_heads * head_dim + 3 * hidden * inter + 2 * hidden
    return {"block_parameters": block, "embedding_parameters": 2 * config.vocab_size * hidden}


def measure(depth: int, args: argparse.Namespace, root: Path) -> dict:
    model_dir = root / f"llama7b-width-{depth}"
    sizes = write_random_checkpoint(model_dir, layers=depth, args=args)
    output = root / f"pruned-{depth}"
    command = [
        sys.executable, "-m", "zhprune_hub", "prune", str(model_dir), "-o", str(output), "--ratio", str(args.ratio),
        "--num-samples", str(args.num_samples), "--seq-len", str(args.seq_len), "--calibration", args.calibration,
        "--device", args.device, "--overwrite", "--json",
    ]  # fmt: skip
    log("  " + " ".join(command))
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=os.environ.copy())
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)
        shutil.rmtree(output, ignore_errors=True)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("Error") or "Error:" in line]
        raise RuntimeError(errors[-1] if errors else done.stderr.strip()[-500:] or "prune failed")
    report = json.loads(done.stdout)["report"]
    tokens = args.num_samples * args.seq_len
    bound = (sizes["block_parameters"] * 4 + tokens * args.hidden * 4 + sizes["embedding_parameters"] * 4) / GIB + 1.5
    timings = report["timings"]
    return {
        "depth": depth,
        "peak_rss_gib": report["memory"]["peak_rss_mb"] / 1024,
        "bound_gib": bound,
        "total_s": timings["total_s"],
        "per_block_s": (timings.get("collect_s", 0.0) + timings.get("cut_s", 0.0)) / depth,
        "removed_fraction": report["parameters"]["removed_fraction_of_total"],
    }


def markdown(store: Store, args: argparse.Namespace) -> str:
    rows = sorted((r for r in store.results.values() if "depth" in r), key=lambda r: r["depth"])
    lines = [
        "## prune memory",
        "",
        "```",
        *store.data["commands"],
        "```",
        "",
        "| blocks | peak RSS (GiB) | bound (GiB) | wall (s) | per block (s) | removed % |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['depth']} | {r['peak_rss_gib']:.2f} | {r['bound_gib']:.2f} | {r['total_s']:.0f} | "
            f"{r['per_block_s']:.0f} | {100 * r['removed_fraction']:.1f} |"
        )
    if len(rows) >= 2:
        xs, ys = [r["depth"] for r in rows], [r["peak_rss_gib"] for r in rows]
        slope = (ys[-1] - ys[0]) / (xs[-1] - xs[0])
        at_32 = ys[-1] + slope * (32 - xs[-1])
        lines += ["", f"Peak RSS grows {slope * 1024:.0f} MiB per block; extrapolated to 32 blocks: {at_32:.2f} GiB."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--intermediate", type=int, default=11008)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=32)
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--num-samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--calibration", default="c4")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks/results/prune_memory.json")
    parser.add_argument("--markdown", type=Path, default=REPO_ROOT / "benchmarks/results/prune_memory.md")
    parser.add_argument("--retry-failed", action="store_true")
    args = parser.parse_args()
    quiet_transformers()
    protocol = {k: getattr(args, k) for k in ("hidden", "intermediate", "heads", "kv_heads", "ratio", "num_samples",
                                              "seq_len", "calibration", "device")}  # fmt: skip
    store = Store(args.out, protocol, retry_failed=args.retry_failed)
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="zhprune-memory-", dir=args.work_dir))
    configs = [(config_key(depth=d), lambda d=d: measure(d, args, root)) for d in args.depths]
    failures = run_configs(store, configs, after=lambda: write_atomically(args.markdown, markdown(store, args)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
