"""What the rest of zhprune-hub calls: calibration windows, evaluation text, and the registry listing."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhprune_hub.data.language import LanguageDecision, calibration_parts, decide_languages, given, text_language
from zhprune_hub.data.registry import (
    AUTO,
    AUTO_CHOICE,
    CORPORA,
    Corpus,
    Language,
    SpecPart,
    SplitSpec,
    parse_spec,
)
from zhprune_hub.data.sampling import CalibrationSet, check_shape, cut_windows, split_counts, token_hash
from zhprune_hub.data.sources import (
    Documents,
    hub_offline,
    local_path,
    read_split,
    read_user_file,
    resolve_data_dir,
)
from zhprune_hub.errors import DataError

_DEFAULT_EVAL: dict[Language, list[str]] = {"en": ["wikitext2", "ptb"], "zh": ["wikitext2", "ptb", "c4_zh"]}


@dataclass(frozen=True)
class EvalText:
    """The whole evaluation split of a corpus, joined into one text for perplexity."""

    name: str
    text: str
    source: str
    language: str


def _check_language(language: str | None) -> Language | None:
    if language is None:
        return None
    if language not in ("zh", "en"):
        raise DataError(f"Language {language!r} is not supported; use 'zh' or 'en'.")
    return language  # type: ignore[return-value]


def calibration_windows(
    spec: str,
    tokenizer: Any,
    *,
    num_samples: int,
    seq_len: int,
    seed: int = 0,
    data_dir: Path | None = None,
    language: str | None = None,
    model: Any = None,
    model_card_languages: list[str] | None = None,
    decision: LanguageDecision | None = None,
) -> CalibrationSet:
    """Seeded calibration windows for `spec`: a name, alias, file path, mix (`a:0.7,b:0.3`) or `auto`.

    Args:
        language: for `auto`, forces the language; for a file, declares its language (else it is
            detected); for a single registered name it must agree with the corpus.
        model, model_card_languages: used by `auto` to measure the model's languages (the card's
            list is recorded as a hint); a bilingual model calibrates on an equal-weight mix.
        decision: for `auto`, a language decision already made (e.g. by `evaluate`), reused as is.

    Raises:
        DataError: unknown name, missing or malformed file, text unavailable here and on the Hub,
            or too little text for `num_samples` x `seq_len`.
    """
    check_shape(num_samples, seq_len)
    declared = _check_language(language)
    data_dir = resolve_data_dir(data_dir)
    parts = parse_spec(spec)
    if parts is None:
        if decision is None and declared is not None:
            decision = given(
                [declared], f"language {declared!r} was given explicitly", card_languages=model_card_languages
            )
        elif decision is None:
            decision = decide_languages(model, tokenizer, card_languages=model_card_languages, data_dir=data_dir)
        parts = parse_spec(calibration_parts(decision.languages))
        assert parts is not None
    else:
        decision = None
        if declared is not None and len(parts) == 1 and parts[0].corpus is not None:
            _check_agrees(parts[0].corpus, declared)

    counts = split_counts([part.weight for part in parts], num_samples)
    blocks = []
    sources: list[str] = []
    languages: list[str] = []
    for part, count in zip(parts, counts, strict=True):
        if count == 0:
            raise DataError(
                f"The mix {spec!r} gives {part.label!r} none of the {num_samples} windows; raise its weight "
                "or --num-samples."
            )
        documents, part_language = _calibration_documents(part, declared, data_dir)
        blocks.append(
            cut_windows(
                documents.documents,
                tokenizer,
                num_samples=count,
                seq_len=seq_len,
                seed=seed,
                label=f"{part.label!r} ({documents.source})",
            )
        )
        sources.append(documents.source)
        if part_language not in languages:
            languages.append(part_language)

    import torch

    input_ids = torch.cat(blocks)
    if len(blocks) > 1:
        # Interleave the components so any prefix of the set is a mix too.
        order = list(range(num_samples))
        random.Random(seed).shuffle(order)
        input_ids = input_ids[torch.tensor(order)]
        name = ",".join(f"{part.label}:{part.weight:g}" for part in parts)
        weights = {part.label: round(part.weight, 6) for part in parts}
    else:
        name, weights = parts[0].label, None
    return CalibrationSet(
        input_ids=input_ids,
        name=name,
        sources=sources,
        language="+".join(languages),
        num_samples=num_samples,
        seq_len=seq_len,
        seed=seed,
        token_hash=token_hash(input_ids),
        language_decision=decision,
        spec=spec,
        weights=weights,
    )


def _check_agrees(corpus: Corpus, declared: Language) -> None:
    if corpus.language != declared:
        raise DataError(
            f"Corpus {corpus.name!r} is {corpus.language} text but language {declared!r} was given; "
            f"choose a {declared} corpus (e.g. {AUTO_CHOICE[declared]!r}) or drop the language."
        )


def _calibration_documents(part: SpecPart, declared: Language | None, data_dir: Path | None) -> tuple[Documents, str]:
    if part.corpus is not None:
        return read_split(part.corpus, "calibration", data_dir), part.corpus.language
    assert part.path is not None
    documents = read_user_file(part.path)
    if not documents:
        raise DataError(f"Corpus file {str(part.path)!r} holds no text; give a file with at least one document.")
    language = declared or text_language(documents)[0]
    return Documents(documents=documents, source=str(part.path), joiner="\n\n"), language


def evaluation_text(name: str, *, data_dir: Path | None = None) -> EvalText:
    """The whole evaluation split of a registered corpus (or a file), joined into one text.

    WikiText-2 rows are joined with a blank line (as in the usual perplexity protocol), PTB
    sentences with a newline, documents and paragraphs with a blank line.

    Raises:
        DataError: unknown name, a mix or `auto`, or text unavailable here and on the Hub.
    """
    parts = parse_spec(name)
    if parts is None or len(parts) != 1:
        raise DataError(f"Evaluation needs one corpus name or file, not {name!r}; e.g. 'wikitext2' or 'c4_zh'.")
    part = parts[0]
    data_dir = resolve_data_dir(data_dir)
    if part.corpus is not None:
        documents = read_split(part.corpus, "evaluation", data_dir)
        text, language = documents.joined(), part.corpus.language
        source = documents.source
    else:
        assert part.path is not None
        rows = read_user_file(part.path)
        text, source = "\n\n".join(rows), str(part.path)
        language = text_language(rows)[0]
    if not text.strip():
        raise DataError(f"The evaluation text of {name!r} ({source}) is empty; give a file with text in it.")
    return EvalText(name=part.label, text=text, source=source, language=language)


def default_eval_names(languages: str | list[str]) -> list[str]:
    """Perplexity corpora reported by default for a model competent in these languages (`zh+en` or a list).

    English corpora are always reported (the common reference); a Chinese-competent model adds c4_zh.
    """
    items = languages.split("+") if isinstance(languages, str) else list(languages)
    names: list[str] = []
    for item in items:
        checked = _check_language(item)
        assert checked is not None
        names += [name for name in _DEFAULT_EVAL[checked] if name not in names]
    return names


def _where(spec: SplitSpec | None, data_dir: Path | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    found = local_path(spec, data_dir)
    hub = spec.hub.describe()
    if found is not None:
        read_from = f"{found}{spec.local.describe()[len(spec.local.path) :]}"
    else:
        read_from = f"Hub {hub}" + (" (unavailable: offline)" if hub_offline() else "")
    return {
        "local_path": spec.local.describe(),
        "local_found": found is not None,
        "hub": hub,
        "read_from": read_from,
    }


def list_datasets(data_dir: Path | None) -> list[dict[str, Any]]:
    """Every registered name with aliases, language, purposes and where each split would be read from now."""
    data_dir = resolve_data_dir(data_dir)
    rows: list[dict[str, Any]] = []
    for corpus in CORPORA:
        rows.append(_row(corpus, data_dir))
    rows.append(
        {
            "name": AUTO,
            "aliases": [],
            "language": "per model",
            "purposes": ["calibration"],
            "description": (
                "Default for calibration: the languages the model is measured competent in (bits per byte "
                f"against bz2 on held-out text) pick {AUTO_CHOICE['zh']!r} (zh), {AUTO_CHOICE['en']!r} (en) "
                "or an equal mix of both."
            ),
            "resolves_to": (
                f"{AUTO_CHOICE['zh']} (zh), {AUTO_CHOICE['en']} (en) or "
                f"{AUTO_CHOICE['zh']}:0.5,{AUTO_CHOICE['en']}:0.5 (both), per model"
            ),
            "calibration": None,
            "evaluation": None,
        }
    )
    return rows


def _row(corpus: Corpus, data_dir: Path | None) -> dict[str, Any]:
    return {
        "name": corpus.name,
        "aliases": list(corpus.aliases),
        "language": corpus.language,
        "purposes": list(corpus.purposes),
        "description": corpus.description,
        "calibration": _where(corpus.calibration, data_dir),
        "evaluation": _where(corpus.evaluation, data_dir),
    }
