"""Cutting calibration windows: seeded, reproducible, never padded, and hashed so runs can be compared."""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from zhprune_hub.data.language import LanguageDecision
from zhprune_hub.errors import DataError

if TYPE_CHECKING:
    import torch

# Documents are tokenized a batch at a time, only until enough tokens are collected.
_TOKENIZE_BATCH = 64


@dataclass(frozen=True)
class CalibrationSet:
    """Calibration token windows plus everything a report needs to show two runs used the same text."""

    input_ids: torch.Tensor = field(repr=False)
    name: str
    sources: list[str]
    language: str
    num_samples: int
    seq_len: int
    seed: int
    token_hash: str
    language_decision: LanguageDecision | None = None
    #: What the user typed (e.g. `auto`); `name` is what it resolved to.
    spec: str = ""
    #: Share of the windows per component, for a mix; None for a single corpus.
    weights: dict[str, float] | None = None

    def report(self) -> dict[str, Any]:
        """JSON-serializable metadata, without the tensor."""
        return {
            "spec": self.spec,
            "name": self.name,
            "sources": list(self.sources),
            "language": self.language,
            "num_samples": self.num_samples,
            "seq_len": self.seq_len,
            "seed": self.seed,
            "token_hash": self.token_hash,
            "weights": dict(self.weights) if self.weights is not None else None,
            "language_decision": asdict(self.language_decision) if self.language_decision is not None else None,
        }


def token_hash(input_ids: torch.Tensor) -> str:
    """sha256 (hex) of the shape and the token ids as little-endian int64."""

    rows, cols = input_ids.shape
    digest = hashlib.sha256(f"{rows}x{cols}\n".encode())
    digest.update(input_ids.detach().cpu().numpy().astype("<i8").tobytes())
    return digest.hexdigest()


def check_shape(num_samples: int, seq_len: int) -> None:
    """Raises DataError unless both are positive integers."""
    for label, value in (("num_samples", num_samples), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"{label} must be a positive integer, got {value!r}.")


def cut_windows(
    documents: list[str], tokenizer: Any, *, num_samples: int, seq_len: int, seed: int, label: str
) -> torch.Tensor:
    """`num_samples` windows of `seq_len` tokens from the documents in a seeded shuffled order.

    The shuffled documents form one token stream with the tokenizer's EOS between consecutive
    documents; consecutive non-overlapping windows are cut from its start. Nothing is padded.

    Raises:
        DataError: the text holds fewer windows than requested (the message says how many fit).
    """
    import torch

    check_shape(num_samples, seq_len)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError(
            f"The tokenizer {type(tokenizer).__name__!r} has no EOS token to separate documents; set eos_token."
        )
    order = list(range(len(documents)))
    random.Random(seed).shuffle(order)
    needed = num_samples * seq_len
    stream: list[int] = []
    for begin in range(0, len(order), _TOKENIZE_BATCH):
        batch = [documents[index] for index in order[begin : begin + _TOKENIZE_BATCH]]
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            if not ids:
                continue
            if stream:
                stream.append(eos)
            stream.extend(ids)
        if len(stream) >= needed:
            break
    if len(stream) < needed:
        possible = len(stream) // seq_len
        raise DataError(
            f"Corpus {label} has {len(stream)} tokens, enough for only {possible} windows of {seq_len} tokens "
            f"but {num_samples} were requested; lower --num-samples or --seq-len, or give more text."
        )
    return torch.tensor(stream[:needed], dtype=torch.long).view(num_samples, seq_len)


def split_counts(weights: list[float], total: int) -> list[int]:
    """Integer window counts proportional to `weights` that sum to `total` (largest remainder)."""
    raw = [weight * total for weight in weights]
    counts = [int(value) for value in raw]
    by_remainder = sorted(range(len(raw)), key=lambda index: (counts[index] - raw[index], index))
    for index in by_remainder[: total - sum(counts)]:
        counts[index] += 1
    return counts
