"""The model card from a synthetic report and results file: table = results JSON, metadata, signs, strictness."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from zhprune_hub.card import (
    CardError,
    build_context,
    card_data,
    headline_ppl_delta,
    metrics_table,
    render_card,
    write_card,
)
from zhprune_hub.evaluate.compare import compare
from zhprune_hub.results import (
    ModelResults,
    PerplexityProtocol,
    PerplexityResult,
    Protocol,
    ZeroShotMean,
    ZeroShotProtocol,
    ZeroShotResult,
)

REPO = "me/base-pruned-20-zh"


def _model(model_id: str, params: int, ppl: float, acc: float, acc_norm: float) -> ModelResults:
    return ModelResults(
        model_id=model_id, parameters=params, device="cpu", dtype="float32",
        perplexity=[PerplexityResult(
            dataset="wikitext2", source="/data/wiki.test.raw", language="en", perplexity=ppl,
            perplexity_stderr=0.1, nll=1.0, seq_len=128, windows=4, tokens_evaluated=512, tokens_predicted=508,
            tokens_total=10_000, seconds=1.0, tokens_per_second=512.0,
        )],
        zeroshot=[ZeroShotResult(
            task="piqa", acc=acc, acc_stderr=0.05, acc_norm=acc_norm, acc_norm_stderr=0.05, samples=20,
            samples_total=1838, source="local", data_source="/data/piqa.jsonl", seconds=1.0,
        )],
        zeroshot_mean=ZeroShotMean(tasks=["piqa"], acc=acc, acc_stderr=0.05, acc_norm=acc_norm, acc_norm_stderr=0.05),
    )  # fmt: skip


@pytest.fixture
def results():
    protocol = Protocol(
        device="cpu", dtype="float32", batch_size="auto",
        perplexity=PerplexityProtocol(datasets=["wikitext2"], seq_len=128, max_tokens=512),
        zeroshot=ZeroShotProtocol(tasks=["piqa"], limit=20, task_source="local", lm_eval_version="0.4.13"),
    )  # fmt: skip
    # perplexity worse (up), accuracy worse (down), acc_norm better (up)
    return compare(_model("Org/base", 1000, 13.7, 0.65, 0.60), [_model(REPO, 800, 15.3, 0.55, 0.70)], protocol=protocol)


def _report(*, layout: str = "global", calibration: bool = True) -> dict:
    layers = [
        {"index": i, "removed": i == 3, "kept_heads": [] if i == 3 else list(range(8 - i)),
         "kept_kv_heads": [] if i == 3 else [0, 1], "kept_channels": [] if i == 3 else list(range(96 - 10 * i))}
        for i in range(4)
    ]  # fmt: skip
    for layer in layers:
        layer.update(num_heads=len(layer["kept_heads"]), num_kv_heads=len(layer["kept_kv_heads"]),
                     intermediate_size=len(layer["kept_channels"]))  # fmt: skip
    return {
        "base_model": {"reference": "Org/base", "revision": None, "commit": "a" * 40},
        "method": "taylor", "layout": layout, "head_unit": "group", "ratio": 0.2, "temperature": 1.0, "tau": 3.0,
        "parameters": {
            "before": {"total": 1000, "non_embedding": 600}, "after": {"total": 800, "non_embedding": 400},
            "removed_fraction_of_total": 0.2,
        },
        "removed_blocks": [3],
        "layers": layers,
        "calibration": {
            "spec": "wikitext_zh", "name": "wikitext_zh", "sources": ["/data/cmrc2018_dev.json"], "language": "zh",
            "num_samples": 8, "seq_len": 64, "seed": 0, "token_hash": "f" * 64, "weights": None,
            "language_decision": None,
        } if calibration else None,
        "options": {},
    }  # fmt: skip


BASE_CONFIG = {"num_attention_heads": 8, "num_key_value_heads": 2, "intermediate_size": 96}


def _render(results, report, **meta):
    ctx = build_context(
        report, results, repo_id=REPO, command="zhprune-hub publish Org/base --repo-id " + REPO,
        base_card_data=meta, base_config=BASE_CONFIG,
    )  # fmt: skip
    return ctx, render_card(ctx, card_data(ctx, results))


def _table_rows(markdown: str) -> dict[str, list[str]]:
    rows = {}
    for line in markdown.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_every_metric_in_the_table_equals_the_results(results):
    rows = _table_rows(metrics_table(results))
    base, pruned = results.models[0].metrics(), results.models[1].metrics()
    deltas = {d.metric: d for d in results.deltas}
    assert rows["parameters"] == ["1,000", "800", "-200", "-20.00%", "smaller"]
    labels = {"ppl/wikitext2": "perplexity wikitext2 ↓", "acc/piqa": "accuracy piqa ↑",
              "acc_norm/piqa": "accuracy (norm) piqa ↑", "acc/mean": "accuracy mean ↑",
              "acc_norm/mean": "accuracy (norm) mean ↑"}  # fmt: skip
    assert set(rows) == {"parameters", *labels.values()}
    for key, label in labels.items():
        b, p, absolute, relative, change = rows[label]
        tol = 5e-4 if key.startswith("ppl") else 5e-5
        assert float(b) == pytest.approx(base[key].value, abs=tol)
        assert float(p) == pytest.approx(pruned[key].value, abs=tol)
        assert float(absolute) == pytest.approx(deltas[key].absolute, abs=tol)
        assert float(relative.rstrip("%")) == pytest.approx(deltas[key].relative * 100, abs=5e-3)
        assert change == deltas[key].change


def test_delta_signs_follow_each_metrics_direction(results):
    rows = _table_rows(metrics_table(results))
    assert rows["perplexity wikitext2 ↓"][2:] == ["+1.600", "+11.68%", "worse"]
    assert rows["accuracy piqa ↑"][2:] == ["-0.1000", "-15.38%", "worse"]
    assert rows["accuracy (norm) piqa ↑"][2:] == ["+0.1000", "+16.67%", "better"]
    assert headline_ppl_delta(results) == pytest.approx(1.6 / 13.7)


def test_metadata_round_trips_through_modelcard(results):
    _, card = _render(results, _report(), license="apache-2.0", language=["zh", "en"])

    parsed = ModelCard(str(card))
    data = parsed.data.to_dict()
    assert data["base_model"] == "Org/base"
    assert data["tags"] == ["pruned", "structured-pruning", "zhprune-hub", "zh"]
    assert data["datasets"] == ["hfl/cmrc2018"]
    assert data["language"] == ["zh", "en"] and data["license"] == "apache-2.0"
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert "base_model_relation" not in data
    values = {(r.dataset_type, r.metric_type): r.metric_value for r in parsed.data.eval_results}
    assert values == {("Salesforce/wikitext", "perplexity"): 15.3, ("ybisk/piqa", "accuracy"): 0.55,
                      ("ybisk/piqa", "acc_norm"): 0.7}  # fmt: skip
    assert parsed.data.model_name == "base-pruned-20-zh"


def test_body_fragments_global_layout(results):
    ctx, card = _render(results, _report())
    text = str(card)
    assert "with 20.0% of its parameters removed by structured pruning (taylor importance, `global` layout)" in text
    assert "perplexity on wikitext2 went from 13.70 to 15.30 (+11.7%)" in text
    assert "| total | 1,000 | 800 | 20.0% |" in text
    assert "Attention heads kept: 21 of 32; MLP channels kept: 258 of 384, over 4 blocks." in text
    assert "Blocks removed entirely: 3." in text
    assert "![Kept attention heads and MLP channels per block](zhprune_layers.png)" in text
    assert 'AutoModelForCausalLM.from_pretrained("me/base-pruned-20-zh", trust_remote_code=True)' in text
    assert "- Windows: 8 × 64 tokens, seed 0" in text and "chosen explicitly as `wikitext_zh` (zh text)" in text
    assert "zhprune-hub publish Org/base --repo-id me/base-pruned-20-zh" in text
    assert "20 items per task" in text and "License: `" not in text
    assert ctx.metrics_table in text


def test_body_fragments_uniform_layout_without_calibration(results):
    _, card = _render(results, _report(layout="uniform", calibration=False), license="mit")
    text = str(card)
    assert 'AutoModelForCausalLM.from_pretrained("me/base-pruned-20-zh")\n' in text
    assert "trust_remote_code" not in text.split("## How to use it")[1].split("## Reproduce")[0]
    assert "No calibration data: the `taylor` method scores weights without data." in text
    assert "License: `mit`, inherited from the base model." in text
    assert "datasets" not in ModelCard(text).data.to_dict()
    assert "multiple of" not in text  # no --round-to, no rounding sentence


def test_round_to_is_stated_in_the_card(results):
    _, card = _render(results, {**_report(layout="uniform"), "round_to": 64})
    assert "Every kept MLP width is a multiple of 64 (`--round-to 64`)." in str(card)


def test_the_repair_and_its_stream_correction_are_stated_in_the_card(results):
    repair = {
        "enabled": True, "damping": 0.01, "stream_correction": 0.5, "solver": "damped least squares",
        "down_proj": {"mean_relative_error_cut": 0.2, "mean_relative_error_repaired": 0.05},
    }  # fmt: skip
    text = str(_render(results, {**_report(), "repair": repair})[1])
    assert "re-fitted by damped least squares (dampening 0.01 of the mean diagonal)" in text
    assert "undoing 50% of the residual-stream error left by the blocks before it (`--correction 0.5`)" in text
    assert "from 20.0% to 5.0% on average (cut → repaired)" in text
    local = str(_render(results, {**_report(), "repair": {**repair, "stream_correction": 0.0}})[1])
    assert "re-fitted by damped least squares" in local and "--correction" not in local
    off = str(_render(results, {**_report(), "repair": {"enabled": False, "damping": 0.01}})[1])
    assert "Repair: none (`--no-repair`)" in off


def _measured_report() -> dict:
    report = _report()
    figure = {"source": "/data/x", "bytes": 8000, "tokens": 2000}
    report["calibration"].update(
        spec="auto", name="wikitext_zh:0.5,c4:0.5", language="zh+en", weights={"wikitext_zh": 0.5, "c4": 0.5},
        language_decision={
            "languages": ["zh", "en"], "how": "measured", "reason": "measured: zh 0.419; en 0.427",
            "figures": {
                "zh": {**figure, "corpus": "wikitext_zh", "model_bits_per_byte": 1.74, "compressor_bits_per_byte": 4.155,
                       "normalised": 0.419},
                "en": {**figure, "corpus": "wikitext2", "model_bits_per_byte": 1.298, "compressor_bits_per_byte": 3.039,
                       "normalised": 0.427},
            },
            "margin": 0.25, "compressor": "bz2", "card_languages": ["en", "fr"], "card_hint": ["en"],
        },
    )  # fmt: skip
    return report


def test_card_shows_the_language_rule_and_hub_dataset_ids(results):
    xcopa = ZeroShotResult(
        task="xcopa_zh", acc=0.6, acc_stderr=0.02, samples=500, samples_total=500, source="local",
        data_source="/data/zeroshot/xcopa_zh/test.zh.jsonl", seconds=1.0,
    )  # fmt: skip
    pruned = results.models[1].model_copy(update={"zeroshot": [*results.models[1].zeroshot, xcopa]})
    piqa = results.models[0].zeroshot[0].model_copy(update={"data_sha256": "d2870e73aec5154d" + "0" * 48})
    base = results.models[0].model_copy(update={"zeroshot": [piqa]})
    results = results.model_copy(update={"models": [base, pruned]})
    _, card = _render(results, _measured_report(), language=["en", "fr"])
    text = str(card)
    assert "`auto` calibrated on zh+en text (an equal-weight mix) because measured: zh 0.419; en 0.427" in text
    assert "| zh | wikitext_zh | 1.740 | 4.155 | 0.419 | yes |" in text
    assert "| en | wikitext2 | 1.298 | 3.039 | 0.427 | yes |" in text
    assert "Local data (sha256, first 16 hex digits): piqa `d2870e73aec5154d`." in text
    data = ModelCard(text).data
    assert data.language == ["zh", "en", "fr"]  # measured languages first, the base card's list kept as a hint
    xcopa_rows = [r for r in data.eval_results if r.task_name == "xcopa_zh (zero-shot)"]
    assert [(r.dataset_type, r.dataset_config, r.metric_value) for r in xcopa_rows] == [
        ("cambridgeltl/xcopa", "zh", 0.6)
    ]


def test_template_is_strict(results, tmp_path):
    bad = tmp_path / "bad.md.j2"
    bad.write_text("---\n{{ card_data }}\n---\n{{ no_such_value }}\n")
    ctx, _ = _render(results, _report())
    with pytest.raises(CardError, match="undefined value"):
        render_card(ctx, card_data(ctx, results), template=bad)


def test_write_card_writes_readme_and_png(results, tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "README.md").write_text("---\nlicense: apache-2.0\nlanguage: [zh]\n---\n# base\n")
    readme, _ = write_card(
        tmp_path / "out", report=_report(), results=results, repo_id=REPO, command="x", base_dir=tmp_path / "base"
    )
    assert ModelCard.load(readme).data.license == "apache-2.0"
    png = (tmp_path / "out" / "zhprune_layers.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    # no timestamp in the picture: the same report gives the same bytes (a republish makes no commit)
    write_card(tmp_path / "again", report=_report(), results=results, repo_id=REPO, command="x")
    assert (tmp_path / "again" / "zhprune_layers.png").read_bytes() == png


def test_template_ships_inside_the_package():
    from zhprune_hub.card import TEMPLATES_DIR

    assert (TEMPLATES_DIR / "modelcard.md.j2").read_text() == (
        Path(__file__).resolve().parents[2] / "templates" / "modelcard.md.j2"
    ).read_text()
    assert re.search(r"^---\n\{\{ card_data \}\}\n---", (TEMPLATES_DIR / "modelcard.md.j2").read_text())


def test_openvino_export_gets_a_snippet_and_tags(results, tmp_path):
    import json

    export = tmp_path / "out" / "openvino"
    export.mkdir(parents=True)
    check = {"ppl_corpus": "wikitext2", "ppl_pytorch": 40.0, "ppl_exported": 40.5, "ppl_increase": 0.0125}
    (export / "zhprune_export.json").write_text(json.dumps({"weights": "int8", "check": check}))
    readme, _ = write_card(
        tmp_path / "out", report=_report(layout="uniform"), results=results, repo_id=REPO, command="x"
    )
    text = readme.read_text()
    assert "### OpenVINO (int8 weights, CPU)" in text
    assert "made with optimum-intel and NNCF int8 weight compression. Its perplexity on wikitext2 is 40.50, " in text
    assert "against 40.00 for the PyTorch weights (+1.2%)" in text
    assert f'OVModelForCausalLM.from_pretrained("{REPO}", subfolder="openvino")' in text
    data = ModelCard(text).data.to_dict()
    assert data["tags"][-2:] == ["openvino", "openvino-int8"] and data["library_name"] == "transformers"


def test_no_export_no_openvino_section(results, tmp_path):
    readme, ctx = write_card(tmp_path / "out", report=_report(), results=results, repo_id=REPO, command="x")
    assert ctx.openvino is None and "OpenVINO" not in readme.read_text()
