"""Which language a model speaks (zh or en), and why: its card's language list, else measured bits/byte."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhprune_hub.data.registry import Language, get_corpus
from zhprune_hub.data.sources import read_split, resolve_data_dir
from zhprune_hub.errors import DataError

#: Bytes of held-out text per language for the measurement: a few seconds on a CPU.
SAMPLE_BYTES = 2000
#: Evaluation splits the held-out samples come from (never calibration text).
SAMPLE_CORPUS: dict[Language, str] = {"en": "wikitext2", "zh": "wikitext_zh"}

_CARD_CODES: dict[str, Language] = {
    **dict.fromkeys(("zh", "zho", "chi", "cmn", "chinese", "zh-cn", "zh-hans", "zh-tw", "zh-hant", "zh-hk"), "zh"),
    **dict.fromkeys(("en", "eng", "english", "en-us", "en-gb"), "en"),
}
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class LanguageDecision:
    """The language chosen for a model, the reason in one sentence, and the measured figures if any."""

    language: Language
    reason: str
    bits_per_byte: dict[str, float] | None = None


def card_language(card_languages: list[str] | None) -> Language | None:
    """The first of zh/en that the model card's `language` list names, if any."""
    for code in card_languages or []:
        found = _CARD_CODES.get(str(code).strip().lower().replace("_", "-"))
        if found is not None:
            return found
    return None


def decide_language(
    model: Any, tokenizer: Any, *, card_languages: list[str] | None, data_dir: Path | None
) -> LanguageDecision:
    """Decide zh or en for a model: the card's language list when it names one, else the lower bits/byte.

    Bits per UTF-8 byte (total negative log-likelihood in bits over the sample's byte count) does
    not depend on how a tokenizer splits text, so it compares fairly across tokenizers.

    Raises:
        DataError: the card does not decide, and the model or the held-out samples are unavailable.
    """
    from_card = card_language(card_languages)
    if from_card is not None:
        return LanguageDecision(
            language=from_card,
            reason=f"the model card's language list {list(card_languages or [])} names {from_card!r} first",
        )
    if model is None:
        raise DataError(
            f"Calibration corpus 'auto' needs the model to measure its language because the card languages "
            f"{card_languages!r} name neither zh nor en; pass the model, or choose --language zh/en."
        )
    data_dir = resolve_data_dir(data_dir)
    figures: dict[str, float] = {}
    sources: dict[str, str] = {}
    for language, name in SAMPLE_CORPUS.items():
        split = read_split(get_corpus(name), "evaluation", data_dir)
        figures[language] = round(bits_per_byte(model, tokenizer, head_bytes(split.joined(), SAMPLE_BYTES)), 4)
        sources[language] = split.source
    chosen: Language = "zh" if figures["zh"] < figures["en"] else "en"
    reason = (
        f"the model card names neither zh nor en, so the model was measured on {SAMPLE_BYTES} held-out bytes "
        f"of each: {figures['en']:.3f} bits/byte on en ({sources['en']}), {figures['zh']:.3f} on zh "
        f"({sources['zh']}); {chosen} is lower"
    )
    return LanguageDecision(language=chosen, reason=reason, bits_per_byte=figures)


def head_bytes(text: str, size: int) -> str:
    """The longest prefix of `text` whose UTF-8 encoding fits in `size` bytes (never a split character)."""
    return text.encode("utf-8")[:size].decode("utf-8", errors="ignore")


def bits_per_byte(model: Any, tokenizer: Any, text: str, *, window: int = 1024) -> float:
    """Negative log-likelihood of `text` under `model`, in bits per UTF-8 byte.

    Every token of the text is predicted once: the sequence starts with the tokenizer's EOS (a
    document boundary) and is scored in non-overlapping windows.
    """
    import torch
    import torch.nn.functional as F

    start_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    ids = [start_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
    device = next(model.parameters()).device
    total = 0.0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for begin in range(0, len(ids) - 1, window):
                chunk = torch.tensor([ids[begin : begin + window + 1]], device=device)
                logits = model(input_ids=chunk).logits.float()
                total += F.cross_entropy(logits[0, :-1], chunk[0, 1:], reduction="sum").item()
    finally:
        model.train(was_training)
    return total / math.log(2) / len(text.encode("utf-8"))


def detect_text_language(texts: list[str]) -> tuple[Language, str]:
    """zh when CJK characters make up at least a fifth of the non-space characters of a sample, else en."""
    sample = "".join(texts)[:50_000]
    letters = sum(1 for char in sample if not char.isspace())
    cjk = len(_CJK.findall(sample))
    share = cjk / letters if letters else 0.0
    language: Language = "zh" if share >= 0.2 else "en"
    return language, f"detected from the text ({share:.0%} CJK characters)"
