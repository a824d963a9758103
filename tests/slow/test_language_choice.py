"""`auto` on the real checkpoints: SmolLM2 is English; Qwen2.5 follows its measured bits per byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from zhprune_hub.data import calibration_windows, decide_language

pytestmark = pytest.mark.slow


def _load(path: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(path)


def test_smollm2_is_english(smollm2_dir: Path, shared_data: Path) -> None:
    model, tokenizer = _load(smollm2_dir)
    calibration = calibration_windows("auto", tokenizer, num_samples=2, seq_len=64, data_dir=shared_data, model=model)
    decision = calibration.language_decision
    assert decision.language == "en" and calibration.name == "c4"
    assert set(decision.bits_per_byte) == {"en", "zh"}
    assert decision.bits_per_byte["en"] < decision.bits_per_byte["zh"]
    assert f"{decision.bits_per_byte['en']:.3f}" in decision.reason
    assert calibration.report()["language_decision"]["bits_per_byte"] == decision.bits_per_byte


def test_qwen25_follows_the_measured_argmin(qwen25_dir: Path, shared_data: Path) -> None:
    model, tokenizer = _load(qwen25_dir)
    decision = decide_language(model, tokenizer, card_languages=None, data_dir=shared_data)
    figures = decision.bits_per_byte
    assert set(figures) == {"en", "zh"} and all(0.1 < value < 10 for value in figures.values())
    assert decision.language == min(figures, key=figures.get)
    assert f"{figures['en']:.3f}" in decision.reason and f"{figures['zh']:.3f}" in decision.reason
