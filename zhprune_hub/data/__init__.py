"""Corpora registry: names, aliases, languages and sources of calibration and evaluation text.

Text is read from a local data directory (--data-dir, else $ZHPRUNE_DATA_DIR) first, then from
pinned Hub datasets; calibration and evaluation always use disjoint splits.
"""

from zhprune_hub.data.corpora import (
    EvalText,
    calibration_windows,
    default_eval_names,
    evaluation_text,
    list_datasets,
)
from zhprune_hub.data.language import LanguageDecision, decide_languages
from zhprune_hub.data.registry import CORPORA, Corpus, get_corpus, known_names
from zhprune_hub.data.sampling import CalibrationSet
from zhprune_hub.data.sources import resolve_data_dir

__all__ = [
    "CORPORA",
    "CalibrationSet",
    "Corpus",
    "EvalText",
    "LanguageDecision",
    "calibration_windows",
    "decide_languages",
    "default_eval_names",
    "evaluation_text",
    "get_corpus",
    "known_names",
    "list_datasets",
    "resolve_data_dir",
]
