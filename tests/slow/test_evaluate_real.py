"""Evaluation on the real SmolLM2 checkpoint: perplexity against a direct computation, zero-shot, the paths hook."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from zhprune_hub.evaluate import evaluate_model, evaluate_models

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2(smollm2_dir: Path):
    from zhprune_hub.loading import load_model, resolve_source

    return load_model(resolve_source(str(smollm2_dir)), device="cpu", dtype="float32")


def test_wikitext2_perplexity_equals_direct_forward(smollm2, shared_data: Path) -> None:
    from zhprune_hub.data import evaluation_text

    model, tokenizer = smollm2
    result = evaluate_model(
        model,
        tokenizer,
        model_id="smollm2",
        ppl=["wikitext2"],
        tasks=[],
        limit=None,
        seq_len=2048,
        max_tokens=4096,
        batch_size="auto",
        data_dir=shared_data,
        device="cpu",
    )
    (got,) = result.perplexity
    assert (got.seq_len, got.windows, got.tokens_evaluated, got.tokens_predicted) == (2048, 2, 4096, 4094)
    assert got.source.endswith("wiki.test.raw") and got.language == "en"

    # Independent: tokenize the text ourselves, plain forward with labels on each window.
    ids = tokenizer(evaluation_text("wikitext2", data_dir=shared_data).text, return_tensors="pt").input_ids[0, :4096]
    with torch.no_grad():
        losses = [model(input_ids=w[None], labels=w[None]).loss.item() for w in ids.view(2, 2048)]
    expected = math.exp(sum(losses) / len(losses))
    assert got.perplexity == pytest.approx(expected, rel=1e-4)
    assert 5 < got.perplexity < 60  # a trained model, not noise


def test_piqa_and_arc_easy_with_limit(smollm2, shared_data: Path) -> None:
    model, tokenizer = smollm2
    result = evaluate_model(
        model,
        tokenizer,
        model_id="smollm2",
        ppl=[],
        tasks=["piqa", "arc_easy"],
        limit=50,
        seq_len=2048,
        max_tokens=None,
        batch_size="auto",
        data_dir=shared_data,
        device="cpu",
    )
    assert [z.task for z in result.zeroshot] == ["piqa", "arc_easy"]
    for z in result.zeroshot:
        assert z.samples == 50 and z.source == "local"
        assert 0.0 <= z.acc <= 1.0 and 0.0 <= (z.acc_norm or 0.0) <= 1.0
        assert z.acc_stderr is not None and z.acc_stderr > 0 and z.acc_norm_stderr is not None
    assert result.zeroshot[0].acc > 0.55  # SmolLM2 is well above chance (0.5) on PIQA
    assert result.zeroshot_mean is not None
    assert result.zeroshot_mean.acc == pytest.approx(sum(z.acc for z in result.zeroshot) / 2)


def test_evaluate_models_by_path(smollm2_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    alias = tmp_path / "smollm2-again"
    alias.symlink_to(smollm2_dir, target_is_directory=True)
    results = evaluate_models(
        [str(smollm2_dir), str(alias)],
        ppl=["wikitext2"],
        tasks=[],
        max_tokens=1024,
        seq_len=512,
        data_dir=shared_data,
        device="cpu",
        dtype="float32",
    )
    assert results.reference == str(smollm2_dir) and len(results.models) == 2
    assert results.models[0].timings.load_s is not None
    (delta,) = results.deltas
    assert delta.metric == "ppl/wikitext2" and delta.change == "same" and abs(delta.relative or 0.0) < 1e-6
