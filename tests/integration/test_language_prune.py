"""The language rule inside `prune`: measured through the streamed scorer, recorded in zhprune_pruning.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.tiny_models import make_tiny_checkpoint
from zhprune_hub.data.language import decide_languages
from zhprune_hub.prune.engine import StreamedScorer
from zhprune_hub.prune.families import family_for
from zhprune_hub.prune.streaming import SafetensorsSource, Streamer, empty_model
from zhprune_hub.prune.traversal import Traversal
from zhprune_hub.pruning import REPORT_NAME, PruneConfig, prune_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint("qwen2", tmp_path_factory.mktemp("lang") / "qwen2")


def test_streamed_scorer_gives_the_in_memory_figures(tiny: Path, shared_data: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    skeleton = empty_model(model.config, trust_remote_code=False)
    streamer = Streamer(skeleton, SafetensorsSource(tiny), device=torch.device("cpu"), dtype=torch.float32)
    scorer = StreamedScorer(Traversal(skeleton, family_for("qwen2"), streamer, batch_size=1))
    streamed = decide_languages(scorer, tokenizer, data_dir=shared_data, probe_bytes=1200)
    whole = decide_languages(model, tokenizer, data_dir=shared_data, probe_bytes=1200)
    assert streamed.languages == whole.languages
    for language, figure in whole.figures.items():
        assert streamed.figures[language].model_bits_per_byte == pytest.approx(figure.model_bits_per_byte, abs=2e-4)


def test_prune_auto_records_the_decision(tiny: Path, shared_data: Path, tmp_path: Path) -> None:
    config = PruneConfig(model=str(tiny), output=tmp_path / "out", ratio=0.2, method="taylor", num_samples=4,
                         seq_len=32, device="cpu", data_dir=shared_data)  # fmt: skip
    logs: list[str] = []
    prune_model(config, log=logs.append)
    calibration = json.loads((tmp_path / "out" / REPORT_NAME).read_text())["calibration"]
    decision = calibration["language_decision"]
    assert calibration["spec"] == "auto" and decision["how"] == "measured"
    assert calibration["language"] == "+".join(decision["languages"])
    assert set(decision["figures"]) == {"zh", "en"} and decision["compressor"] == "bz2"
    if len(decision["languages"]) == 2:
        assert calibration["weights"] == {"wikitext_zh": 0.5, "c4": 0.5}
    assert any(line.startswith("calibration languages: measured") for line in logs)
