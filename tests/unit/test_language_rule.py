"""The one language rule: normalised bits per byte, the margin, and what calibration/evaluation do with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny_models import make_tiny_checkpoint
from zhprune_hub.data import calibration_windows, default_eval_names, evaluation_text
from zhprune_hub.data.language import (
    MARGIN,
    PROBE_BYTES,
    LanguageFigure,
    calibration_parts,
    competent,
    compressor_bits_per_byte,
    decide_languages,
    head_bytes,
    spec_language,
)
from zhprune_hub.errors import DataError
from zhprune_hub.evaluate import zeroshot
from zhprune_hub.evaluate.runner import resolve_defaults


def _figure(normalised: float) -> LanguageFigure:
    return LanguageFigure("c", "s", 8000, 2000, normalised * 3.0, 3.0, normalised)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = make_tiny_checkpoint("qwen2", tmp_path_factory.mktemp("tiny") / "qwen2")
    return AutoModelForCausalLM.from_pretrained(directory).eval(), AutoTokenizer.from_pretrained(directory)


def test_margin_separates_the_measured_real_models() -> None:
    # The figures measured on the real checkpoints (8,000 bytes, bz2; see the module docstring).
    assert competent({"zh": _figure(0.419), "en": _figure(0.427)}) == ["zh", "en"]  # Qwen2.5-0.5B
    assert competent({"zh": _figure(0.627), "en": _figure(0.399)}) == ["en"]  # SmolLM2-135M
    assert competent({"zh": _figure(0.5 * (1 + MARGIN)), "en": _figure(0.5)}) == ["en", "zh"]
    assert competent({"zh": _figure(0.5 * (1 + MARGIN) + 1e-3), "en": _figure(0.5)}) == ["en"]


def test_raw_bytes_of_chinese_carry_more_bits(shared_data: Path) -> None:
    """Why raw bits/byte is not comparable: the same compressor needs more bits per zh byte."""
    en = head_bytes(evaluation_text("wikitext2", data_dir=shared_data).text, PROBE_BYTES).encode()
    zh = head_bytes(evaluation_text("wikitext_zh", data_dir=shared_data).text, PROBE_BYTES).encode()
    assert compressor_bits_per_byte(zh) > compressor_bits_per_byte(en) + 0.8


def test_decision_measures_both_languages_and_records_the_card(tiny, shared_data: Path) -> None:
    model, tokenizer = tiny
    plain = decide_languages(model, tokenizer, data_dir=shared_data, probe_bytes=1500)
    hinted = decide_languages(model, tokenizer, data_dir=shared_data, probe_bytes=1500, card_languages=["fr", "zh"])
    assert plain.how == "measured" and set(plain.figures) == {"zh", "en"}
    assert hinted.languages == plain.languages  # the card does not decide
    assert hinted.card_hint == ["zh"] and hinted.card_languages == ["fr", "zh"] and "hint" in hinted.reason
    for language, figure in plain.figures.items():
        assert 1490 < figure.bytes <= 1500 and figure.tokens > 0
        assert figure.normalised == pytest.approx(figure.model_bits_per_byte / figure.compressor_bits_per_byte, 1e-3)
        assert f"{language} {figure.normalised:.3f}" in plain.reason
    assert plain.languages == competent(plain.figures)
    assert plain.figures["en"].source.endswith("wiki.test.raw")  # evaluation text, never calibration
    assert plain.figures["zh"].source.endswith("cmrc2018_trial.json")


def test_auto_calibrates_on_every_competent_language(tiny, shared_data: Path) -> None:
    model, tokenizer = tiny
    calibration = calibration_windows("auto", tokenizer, num_samples=4, seq_len=32, data_dir=shared_data, model=model)
    decision = calibration.language_decision
    assert calibration.name == calibration_parts(decision.languages)
    assert calibration.language == decision.language
    report = calibration.report()["language_decision"]
    assert report["languages"] == decision.languages and set(report["figures"]) == {"zh", "en"}
    assert calibration_parts(["zh", "en"]) == "wikitext_zh:0.5,c4:0.5"
    mixed = calibration_windows(
        "auto", tokenizer, num_samples=4, seq_len=32, data_dir=shared_data, decision=_given(["zh", "en"])
    )
    assert mixed.weights == {"wikitext_zh": 0.5, "c4": 0.5} and mixed.language == "zh+en"
    explicit = calibration_windows("auto", tokenizer, num_samples=2, seq_len=32, data_dir=shared_data, language="en")
    assert explicit.name == "c4" and explicit.language_decision.how == "given"
    with pytest.raises(DataError, match="needs the model"):
        calibration_windows("auto", tokenizer, num_samples=2, seq_len=32, data_dir=shared_data)


def _given(languages):
    from zhprune_hub.data.language import given

    return given(languages, "test")


def test_spec_language_before_pruning(tmp_path: Path) -> None:
    assert spec_language("wikitext_zh:0.5,c4:0.5", None) == "zh+en"
    assert spec_language("c4", None) == "en" and spec_language("auto", None) == "auto"
    assert spec_language("auto", "zh") == "zh"
    path = tmp_path / "mine.txt"
    path.write_text("text\n")
    assert spec_language(str(path), None) == "auto"


def test_defaults_follow_the_languages(tiny, shared_data: Path) -> None:
    model, tokenizer = tiny
    assert default_eval_names(["en"]) == ["wikitext2", "ptb"]
    assert default_eval_names("zh+en") == ["wikitext2", "ptb", "c4_zh"]
    names, tasks, record = resolve_defaults(
        model, tokenizer, ppl=None, tasks=["auto"], data_dir=shared_data, languages=["zh", "en"]
    )
    assert names == ["wikitext2", "ptb", "c4_zh"]
    assert tasks == ["xcopa_zh", "cmmlu", *zeroshot.STANDARD_TASKS] and record["how"] == "given"
    names, tasks, record = resolve_defaults(model, tokenizer, ppl=["ptb"], tasks=["piqa"], data_dir=shared_data)
    assert (names, tasks, record) == (["ptb"], ["piqa"], None)  # nothing measured
    assert zeroshot.auto_tasks(["en"]) == list(zeroshot.STANDARD_TASKS)
    with pytest.raises(Exception, match="mixes 'auto'"):
        zeroshot.validate_tasks(["auto", "piqa"])
