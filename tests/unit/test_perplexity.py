"""The perplexity kernel against transformers' own shifted loss, across chunk and batch boundaries."""

from __future__ import annotations

import math

import pytest
import torch

from tests.tiny_models import tiny_config
from zhprune_hub.evaluate import perplexity as perplexity_module
from zhprune_hub.evaluate.perplexity import make_windows, perplexity, window_nll


@pytest.fixture(scope="module")
def tiny_model():
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_config("qwen2")).eval()


def labels_loss(model, window: torch.Tensor) -> float:
    """Mean NLL of tokens 1..L-1 as transformers computes it (labels = inputs, shifted inside)."""
    with torch.no_grad():
        return model(input_ids=window[None], labels=window[None]).loss.item()


def test_window_sums_match_labels_loss_across_chunks(tiny_model, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(perplexity_module, "_LOSS_CHUNK", 7)  # 39 predicted positions: 5 full chunks + a tail
    windows = torch.randint(0, 320, (5, 40), generator=torch.Generator().manual_seed(1))
    sums = window_nll(tiny_model, windows, batch_size=2)  # batches of 2, 2, 1
    for window, total in zip(windows, sums, strict=True):
        assert float(total) / 39 == pytest.approx(labels_loss(tiny_model, window), rel=1e-5)
    assert torch.allclose(sums, window_nll(tiny_model, windows, batch_size=5), rtol=1e-6)


def test_perplexity_drops_the_tail_and_counts_tokens(tiny_model) -> None:
    ids = torch.randint(0, 320, (130,), generator=torch.Generator().manual_seed(2))
    out = perplexity(tiny_model, ids, seq_len=32, batch_size=3)
    assert (out.windows, out.seq_len, out.tokens_evaluated, out.tokens_predicted) == (4, 32, 128, 124)
    expected = math.exp(sum(labels_loss(tiny_model, w) for w in make_windows(ids, seq_len=32)) / 4)
    assert out.perplexity == pytest.approx(expected, rel=1e-5)
    assert out.perplexity_stderr is not None and out.perplexity_stderr > 0
