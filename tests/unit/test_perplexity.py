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


def test_head_is_applied_in_slices_with_the_same_result(tiny_model, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(perplexity_module, "_LOSS_CHUNK", 7)
    windows = torch.randint(0, 320, (3, 40), generator=torch.Generator().manual_seed(3))
    seen: list[int] = []
    hook = tiny_model.get_output_embeddings().register_forward_hook(lambda _m, args, _o: seen.append(args[0].shape[-2]))
    try:
        sliced = window_nll(tiny_model, windows, batch_size=3)
    finally:
        hook.remove()
    assert seen and max(seen) <= 8, "the head saw more positions than one slice (or the probe): full logits were built"
    monkeypatch.setattr(perplexity_module, "split_head", lambda _model, _probe: None)
    assert torch.allclose(sliced, window_nll(tiny_model, windows, batch_size=3), rtol=1e-6)


class ScaledLogits(torch.nn.Module):
    """A model whose logits are not just head(hidden): the shortcut must notice and not be taken."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids: torch.Tensor, use_cache: bool = False):
        out = self.inner(input_ids=input_ids, use_cache=use_cache)
        out.logits = out.logits * 2.0
        return out

    def get_decoder(self):
        return self.inner.get_decoder()

    def get_output_embeddings(self):
        return self.inner.get_output_embeddings()


def test_models_that_rescale_logits_keep_the_full_path(tiny_model) -> None:
    scaled = ScaledLogits(tiny_model)
    windows = torch.randint(0, 320, (2, 20), generator=torch.Generator().manual_seed(4))
    assert perplexity_module.split_head(scaled, windows[:1, :8]) is None
    with torch.no_grad():
        logits = scaled(input_ids=windows).logits
    expected = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1), reduction="none"
    )
    assert torch.allclose(window_nll(scaled, windows, batch_size=2), expected.view(2, 19).sum(1).double(), rtol=1e-5)


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3"])
def test_every_supported_family_takes_the_sliced_head(family: str) -> None:
    """The memory saving is only real if the probe accepts the families we prune."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(family)).eval()
    with torch.inference_mode():
        assert perplexity_module.split_head(model, torch.randint(0, 320, (1, 8))) is not None
