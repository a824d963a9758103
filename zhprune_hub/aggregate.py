"""After the variant jobs: one table of every variant against the one base, and the Hub Collection.

`plan aggregate` reads the `publish --json` documents the variant jobs left (as Actions artifacts) in a
folder, matches them to the plan's variants by id, and writes a Markdown summary: the base's numbers
once, then each variant with its parameters and metrics and the change against the base, and the
variants that failed (at which stage, and why) or never reported. Published variants are then listed
in the plan's Hub Collection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zhprune_hub.plan import Variant

SCHEMA_VERSION = 1
#: Metrics that get a column when a variant has them: every perplexity, and the zero-shot means.
MEAN_METRICS = ("acc/mean", "acc_norm/mean")


@dataclass
class VariantRow:
    """One variant as the aggregate sees it: its publish outcome, or `missing` when its job left none."""

    id: str
    name: str
    repo_id: str
    status: str
    failed_stage: str | None = None
    error: str | None = None
    repo_url: str | None = None
    commit_url: str | None = None
    pr_url: str | None = None
    metrics: dict[str, Any] | None = None
    base_evaluation: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Aggregate:
    rows: list[VariantRow]
    bases: list[dict[str, Any]] = field(default_factory=list)
    collection: dict[str, Any] | None = None

    @property
    def failed(self) -> list[VariantRow]:
        return [r for r in self.rows if r.status in {"failed", "missing"}]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "variants": [r.to_json() for r in self.rows],
            "failed": [r.id for r in self.failed],
            "bases": self.bases,
            "collection": self.collection,
        }


def read_outcomes(results_dir: Path) -> dict[str, dict[str, Any]]:
    """Every variant entry of every `publish --json` document under `results_dir`, by variant id."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(results_dir).rglob("*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("variants"), list):
            for entry in doc["variants"]:
                if isinstance(entry, dict) and entry.get("id"):
                    found[entry["id"]] = entry
    return found


def collect(variants: list[Variant], results_dir: Path) -> Aggregate:
    """The plan's variants in plan order, each with what its job reported."""
    outcomes = read_outcomes(results_dir)
    rows = []
    for v in variants:
        entry = outcomes.get(v.id)
        if entry is None:
            rows.append(VariantRow(id=v.id, name=v.name, repo_id=v.repo_id, status="missing"))
            continue
        rows.append(
            VariantRow(
                id=v.id, name=v.name, repo_id=v.repo_id, status=entry.get("status", "failed"),
                failed_stage=entry.get("failed_stage"), error=entry.get("error"), repo_url=entry.get("repo_url"),
                commit_url=entry.get("commit_url"), pr_url=entry.get("pr_url"), metrics=entry.get("metrics"),
                base_evaluation=entry.get("base_evaluation"),
            )
        )  # fmt: skip
    bases: list[dict[str, Any]] = []
    for row in rows:
        base = (row.metrics or {}).get("base")
        if base is not None and base not in bases:
            bases.append(base)
    return Aggregate(rows=rows, bases=bases)


# --- the summary ------------------------------------------------------------------------------------------


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _columns(agg: Aggregate) -> list[str]:
    keys: list[str] = []
    for base in agg.bases:
        keys += [k for k in base["values"] if k.startswith("ppl/") and k not in keys]
    return keys + [k for k in MEAN_METRICS if any(k in b["values"] for b in agg.bases)]


def _value(metric: str, value: float) -> str:
    return f"{value:.3f}" if metric.startswith("ppl/") else f"{value * 100:.1f}%"


def _change(metric: str, base: float | None, value: float | None) -> str:
    if value is None:
        return "—"
    if base is None or base == 0:
        return _value(metric, value)
    if metric.startswith("ppl/"):
        return f"{_value(metric, value)} ({(value / base - 1) * 100:+.1f}%)"
    return f"{_value(metric, value)} ({(value - base) * 100:+.1f} pt)"


def _label(metric: str) -> str:
    kind, _, name = metric.partition("/")
    return {"ppl": f"PPL {name} ↓", "acc": "acc mean ↑", "acc_norm": "acc_norm mean ↑"}[kind]


def _status(row: VariantRow) -> str:
    if row.status == "failed":
        return f"failed ({row.failed_stage or 'unknown stage'})"
    if row.status == "missing":
        return "no result"
    return row.status


def summary_markdown(agg: Aggregate, *, title: str) -> str:
    """The job summary: the base once, every variant with its change against it, then the failures."""
    columns = _columns(agg)
    lines = [f"## {title}", ""]
    if len(agg.bases) > 1:
        lines += [
            f"**{len(agg.bases)} different base results** were used (different bases, commits or protocols): "
            "each variant's change is against its own base.",
            "",
        ]
    header = ["variant", "repository", "status", "parameters", *map(_label, columns)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * 3 + "---:|" * (len(columns) + 1)]
    for base in agg.bases:
        commit = f" @ `{base['commit'][:8]}`" if base.get("commit") else ""
        cells = ["**base**", f"`{_cell(base['model_id'])}`{commit}", "—", f"{base['parameters']:,}"]
        cells += [_value(k, base["values"][k]) if k in base["values"] else "—" for k in columns]
        lines.append("| " + " | ".join(cells) + " |")
    for row in agg.rows:
        repo = f"[{_cell(row.repo_id)}]({row.repo_url})" if row.repo_url else _cell(row.repo_id)
        cells = [_cell(row.name), repo, _cell(_status(row))]
        metrics = row.metrics
        if metrics is None:
            cells += ["—"] * (len(columns) + 1)
        else:
            base, pruned = metrics["base"], metrics["pruned"]
            removed = 1 - pruned["parameters"] / base["parameters"] if base["parameters"] else 0.0
            cells.append(f"{pruned['parameters']:,} ({-removed * 100:+.1f}%)")
            cells += [_change(k, base["values"].get(k), pruned["values"].get(k)) for k in columns]
        lines.append("| " + " | ".join(cells) + " |")
    if agg.failed:
        lines += ["", f"### {len(agg.failed)} of {len(agg.rows)} variants did not publish", ""]
        for row in agg.failed:
            why = (
                f"failed at `{row.failed_stage}`: {row.error}"
                if row.status == "failed"
                else "its job left no result (it failed before `publish` printed one, or was cancelled)"
            )
            lines.append(f"- **{_cell(row.name)}** (`{row.id}`, {_cell(row.repo_id)}): {_cell(why)}")
    if agg.collection:
        c = agg.collection
        lines += ["", f"Collection: [{_cell(c['title'])}]({c['url']}) lists {len(c['items'])} models"]
        changes = [
            f"{n} {', '.join(c[k])}"
            for k, n in (("added", "added"), ("updated", "updated"), ("removed", "removed"))
            if c[k]
        ]
        if changes:
            lines[-1] += f" ({'; '.join(changes)})"
        lines[-1] += "."
    return "\n".join(lines) + "\n"


def collection_note(row: VariantRow, variant: Variant) -> str:
    """What a collection item says about a variant: how it was pruned and its headline change."""
    note = f"{variant.prune.ratio:.0%} of parameters removed ({variant.prune.method}, {variant.prune.layout} layout)"
    metrics = row.metrics or {}
    for key, value in (metrics.get("pruned") or {}).get("values", {}).items():
        base = metrics["base"]["values"].get(key)
        if key.startswith("ppl/") and base:
            note += f"; {key.partition('/')[2]} perplexity {(value / base - 1) * 100:+.1f}%"
            break
    return note


def publish_collection(
    agg: Aggregate,
    variants: list[Variant],
    *,
    title: str,
    namespace: str | None,
    endpoint: str | None = None,
    token: str | None = None,
) -> None:
    """Add or update the published variants in the collection; record what changed in `agg.collection`."""
    from zhprune_hub.collection import sync_collection

    by_id = {v.id: v for v in variants}
    published = {r.repo_id: collection_note(r, by_id[r.id]) for r in agg.rows if r.status in {"published", "unchanged"}}
    bases = sorted({b["model_id"] for b in agg.bases}) or sorted({v.model for v in variants})
    result = sync_collection(
        title,
        namespace=namespace,
        description=f"Structured-pruned variants of {', '.join(bases)}, made with zhprune-hub.",
        published=published,
        keep={v.repo_id for v in variants},
        endpoint=endpoint,
        token=token,
    )
    agg.collection = dict(result.__dict__)
