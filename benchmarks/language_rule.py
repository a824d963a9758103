"""The language rule's figures on real checkpoints, measured the way `prune` measures them.

    python benchmarks/language_rule.py --models smollm2 qwen2.5 --data-dir ../shared/data

Each model is streamed block by block through `StreamedScorer` (what `zhprune-hub prune` passes to
the rule), scored on the first 8,000 bytes of WikiText-2 test (en) and the CMRC 2018 trial
paragraphs (zh), and each figure is divided by bz2's bits per byte on the same bytes. Prints one
JSON document per model: the competent languages, the figures and the reason sentence.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import resolve_model


def streamed_decision(directory: Path, data_dir: Path | None, device: str) -> dict:
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from zhprune_hub.data.language import decide_languages
    from zhprune_hub.prune.engine import StreamedScorer
    from zhprune_hub.prune.families import family_for
    from zhprune_hub.prune.streaming import SafetensorsSource, Streamer, empty_model
    from zhprune_hub.prune.traversal import Traversal
    from zhprune_hub.pruning import card_languages

    config = AutoConfig.from_pretrained(directory)
    skeleton = empty_model(config, trust_remote_code=False)
    streamer = Streamer(skeleton, SafetensorsSource(directory), device=torch.device(device), dtype=torch.float32)
    scorer = StreamedScorer(Traversal(skeleton, family_for(config.model_type), streamer, batch_size=1))
    started = time.perf_counter()
    decision = decide_languages(
        scorer, AutoTokenizer.from_pretrained(directory), data_dir=data_dir, card_languages=card_languages(directory)
    )
    return {**asdict(decision), "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2", "qwen2.5"])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    for name in args.models:
        label, directory = resolve_model(name)
        print(json.dumps({"model": label, **streamed_decision(Path(directory), args.data_dir, args.device)},
                         ensure_ascii=False, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
