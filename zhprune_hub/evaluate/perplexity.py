"""Perplexity: tokenize once, cut non-overlapping windows, average the NLL of every predicted token.

The tensor work here is pure (ids in, summed NLL out); which text and which model is the
runner's business.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zhprune_hub.errors import EvaluationError

# Full logits (batch * seq_len * vocab floats) are the memory peak when the head cannot be applied in slices.
_CPU_LOGITS_BUDGET = 1 << 30
# Positions per cross-entropy call: bounds the float32 log-softmax temporary to chunk * vocab floats.
_LOSS_CHUNK = 256
_MAX_AUTO_BATCH = 64
# Tokens of the first window used to check that the output head can be applied slice by slice.
_PROBE_TOKENS = 8


@dataclass(frozen=True)
class PerplexityOutcome:
    perplexity: float
    perplexity_stderr: float | None
    nll: float
    seq_len: int
    windows: int
    tokens_evaluated: int
    tokens_predicted: int
    tokens_total: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_evaluated / self.seconds if self.seconds > 0 else float("inf")


def model_context(model: Any) -> int | None:
    """The longest sequence the model's config admits, if it says."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def tokenize(tokenizer: Any, text: str) -> Any:
    """Tokenize the whole joined text once, as a 1-D LongTensor (tokenizer's own special tokens kept)."""
    import torch

    ids = tokenizer(text, return_attention_mask=False, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def make_windows(ids: Any, *, seq_len: int, max_tokens: int | None = None, context: int | None = None) -> Any:
    """Cut `ids` into a [windows, L] tensor of non-overlapping windows; the short tail is dropped.

    L is `seq_len` capped at the model context and at the number of tokens available.

    Raises:
        EvaluationError: fewer than two tokens to evaluate, or a non-positive seq_len.
    """
    if seq_len < 2:
        raise EvaluationError(f"--seq-len {seq_len} is too short; use at least 2 (2048 is the usual value).")
    if max_tokens is not None:
        if max_tokens < 2:
            raise EvaluationError(f"--max-tokens {max_tokens} is too small; use at least 2 or leave it out.")
        ids = ids[:max_tokens]
    length = min(seq_len, context or seq_len, ids.numel())
    if length < 2:
        raise EvaluationError(f"The evaluation text has only {ids.numel()} token(s); give a longer text.")
    count = ids.numel() // length
    return ids[: count * length].view(count, length)


def auto_batch_size(*, seq_len: int, vocab_size: int, device: Any) -> int:
    """Windows per forward so that the logits (and their float32 copy) fit in memory."""
    import torch

    per_window = seq_len * vocab_size * 4 * 3
    if getattr(device, "type", str(device)) == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = free // 3
    else:
        budget = _CPU_LOGITS_BUDGET
    return max(1, min(_MAX_AUTO_BATCH, budget // per_window))


def window_nll(model: Any, windows: Any, *, batch_size: int, on_batch: Callable[[int], None] | None = None) -> Any:
    """Summed NLL of tokens 1..L-1 of every window, as a float64 tensor [windows].

    One forward per batch of windows. Where the model's logits are plainly its output head applied
    to its body's last hidden state (checked on a short probe by `split_head`), the head is applied
    `_LOSS_CHUNK` positions at a time, so no batch × L × vocab tensor exists at all; otherwise the
    full logits are taken and dropped before the next forward.
    """
    import torch

    device = next(model.parameters()).device
    sums = torch.empty(windows.shape[0], dtype=torch.float64)
    with torch.inference_mode():
        split = split_head(model, windows[:1, :_PROBE_TOKENS].to(device))
        for start in range(0, windows.shape[0], batch_size):
            batch = windows[start : start + batch_size].to(device)
            sums[start : start + batch.shape[0]] = _batch_nll(model, split, batch)
            if on_batch is not None:
                on_batch(batch.shape[0])
    return sums


def _batch_nll(model: Any, split: tuple[Any, Any] | None, batch: Any) -> Any:
    """Summed NLL per window of one batch; its logits or hidden states are freed on return."""
    if split is None:
        logits = model(input_ids=batch, use_cache=False).logits
        return _summed_nll(lambda row, begin, end: logits[row, begin:end], batch)
    body, head = split
    hidden = body(input_ids=batch, use_cache=False).last_hidden_state
    return _summed_nll(lambda row, begin, end: head(hidden[row, begin:end]), batch)


def split_head(model: Any, probe: Any) -> tuple[Any, Any] | None:
    """(body, output head) if `model`'s logits equal head(body(ids).last_hidden_state) on `probe`, else None.

    Llama, Mistral and Qwen heads are a bare linear layer; a family that scales or caps its logits
    fails the probe and keeps the full-logits path, so the shortcut never changes a result.
    """
    import torch

    get_decoder = getattr(model, "get_decoder", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not callable(get_decoder) or head is None:
        return None
    body = get_decoder()
    if body is None or body is model:
        return None
    try:
        expected = model(input_ids=probe, use_cache=False).logits
        actual = head(body(input_ids=probe, use_cache=False).last_hidden_state)
    except (AttributeError, TypeError):
        return None
    if actual.shape != expected.shape or not torch.allclose(actual.float(), expected.float(), rtol=1e-4, atol=1e-5):
        return None
    return body, head


def _summed_nll(logits_of: Callable[[int, int, int], Any], batch: Any) -> Any:
    """Per-window summed NLL of tokens 1..L-1, in float32 over `_LOSS_CHUNK` positions at a time.

    `logits_of(row, begin, end)` gives the logits of positions begin..end-1 of one window: a view
    of the model's logits, or the output head applied to that slice of hidden states. Either way
    no whole-batch log-softmax or float32 copy of the whole logits is made.
    """
    import torch
    import torch.nn.functional as F

    predicted = batch.shape[1] - 1
    sums = torch.zeros(batch.shape[0], dtype=torch.float64)
    for row in range(batch.shape[0]):
        for begin in range(0, predicted, _LOSS_CHUNK):
            end = min(begin + _LOSS_CHUNK, predicted)
            loss = F.cross_entropy(logits_of(row, begin, end).float(), batch[row, begin + 1 : end + 1], reduction="sum")
            sums[row] += loss.double().cpu()
    return sums


def perplexity(
    model: Any,
    ids: Any,
    *,
    seq_len: int = 2048,
    max_tokens: int | None = None,
    batch_size: int | str = "auto",
    on_batch: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> PerplexityOutcome:
    """Perplexity of `model` on the token ids `ids` (1-D), non-overlapping windows, tail dropped.

    Args:
        seq_len: requested window length; capped at the model's context.
        max_tokens: evaluate only this prefix of `ids`.
        batch_size: windows per forward, or "auto" to size by available memory.
        on_start / on_batch: progress callbacks (number of windows; windows just done).
    """
    windows = make_windows(ids, seq_len=seq_len, max_tokens=max_tokens, context=model_context(model))
    count, length = windows.shape
    if batch_size == "auto":
        vocab = getattr(model.config, "vocab_size", None) or model.get_output_embeddings().weight.shape[0]
        batch = auto_batch_size(seq_len=length, vocab_size=vocab, device=next(model.parameters()).device)
    else:
        batch = int(batch_size)
    if on_start is not None:
        on_start(count)
    started = time.perf_counter()
    sums = window_nll(model, windows, batch_size=batch, on_batch=on_batch)
    seconds = time.perf_counter() - started
    predicted = count * (length - 1)
    nll = float(sums.sum()) / predicted
    ppl = math.exp(nll)
    stderr = None
    if count > 1:
        per_window = sums / (length - 1)
        stderr = ppl * float(per_window.std(unbiased=True)) / math.sqrt(count)
    return PerplexityOutcome(
        perplexity=ppl,
        perplexity_stderr=stderr,
        nll=nll,
        seq_len=length,
        windows=count,
        tokens_evaluated=count * length,
        tokens_predicted=predicted,
        tokens_total=int(ids.numel()),
        seconds=seconds,
    )
