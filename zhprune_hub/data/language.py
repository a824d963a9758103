"""The one language rule: which languages a model is competent in, measured on held-out text.

Calibration (`auto`), the evaluation defaults (perplexity corpora, `--tasks auto`) and the card all
ask this module, so they cannot disagree. The rule:

1. Score the model on the first `PROBE_BYTES` bytes of each candidate language's *evaluation*
   split (never calibration text): bits per UTF-8 byte, which does not depend on the tokenizer.
2. Divide by what bz2 achieves on the same bytes. Raw bits per byte are not comparable across
   languages (a byte of UTF-8 Chinese carries more information than a byte of English); the
   compressor's figure removes the language's own redundancy and encoding.
3. The model is competent in every language whose normalised figure is within `MARGIN` of its
   best one (relative). The best language is always competent.

Measured on the two real models (8,000 bytes, bz2): Qwen2.5-0.5B 0.427 en / 0.419 zh (ratio
1.02: both), SmolLM2-135M 0.399 en / 0.627 zh (ratio 1.57: en only). bz2 was the most stable
reference across probe sizes (Qwen2.5 stays within 0.419-0.435 in both languages from 4 KB to
16 KB, lzma 0.399-0.440, zlib 0.386-0.458) and separates the two models widest; see README.
A model card's `language` list is recorded as a hint, never used to decide.
"""

from __future__ import annotations

import bz2
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from zhprune_hub.data.registry import AUTO_CHOICE, Language, get_corpus, parse_spec
from zhprune_hub.data.sources import read_split, resolve_data_dir
from zhprune_hub.errors import DataError

#: Candidate languages, in the order a bilingual decision lists them when tied.
LANGUAGES: tuple[Language, ...] = ("zh", "en")
#: Held-out bytes per language: a few thousand tokens, seconds on a CPU.
PROBE_BYTES = 8000
#: Evaluation splits the probes come from (never calibration text).
PROBE_CORPUS: dict[Language, str] = {"en": "wikitext2", "zh": "wikitext_zh"}
#: A language is competent when its normalised figure is at most (1 + MARGIN) x the best one.
MARGIN = 0.25
COMPRESSOR = "bz2"
#: Tokens per scored window: small enough that one window's logits stay well under a gigabyte.
PROBE_WINDOW = 512

_CARD_CODES: dict[str, Language] = {
    **dict.fromkeys(("zh", "zho", "chi", "cmn", "chinese", "zh-cn", "zh-hans", "zh-tw", "zh-hant", "zh-hk"), "zh"),
    **dict.fromkeys(("en", "eng", "english", "en-us", "en-gb"), "en"),
}
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class LanguageFigure:
    """One language's probe: where it came from and the model's and compressor's bits per byte."""

    corpus: str
    source: str
    bytes: int
    tokens: int
    model_bits_per_byte: float
    compressor_bits_per_byte: float
    normalised: float


@dataclass(frozen=True)
class LanguageDecision:
    """The languages a model is served in (best first), how that was decided, and the figures."""

    languages: list[str]
    how: Literal["measured", "given"]
    reason: str
    figures: dict[str, LanguageFigure] | None = None
    margin: float | None = None
    compressor: str | None = None
    #: The base card's `language` list, recorded; it does not decide.
    card_languages: list[str] | None = None
    card_hint: list[str] = field(default_factory=list)

    @property
    def language(self) -> str:
        """`zh`, `en` or `zh+en`."""
        return "+".join(self.languages)


def card_hint(card_languages: list[str] | None) -> list[str]:
    """zh/en as the model card's `language` list names them (a recorded hint)."""
    found: list[str] = []
    for code in card_languages or []:
        language = _CARD_CODES.get(str(code).strip().lower().replace("_", "-"))
        if language is not None and language not in found:
            found.append(language)
    return found


def given(languages: list[str], reason: str, *, card_languages: list[str] | None = None) -> LanguageDecision:
    """A decision the user made (e.g. `--language zh`); nothing is measured."""
    return LanguageDecision(
        languages=list(languages),
        how="given",
        reason=reason,
        card_languages=card_languages,
        card_hint=card_hint(card_languages),
    )


def compressor_bits_per_byte(data: bytes) -> float:
    """bz2 (level 9) output bits per input byte."""
    return len(bz2.compress(data, 9)) * 8 / len(data)


def head_bytes(text: str, size: int) -> str:
    """The longest prefix of `text` whose UTF-8 encoding fits in `size` bytes (never a split character)."""
    return text.encode("utf-8")[:size].decode("utf-8", errors="ignore")


def bits_per_byte(model: Any, tokenizer: Any, text: str, *, window: int = PROBE_WINDOW) -> tuple[float, int]:
    """Negative log-likelihood of `text` under `model` in bits per UTF-8 byte, and the token count.

    Every token is predicted once: the sequence starts with the tokenizer's EOS (a document
    boundary) and is scored in non-overlapping windows, one `model(input_ids=...)` call each, so a
    streamed scorer (zhprune_hub.prune.engine.StreamedScorer) holds one block and one window's
    logits at a time.
    """
    import torch
    import torch.nn.functional as F

    start_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = [start_id, *tokens]
    device = next(model.parameters()).device
    total = 0.0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for begin in range(0, len(ids) - 1, window):
                chunk = torch.tensor([ids[begin : begin + window + 1]], device=device)
                logits = model(input_ids=chunk).logits.float()
                total += F.cross_entropy(logits[0, :-1].to(chunk.device), chunk[0, 1:], reduction="sum").item()
    finally:
        model.train(was_training)
    return total / math.log(2) / len(text.encode("utf-8")), len(tokens)


def measure(
    model: Any, tokenizer: Any, *, data_dir: Path | None = None, probe_bytes: int = PROBE_BYTES
) -> dict[str, LanguageFigure]:
    """Probe figures of every candidate language.

    Raises:
        DataError: an evaluation split is unavailable here and on the Hub.
    """
    data_dir = resolve_data_dir(data_dir)
    figures: dict[str, LanguageFigure] = {}
    for language in LANGUAGES:
        name = PROBE_CORPUS[language]
        split = read_split(get_corpus(name), "evaluation", data_dir)
        text = head_bytes(split.joined(), probe_bytes)
        model_bpb, tokens = bits_per_byte(model, tokenizer, text)
        reference = compressor_bits_per_byte(text.encode("utf-8"))
        figures[language] = LanguageFigure(
            corpus=name,
            source=split.source,
            bytes=len(text.encode("utf-8")),
            tokens=tokens,
            model_bits_per_byte=round(model_bpb, 4),
            compressor_bits_per_byte=round(reference, 4),
            normalised=round(model_bpb / reference, 4),
        )
    return figures


def competent(figures: dict[str, LanguageFigure], margin: float = MARGIN) -> list[str]:
    """Languages within `margin` (relative) of the best normalised figure, best first."""
    best = min(figure.normalised for figure in figures.values())
    ranked = sorted(figures, key=lambda language: (figures[language].normalised, LANGUAGES.index(language)))
    return [language for language in ranked if figures[language].normalised <= best * (1 + margin)]


def decide_languages(
    model: Any,
    tokenizer: Any,
    *,
    data_dir: Path | None = None,
    card_languages: list[str] | None = None,
    probe_bytes: int = PROBE_BYTES,
    margin: float = MARGIN,
) -> LanguageDecision:
    """Measure the model and apply the rule; the card's language list is only recorded.

    Raises:
        DataError: no model to measure, or a probe text is unavailable.
    """
    if model is None:
        raise DataError(
            "Deciding the model's languages needs the model to measure it on held-out text; pass the model, "
            "or choose the language yourself with --language zh/en."
        )
    figures = measure(model, tokenizer, data_dir=data_dir, probe_bytes=probe_bytes)
    languages = competent(figures, margin)
    hint = card_hint(card_languages)
    shown = "; ".join(
        f"{lang} {f.normalised:.3f} ({f.model_bits_per_byte:.3f} bits/byte vs {COMPRESSOR} "
        f"{f.compressor_bits_per_byte:.3f} on {f.bytes:,} bytes of {f.corpus})"
        for lang, f in figures.items()
    )
    reason = (
        f"measured on held-out evaluation text, the model's bits per byte as a fraction of {COMPRESSOR}'s is {shown}; "
        f"competent languages are those within {margin:.0%} of the best: {' and '.join(languages)}"
    )
    if card_languages:
        agree = "agrees" if sorted(hint) == sorted(languages) else "does not decide"
        reason += f" (the card's language list {list(card_languages)} is recorded as a hint and {agree})"
    return LanguageDecision(
        languages=languages,
        how="measured",
        reason=reason,
        figures=figures,
        margin=margin,
        compressor=COMPRESSOR,
        card_languages=list(card_languages) if card_languages else None,
        card_hint=hint,
    )


def calibration_parts(languages: list[str]) -> str:
    """The calibration spec for these languages: one corpus, or an equal-weight mix."""
    choices = [AUTO_CHOICE[language] for language in languages]  # type: ignore[index]
    if len(choices) == 1:
        return choices[0]
    weight = 1 / len(choices)
    return ",".join(f"{name}:{weight:g}" for name in choices)


def spec_language(spec: str, declared: str | None) -> str:
    """zh/en/zh+en when known before pruning (declared, or registered corpora), else `auto`."""
    if declared:
        return declared
    try:
        parts = parse_spec(spec)
    except DataError:
        return "auto"
    if parts is None or any(part.corpus is None for part in parts):
        return "auto"
    found: list[str] = []
    for part in parts:
        assert part.corpus is not None
        if part.corpus.language not in found:
            found.append(part.corpus.language)
    return "+".join(found)


def text_language(texts: list[str]) -> tuple[Language, str]:
    """The language of a user's text file (not of a model): zh when CJK is a fifth of its characters."""
    sample = "".join(texts)[:50_000]
    letters = sum(1 for char in sample if not char.isspace())
    cjk = len(_CJK.findall(sample))
    share = cjk / letters if letters else 0.0
    language: Language = "zh" if share >= 0.2 else "en"
    return language, f"detected from the text ({share:.0%} CJK characters)"
