"""The corpora registry: every name a user may type, its language, and where each split is read from.

Each corpus has a calibration split and an evaluation split that never share text. A split is read
from the local data directory when its file is there, else from the Hub at a pinned dataset id,
config, split and revision (the same table is in docs/data.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from zhprune_hub.errors import DataError

Language = Literal["en", "zh"]
Purpose = Literal["calibration", "perplexity"]

#: Layouts of the local files this registry knows how to read (see sources.read_local).
LocalLayout = Literal["wikitext", "lines", "text", "squad", "cmrc_trial"]

#: Suffixes of user files accepted in place of a name.
FILE_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class LocalSource:
    """A file under the data directory and how to read it."""

    path: str
    layout: LocalLayout
    # Which documents of the file belong to this split: lets one file hold disjoint
    # calibration and evaluation parts (the local C4 validation sample).
    start: int | None = None
    stop: int | None = None

    def describe(self) -> str:
        if self.start is None and self.stop is None:
            return self.path
        return f"{self.path}[{'' if self.start is None else self.start}:{'' if self.stop is None else self.stop}]"


@dataclass(frozen=True)
class HubSource:
    """A pinned Hub dataset split, read through `datasets.load_dataset` (streaming)."""

    dataset: str
    split: str
    field: str
    config: str | None = None
    revision: str = "main"
    data_files: str | None = None
    # Streaming stops after this many rows: enough text, without downloading a whole shard.
    max_rows: int | None = None

    def describe(self) -> str:
        where = self.data_files or "/".join(part for part in (self.config, self.split) if part)
        return f"{self.dataset}@{self.revision} ({where})"


@dataclass(frozen=True)
class SplitSpec:
    """Where one split of a corpus comes from and how its rows become documents or one text."""

    local: LocalSource
    hub: HubSource
    # "wikitext_articles": rows are regrouped into articles at top-level headings, so a
    # calibration document is a whole article rather than one paragraph.
    grouping: Literal["none", "wikitext_articles"] = "none"
    # CMRC repeats a paragraph once per question.
    dedupe: bool = False
    joiner: str = "\n\n"


@dataclass(frozen=True)
class Corpus:
    """One registered corpus: canonical name, aliases, language and its two splits."""

    name: str
    aliases: tuple[str, ...]
    language: Language
    description: str
    evaluation: SplitSpec
    calibration: SplitSpec | None = None

    @property
    def purposes(self) -> tuple[Purpose, ...]:
        return ("calibration", "perplexity") if self.calibration is not None else ("perplexity",)


_WIKITEXT_HUB = dict(dataset="Salesforce/wikitext", config="wikitext-2-raw-v1", field="text")
_C4_TRAIN = "en/c4-train.00000-of-01024.json.gz"
_C4_VALIDATION = "en/c4-validation.00000-of-00008.json.gz"
_CMRC_HUB = dict(dataset="hfl/cmrc2018", field="context", revision="refs/convert/parquet")

CORPORA: tuple[Corpus, ...] = (
    Corpus(
        name="wikitext2",
        aliases=("wikitext", "wikitext-2"),
        language="en",
        description="WikiText-2 (raw): calibration on train articles, perplexity on test.",
        calibration=SplitSpec(
            local=LocalSource("wikitext2/wiki.train.raw", "wikitext"),
            hub=HubSource(split="train", **_WIKITEXT_HUB),
            grouping="wikitext_articles",
        ),
        evaluation=SplitSpec(
            local=LocalSource("wikitext2/wiki.test.raw", "wikitext"),
            hub=HubSource(split="test", **_WIKITEXT_HUB),
        ),
    ),
    Corpus(
        name="ptb",
        aliases=(),
        language="en",
        description="Penn Treebank (Mikolov text-only) test sentences, perplexity only.",
        evaluation=SplitSpec(
            local=LocalSource("ptb/ptb.test.txt", "lines"),
            hub=HubSource(
                dataset="ptb-text-only/ptb_text_only",
                config="penn_treebank",
                split="test",
                field="sentence",
                revision="refs/convert/parquet",
            ),
            joiner="\n",
        ),
    ),
    Corpus(
        name="c4",
        aliases=(),
        language="en",
        description="C4 en: calibration on train documents, perplexity on validation documents.",
        calibration=SplitSpec(
            # Locally only a 2,000-document validation sample exists: the first 1,500 calibrate,
            # the last 500 evaluate, so the two never overlap.
            local=LocalSource("c4/c4_validation_2k.parquet", "text", stop=1500),
            hub=HubSource(dataset="allenai/c4", split="train", field="text", data_files=_C4_TRAIN, max_rows=20_000),
        ),
        evaluation=SplitSpec(
            local=LocalSource("c4/c4_validation_2k.parquet", "text", start=1500),
            hub=HubSource(dataset="allenai/c4", split="train", field="text", data_files=_C4_VALIDATION, max_rows=1100),
        ),
    ),
    Corpus(
        name="wikitext_zh",
        aliases=("wikitext-zh", "wikipedia_zh", "wikipedia-zh"),
        language="zh",
        description="Chinese Wikipedia paragraphs (CMRC 2018): calibration on dev, perplexity on trial.",
        calibration=SplitSpec(
            local=LocalSource("wikipedia_zh/cmrc2018_dev.json", "squad"),
            hub=HubSource(split="validation", **_CMRC_HUB),
            dedupe=True,
        ),
        evaluation=SplitSpec(
            local=LocalSource("wikipedia_zh/cmrc2018_trial.json", "cmrc_trial"),
            hub=HubSource(split="test", **_CMRC_HUB),
            dedupe=True,
        ),
    ),
    Corpus(
        name="c4_zh",
        aliases=("c4-zh",),
        language="zh",
        description="mC4 zh on the Hub; locally the CMRC 2018 Wikipedia paragraphs stand in (dev / trial).",
        calibration=SplitSpec(
            local=LocalSource("wikipedia_zh/cmrc2018_dev.json", "squad"),
            hub=HubSource(
                dataset="allenai/c4",
                split="train",
                field="text",
                data_files="multilingual/c4-zh.tfrecord-00000-of-01024.json.gz",
                max_rows=20_000,
            ),
            dedupe=True,
        ),
        evaluation=SplitSpec(
            local=LocalSource("wikipedia_zh/cmrc2018_trial.json", "cmrc_trial"),
            hub=HubSource(
                dataset="allenai/c4",
                split="train",
                field="text",
                data_files="multilingual/c4-zh-validation.tfrecord-00000-of-00002.json.gz",
                max_rows=1100,
            ),
        ),
    ),
)

AUTO = "auto"
#: What `auto` calibrates on once the model's language is known.
AUTO_CHOICE: dict[Language, str] = {"zh": "wikitext_zh", "en": "c4"}

_BY_NAME: dict[str, Corpus] = {}
for _corpus in CORPORA:
    for _key in (_corpus.name, *_corpus.aliases):
        _BY_NAME[_key] = _corpus


def known_names() -> list[str]:
    """Canonical names, in registry order."""
    return [corpus.name for corpus in CORPORA]


def looks_like_path(spec: str) -> bool:
    """True when `spec` is meant as a file rather than a registered name."""
    return spec.lower().endswith(FILE_SUFFIXES) or "/" in spec or "\\" in spec or Path(spec).expanduser().exists()


def _unknown(spec: str) -> DataError:
    names = ", ".join(f"{c.name} ({', '.join(c.aliases)})" if c.aliases else c.name for c in CORPORA)
    return DataError(
        f"Unknown corpus {spec!r}; known names are {names}, or `auto`, or a path to a "
        f"{'/'.join(FILE_SUFFIXES)} file, or a mix such as 'wikitext_zh:0.7,c4:0.3'."
    )


def get_corpus(name: str) -> Corpus:
    """Look a name or alias up exactly (case-insensitive).

    Raises:
        DataError: the name is unknown; the message lists the known names and says a path works too.
    """
    corpus = _BY_NAME.get(name.strip().lower())
    if corpus is None:
        raise _unknown(name)
    return corpus


@dataclass(frozen=True)
class SpecPart:
    """One component of a calibration spec: a registered corpus or a file, with its weight."""

    corpus: Corpus | None
    path: Path | None
    weight: float

    @property
    def label(self) -> str:
        return self.corpus.name if self.corpus is not None else str(self.path)


def parse_spec(spec: str) -> list[SpecPart] | None:
    """Parse a name, alias, path or mix; `None` means `auto`.

    Raises:
        DataError: an unknown name, a missing file, or a malformed mix weight.
    """
    text = spec.strip()
    if not text:
        raise DataError("The corpus name is empty ''; pass a name such as 'c4' or 'wikitext_zh', a path, or 'auto'.")
    if text.lower() == AUTO:
        return None
    if "," not in text and not _has_weight(text):
        return [_part(text, 1.0)]
    parts: list[SpecPart] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise DataError(f"The mix {spec!r} has an empty component; write it as 'wikitext_zh:0.7,c4:0.3'.")
        if not _has_weight(item):
            raise DataError(f"The mix component {item!r} in {spec!r} has no weight; write it as 'name:0.3'.")
        name, _, raw = item.rpartition(":")
        try:
            weight = float(raw)
        except ValueError:
            raise DataError(f"The weight {raw!r} in mix {spec!r} is not a number; write it as 'name:0.3'.") from None
        if not weight > 0 or weight == float("inf"):
            raise DataError(f"The weight {raw!r} in mix {spec!r} must be a positive number.")
        if name.strip().lower() == AUTO:
            raise DataError(f"'auto' cannot be part of the mix {spec!r}; name the corpora explicitly.")
        parts.append(_part(name.strip(), weight))
    labels = [part.label for part in parts]
    if len(set(labels)) != len(labels):
        raise DataError(f"The mix {spec!r} names the same corpus twice; give each corpus once with its weight.")
    total = sum(part.weight for part in parts)
    return [SpecPart(part.corpus, part.path, part.weight / total) for part in parts]


def _has_weight(item: str) -> bool:
    head, sep, tail = item.rpartition(":")
    if not sep or not head:
        return False
    try:
        float(tail)
    except ValueError:
        return False
    return True


def _part(name: str, weight: float) -> SpecPart:
    key = name.lower()
    if key in _BY_NAME:
        return SpecPart(_BY_NAME[key], None, weight)
    if looks_like_path(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise DataError(f"Corpus file {str(path)!r} does not exist; check the path or use a registered name.")
        if not path.name.lower().endswith(FILE_SUFFIXES):
            raise DataError(f"Corpus file {str(path)!r} has an unsupported type; use a {'/'.join(FILE_SUFFIXES)} file.")
        return SpecPart(None, path, weight)
    raise _unknown(name)
