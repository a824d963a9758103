"""The PyTorch side of an export check: reference logits and perplexity, and the comparison.

The exported model is measured by the worker in the export environment (same probe ids, same
windows); this module computes the same quantities with the PyTorch checkpoint, using the
project's own perplexity windows and NLL code, and decides whether the export may be kept.
"""

from __future__ import annotations

import gc
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zhprune_hub.errors import ExportError

#: A fixed text that no calibration or evaluation corpus contains: the logit check never depends on data files.
PROBE_TEXT = (
    "The lighthouse keeper wrote in his log that the storm had passed before dawn. Three fishing boats "
    "returned to the harbour, their nets heavy with mackerel, and the baker on the quay opened an hour "
    "early. By noon the children were back on the beach, counting the shells the waves had left behind."
)


@dataclass(frozen=True)
class Reference:
    """What the PyTorch checkpoint computes on the probe and the perplexity windows."""

    probe_ids: list[int]
    probe_logits: Any  # float32 tensor [tokens, vocab]
    windows: list[list[int]]
    window_nll: list[float]
    ppl_source: str


@dataclass(frozen=True)
class Agreement:
    """How closely the exported model follows the PyTorch one."""

    probe_tokens: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    windows: int
    seq_len: int
    tokens_predicted: int
    ppl_pytorch: float
    ppl_exported: float

    @property
    def ppl_increase(self) -> float:
        return self.ppl_exported / self.ppl_pytorch - 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ppl_increase": self.ppl_increase}


def reference(directory: Path, *, corpus: str, max_tokens: int, seq_len: int, data_dir: Path | None) -> Reference:
    """Load the PyTorch checkpoint (float32, CPU) and compute the probe logits and window NLLs.

    Raises:
        ModelSourceError, DataError, EvaluationError: the checkpoint or the text cannot be used.
    """
    import torch

    from zhprune_hub.data import evaluation_text
    from zhprune_hub.evaluate.perplexity import make_windows, model_context, tokenize, window_nll
    from zhprune_hub.loading import load_model, resolve_source

    text = evaluation_text(corpus, data_dir=data_dir)
    model, tokenizer = load_model(resolve_source(str(directory)), device="cpu", dtype="float32")
    probe = tokenize(tokenizer, PROBE_TEXT)
    windows = make_windows(
        tokenize(tokenizer, text.text), seq_len=seq_len, max_tokens=max_tokens, context=model_context(model)
    )
    with torch.inference_mode():
        logits = model(input_ids=probe[None], use_cache=False).logits[0].float()
    sums = window_nll(model, windows, batch_size=1)
    del model
    gc.collect()
    return Reference(
        probe_ids=probe.tolist(),
        probe_logits=logits,
        windows=windows.tolist(),
        window_nll=[float(value) for value in sums],
        ppl_source=text.source,
    )


def compare(ref: Reference, *, exported_logits: Path, exported_nll: list[float]) -> Agreement:
    """Logit distance and top-1 agreement on the probe; perplexity of both on the same windows."""
    import numpy as np
    import torch

    theirs = torch.from_numpy(np.load(exported_logits))
    ours = ref.probe_logits
    if theirs.shape != ours.shape:
        raise ExportError(
            f"The exported model returned logits of shape {tuple(theirs.shape)} for a probe whose PyTorch logits "
            f"have shape {tuple(ours.shape)}; the export is broken, so report this as a bug."
        )
    diff = (theirs - ours).abs()
    seq_len = len(ref.windows[0])
    predicted = len(ref.windows) * (seq_len - 1)
    return Agreement(
        probe_tokens=int(ours.shape[0]),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        top1_agreement=float((theirs.argmax(-1) == ours.argmax(-1)).float().mean()),
        windows=len(ref.windows),
        seq_len=seq_len,
        tokens_predicted=predicted,
        ppl_pytorch=math.exp(sum(ref.window_nll) / predicted),
        ppl_exported=math.exp(sum(exported_nll) / predicted),
    )
