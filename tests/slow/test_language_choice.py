"""The language rule on the real checkpoints: SmolLM2 is English only, Qwen2.5 is Chinese and English."""

from __future__ import annotations

from pathlib import Path

import pytest

from zhprune_hub.data import calibration_windows, decide_languages

pytestmark = pytest.mark.slow


def _load(path: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(path)


def test_smollm2_is_english_only(smollm2_dir: Path, shared_data: Path) -> None:
    model, tokenizer = _load(smollm2_dir)
    calibration = calibration_windows("auto", tokenizer, num_samples=2, seq_len=64, data_dir=shared_data, model=model)
    decision = calibration.language_decision
    assert decision.languages == ["en"] and calibration.name == "c4"
    figures = decision.figures
    assert figures["zh"].normalised > 1.25 * figures["en"].normalised
    assert f"en {figures['en'].normalised:.3f}" in decision.reason


def test_qwen25_is_chinese_and_english(qwen25_dir: Path, shared_data: Path) -> None:
    model, tokenizer = _load(qwen25_dir)
    decision = decide_languages(model, tokenizer, data_dir=shared_data, card_languages=["en"])
    assert sorted(decision.languages) == ["en", "zh"]
    assert all(0.3 < figure.normalised < 0.55 for figure in decision.figures.values())
    assert "does not decide" in decision.reason  # its card lists only en
