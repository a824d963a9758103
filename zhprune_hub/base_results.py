"""The base model's evaluation, measured once and reused by every variant that prunes the same base.

Variants of a plan share their base: evaluating it again for each one costs as much as evaluating
the pruned model. A base result is stored as `<dir>/<key>.json`, where the key digests the base
(its Hub commit, or the fingerprint of a local directory), the evaluation protocol (corpora, tasks,
limit, window, token budget), the device kind and dtype it was measured with, and the tool version.
The entry also keeps the fingerprints of the data it read, so an edited evaluation file makes it
stale. The directory may be a persistent cache on one runner, or an Actions artifact handed from a
base-evaluation job to every variant job (`--base-results-dir`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhprune_hub import __version__
from zhprune_hub.fingerprint import fingerprint_model_dir, first_change
from zhprune_hub.results import ModelResults
from zhprune_hub.workspace import digest, now, write_json

ENTRY_SCHEMA = 1


@dataclass(frozen=True)
class BaseKey:
    """The identity of one base measurement: `value` names the file, `doc` says what it covers."""

    value: str
    doc: dict[str, Any]


def base_key(
    *,
    reference: str,
    commit: str | None,
    local_dir: Path | None,
    gguf_file: str | None,
    evaluation: dict[str, Any],
    device: str,
    dtype: str,
) -> BaseKey:
    """The key of a base measurement.

    Args:
        reference: the base as published (Hub id or directory name), for people reading the entry.
        commit: the Hub commit the weights come from; None for a local directory, which is then
            identified by the size and modification time of its files.
        evaluation: the evaluation settings that decide the numbers (no batch size).
        device, dtype: where and in which precision it is measured, resolved (cpu/cuda, float32/...).
    """
    if commit is not None:
        base: dict[str, Any] = {"commit": commit}
    else:
        files = fingerprint_model_dir(Path(local_dir)).get("files", {}) if local_dir is not None else {}
        base = {"local_files": digest(files)}
    doc = {
        "base": {"reference": reference, "gguf_file": gguf_file, **base},
        "evaluation": evaluation,
        "device": device.split(":")[0],
        "dtype": dtype,
        "tool": __version__,
    }
    return BaseKey(value=digest(doc), doc=doc)


class BaseResultsStore:
    """A folder of base measurements, one JSON file per key, written atomically."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def path(self, key: BaseKey) -> Path:
        return self.directory / f"base-{key.value}.json"

    def load(self, key: BaseKey) -> tuple[ModelResults | None, str]:
        """The stored result for `key` (None if there is none or it is stale) and why, for the log."""
        path = self.path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None, f"no stored base results in {self.directory}"
        except (OSError, ValueError):
            return None, f"{path} is unreadable"
        if entry.get("schema") != ENTRY_SCHEMA or entry.get("key") != key.value:
            return None, f"{path} was written by another version"
        changed = first_change(entry.get("data", []))
        if changed:
            return None, f"the stored base results are stale ({changed})"
        return ModelResults.model_validate(entry["results"]), f"reused from {path}"

    def store(self, key: BaseKey, results: ModelResults, data: list[dict[str, Any]]) -> Path:
        return write_json(
            self.path(key),
            {
                "schema": ENTRY_SCHEMA,
                "key": key.value,
                "covers": key.doc,
                "created_at": now(),
                "data": data,
                "results": results.model_dump(mode="json"),
            },
        )
