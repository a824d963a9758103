"""A plan as a GitHub Actions matrix: one entry per variant, each base pinned to the commit it is at now.

`plan matrix` validates the plan once (so a bad plan fails before any GPU runner is taken), resolves
every Hub base model's revision to a commit id, and prints `{"include": [...]}` for
`strategy.matrix: ${{ fromJSON(...) }}`. Each entry carries the variant's stable `id` (what
`publish --variant` selects) and the pinned `model_revision`, so every job prunes the same weights
even if the base repository moves while the jobs run. Local base directories have nothing to pin.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zhprune_hub.errors import PlanError
from zhprune_hub.plan import Variant

MATRIX_KEYS = ("id", "name", "repo_id", "model", "model_revision")


def is_hub_model(model: str) -> bool:
    """A Hub id (OWNER/NAME) rather than a local directory."""
    return not Path(model).expanduser().exists() and model.count("/") == 1 and not model.startswith((".", "/", "~"))


def check_names(variants: list[Variant], *, where: str) -> None:
    """Corpus names must be known before any runner starts (files are checked where they are read).

    Raises:
        PlanError: naming the variant and the unknown corpus.
    """
    from zhprune_hub.data.registry import get_corpus, looks_like_path, parse_spec
    from zhprune_hub.errors import DataError

    for variant in variants:
        try:
            parse_spec(variant.prune.calibration)
            for name in variant.evaluate.ppl or []:
                if not looks_like_path(name):
                    get_corpus(name)
        except DataError as exc:
            raise PlanError(f"{where}: variant {variant.id!r}: {exc}") from None


def plan_matrix(
    variants: list[Variant],
    *,
    pin: bool = True,
    endpoint: str | None = None,
    token: str | None = None,
    where: str = "the plan",
) -> dict[str, Any]:
    """The matrix document; each distinct (base, revision) is resolved once.

    Raises:
        PlanError: an unknown corpus name.
        ModelSourceError: a base model or revision that does not exist on the Hub.
    """
    from zhprune_hub.hub import resolve_commit

    check_names(variants, where=where)
    pins: dict[tuple[str, str | None], str] = {}
    include = []
    for v in variants:
        revision = v.model_revision
        if pin and is_hub_model(v.model):
            key = (v.model, v.model_revision)
            if key not in pins:
                pins[key] = resolve_commit(v.model, revision=v.model_revision, endpoint=endpoint, token=token)
            revision = pins[key]
        include.append(
            {"id": v.id, "name": v.name, "repo_id": v.repo_id, "model": v.model, "model_revision": revision or ""}
        )
    return {"include": include}


def load_matrix(text: str, *, where: str = "--matrix") -> dict[str, dict[str, Any]]:
    """The entries of a matrix document by variant id.

    Raises:
        PlanError: not a matrix printed by `plan matrix`.
    """
    try:
        doc = json.loads(text)
        entries = {e["id"]: e for e in doc["include"]}
    except (ValueError, TypeError, KeyError):
        raise PlanError(
            f"{where} is not a matrix printed by `zhprune-hub plan matrix`; pass its output as is."
        ) from None
    return entries


def apply_pins(variants: list[Variant], entries: dict[str, dict[str, Any]]) -> list[Variant]:
    """The variants with the base revisions the matrix pinned (variants it does not list stay as they are)."""
    out = []
    for v in variants:
        revision = (entries.get(v.id) or {}).get("model_revision")
        out.append(v.model_copy(update={"model_revision": revision}) if revision else v)
    return out
