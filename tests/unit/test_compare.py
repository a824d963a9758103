"""Deltas against the reference: signs, directions and what the table says."""

from __future__ import annotations

import pytest
from rich.console import Console

from tests.unit.test_results import make_model
from zhprune_hub.errors import EvaluationError
from zhprune_hub.evaluate import compare, render_table
from zhprune_hub.evaluate.compare import format_delta


def _delta(results, model_id: str, metric: str):
    return next(d for d in results.deltas if d.model_id == model_id and d.metric == metric)


def test_perplexity_up_is_worse_accuracy_up_is_better() -> None:
    ref = make_model("base", ppl=10.0, acc=0.50)
    worse_ppl = make_model("pruned", ppl=12.5, acc=0.60)
    results = compare(ref, [worse_ppl])
    ppl = _delta(results, "pruned", "ppl/wikitext2")
    assert (ppl.absolute, ppl.relative, ppl.better, ppl.change) == (
        pytest.approx(2.5),
        pytest.approx(0.25),
        "lower",
        "worse",
    )
    acc = _delta(results, "pruned", "acc/piqa")
    assert (acc.absolute, acc.better, acc.change) == (pytest.approx(0.1), "higher", "better")
    assert acc.relative == pytest.approx(0.2)


def test_perplexity_down_is_better_accuracy_down_is_worse() -> None:
    results = compare(make_model("base", ppl=10.0, acc=0.5), [make_model("p", ppl=8.0, acc=0.4)])
    assert _delta(results, "p", "ppl/wikitext2").change == "better"
    assert _delta(results, "p", "acc/piqa").change == "worse"
    assert _delta(results, "p", "acc/piqa").absolute == pytest.approx(-0.1)


def test_equal_values_are_same_and_reference_first() -> None:
    results = compare(make_model("base"), [make_model("copy")])
    assert {d.change for d in results.deltas} == {"same"}
    assert results.reference == "base" and [m.model_id for m in results.models] == ["base", "copy"]


def test_only_shared_metrics_get_deltas() -> None:
    other = make_model("p").model_copy(update={"zeroshot": []})
    results = compare(make_model("base"), [other])
    assert [d.metric for d in results.deltas] == ["ppl/wikitext2"]


def test_duplicate_model_ids_are_refused() -> None:
    with pytest.raises(EvaluationError, match="'base' appears more than once"):
        compare(make_model("base"), [make_model("base")])


def test_delta_text_says_direction_in_words() -> None:
    results = compare(make_model("base", ppl=10.0, acc=0.5), [make_model("p", ppl=12.0, acc=0.55)])
    assert format_delta(_delta(results, "p", "ppl/wikitext2")) == "+2.00 (+20.0%) worse"
    assert format_delta(_delta(results, "p", "acc/piqa")) == "+5.0 pt (+10.0%) better"


def test_table_shows_values_deltas_and_directions() -> None:
    results = compare(make_model("base", ppl=10.0), [make_model("pruned", ppl=12.0, params=800)])
    console = Console(width=200, record=True)
    console.print(render_table(results))
    text = console.export_text()
    assert "lower is better" in text and "(reference)" in text
    assert "PPL wikitext2 ↓" in text and "acc piqa ↑" in text
    assert "+2.00 (+20.0%) worse" in text
    assert "-20.0%" in text  # parameter change
