"""Reading text: the local data directory first, then the pinned Hub dataset, never anything else."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from zhprune_hub.data.registry import Corpus, HubSource, LocalSource, SplitSpec
from zhprune_hub.errors import DataError

Which = Literal["calibration", "evaluation"]

_TRUE = {"1", "true", "yes", "on"}
# A WikiText article starts at a top-level heading row such as " = Robert Boulter = ".
_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $")


def resolve_data_dir(data_dir: Path | None) -> Path | None:
    """The local data directory: the flag, else $ZHPRUNE_DATA_DIR, else None.

    Raises:
        DataError: the directory given does not exist.
    """
    if data_dir is None:
        env = os.environ.get("ZHPRUNE_DATA_DIR", "").strip()
        if not env:
            return None
        data_dir = Path(env)
        origin = "ZHPRUNE_DATA_DIR"
    else:
        origin = "--data-dir"
    data_dir = data_dir.expanduser()
    if not data_dir.is_dir():
        raise DataError(
            f"Data directory {str(data_dir)!r} (from {origin}) does not exist; point it at a directory laid "
            "out as in docs/data.md or leave it unset to read from the Hub."
        )
    return data_dir


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE or HF_DATASETS_OFFLINE asks for no network access."""
    return any(os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


@dataclass(frozen=True)
class Documents:
    """The documents of one split and where they were read from."""

    documents: list[str]
    source: str
    joiner: str

    def joined(self) -> str:
        return self.joiner.join(self.documents)


def local_path(spec: SplitSpec, data_dir: Path | None) -> Path | None:
    """The split's local file when the data directory holds it."""
    if data_dir is None:
        return None
    path = data_dir / spec.local.path
    return path if path.is_file() else None


def read_split(corpus: Corpus, which: Which, data_dir: Path | None) -> Documents:
    """Read one split of a registered corpus: local file, else Hub, else one sentence naming both.

    Raises:
        DataError: neither place has the text, or a file is unreadable.
    """
    spec = corpus.calibration if which == "calibration" else corpus.evaluation
    if spec is None:
        raise DataError(
            f"Corpus {corpus.name!r} is for perplexity only and has no calibration split; calibrate on "
            "'c4', 'wikitext2', 'wikitext_zh', 'c4_zh' or 'auto'."
        )
    path = local_path(spec, data_dir)
    if path is not None:
        rows = read_local(path, spec.local)
        # describe() appends the document slice, e.g. "[:1500]", when the file is shared by both splits.
        source = f"{path}{spec.local.describe()[len(spec.local.path) :]}"
    else:
        rows = _read_hub_or_explain(corpus, which, spec, data_dir)
        source = spec.hub.describe()
    documents = _shape(rows, spec)
    return Documents(documents=documents, source=source, joiner=spec.joiner)


def _shape(rows: Iterable[str], spec: SplitSpec) -> list[str]:
    rows = [row.rstrip("\r\n") for row in rows]
    rows = [row for row in rows if row.strip()]
    if spec.dedupe:
        rows = list(dict.fromkeys(rows))
    if spec.grouping == "wikitext_articles":
        return group_wikitext_articles(rows)
    return rows


def group_wikitext_articles(rows: list[str]) -> list[str]:
    """Regroup WikiText rows into whole articles (each starts at a top-level heading)."""
    articles: list[list[str]] = []
    for row in rows:
        if _WIKITEXT_TITLE.match(row) or not articles:
            articles.append([])
        articles[-1].append(row)
    return ["\n\n".join(article) for article in articles]


def _read_hub_or_explain(corpus: Corpus, which: Which, spec: SplitSpec, data_dir: Path | None) -> list[str]:
    local = (
        f"{str(data_dir / spec.local.path)!r} does not exist"
        if data_dir is not None
        else "no data directory is set (--data-dir or ZHPRUNE_DATA_DIR)"
    )
    if hub_offline():
        raise DataError(
            f"The {which} text of corpus {corpus.name!r} is unavailable: locally {local}, and the Hub "
            f"({spec.hub.describe()}) is not tried because HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set; "
            f"put {spec.local.path} under a data directory and pass --data-dir, or go online."
        )
    try:
        return read_hub(spec.hub)
    except DataError:
        raise
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise DataError(
            f"The {which} text of corpus {corpus.name!r} is unavailable: locally {local}, and loading "
            f"{spec.hub.describe()} from the Hub failed ({reason}); put {spec.local.path} under a data "
            "directory and pass --data-dir, or check the network and HF_ENDPOINT."
        ) from exc


def read_hub(hub: HubSource) -> list[str]:
    """Stream the pinned Hub split and return its text field (at most `max_rows` rows)."""
    from datasets import load_dataset

    kwargs: dict[str, Any] = {"split": hub.split, "revision": hub.revision, "streaming": True}
    if hub.data_files:
        kwargs["data_files"] = hub.data_files
    dataset = load_dataset(hub.dataset, hub.config, **kwargs)
    rows: list[str] = []
    for index, record in enumerate(dataset):
        if hub.max_rows is not None and index >= hub.max_rows:
            break
        if hub.field not in record:
            raise DataError(
                f"Hub dataset {hub.dataset!r} has no field {hub.field!r} (fields: {', '.join(record)}); "
                "report this pin as outdated."
            )
        rows.append(str(record[hub.field]))
    return rows


def read_local(path: Path, local: LocalSource) -> list[str]:
    """Read a registered local file in its layout and keep the documents of this split."""
    try:
        if local.layout in ("wikitext", "lines"):
            rows = _read_text(path).splitlines()
            if local.layout == "lines":
                rows = [row.strip() for row in rows]
        elif local.layout == "text":
            rows = read_text_field(path)
        elif local.layout == "squad":
            data = _load_json(path)
            rows = [paragraph["context"] for article in data["data"] for paragraph in article["paragraphs"]]
        else:  # cmrc_trial
            rows = [item["context_text"] for item in _load_json(path)]
    except (KeyError, TypeError) as exc:
        field = {"squad": "data[].paragraphs[].context", "cmrc_trial": "[].context_text"}.get(local.layout, "text")
        raise DataError(
            f"File {str(path)!r} does not have the expected field {field!r} (missing {exc}); replace it with "
            "the file described in docs/data.md."
        ) from None
    return rows[local.start : local.stop]


def read_user_file(path: Path) -> list[str]:
    """Documents of a user file: .txt (blank-line separated), .jsonl/.json (`text` field), .parquet (`text`)."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        text = _read_text(path).replace("\r\n", "\n")
        return [block.strip("\n") for block in re.split(r"\n\s*\n", text) if block.strip()]
    return read_text_field(path)


def read_text_field(path: Path) -> list[str]:
    """The `text` field of every record of a .jsonl, .json or .parquet file.

    Raises:
        DataError: the file cannot be read or a record has no string `text` field.
    """
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:
            raise DataError(f"File {str(path)!r} is not a readable parquet file ({type(exc).__name__}).") from None
        if "text" not in table.column_names:
            raise DataError(
                f"File {str(path)!r} has no 'text' column (columns: {', '.join(table.column_names)}); "
                "rename the text column to 'text'."
            )
        records: list[Any] = [{"text": value} for value in table.column("text").to_pylist()]
    elif suffix == ".jsonl":
        records = _jsonl(path)
    else:
        try:
            loaded = _load_json(path)
        except DataError:
            records = _jsonl(path)  # a .json file holding JSON Lines
        else:
            records = loaded if isinstance(loaded, list) else [loaded]
    texts: list[str] = []
    for number, record in enumerate(records, start=1):
        value = record.get("text") if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise DataError(
                f"Record {number} of {str(path)!r} has no string field 'text'; every record must look like "
                '{"text": "..."}.'
            )
        texts.append(value)
    return texts


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"File {str(path)!r} is not UTF-8 text; convert it to UTF-8.") from None
    except OSError as exc:
        raise DataError(f"File {str(path)!r} cannot be read ({exc.strerror or exc}); check the path.") from None


def _load_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"File {str(path)!r} is not valid JSON (line {exc.lineno}); fix or replace it.") from None


def _jsonl(path: Path) -> list[Any]:
    records = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise DataError(
                f'Line {number} of {str(path)!r} is not valid JSON; write one {{"text": ...}} object per line.'
            ) from None
    return records
