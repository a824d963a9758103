"""A three-variant plan run the way .github/workflows/publish-matrix.yml runs it, against the local Hub server.

The jobs run in turn, each with its own work directory (its own runner): `plan matrix` (validate, pin the
base), `plan evaluate-base` (into a base-results folder, the artifact), one `publish PLAN --variant ID` per
matrix entry (each with its own copy of the artifact, as download-artifact gives it; the re-run of a failed
job spells the plan `--config PLAN`), and `plan aggregate` over the jobs' `--json` documents. The base repository moves after the matrix step: every
variant must still prune the pinned commit, the base must be evaluated once, every card must show the same
base numbers, and the collection must list every variant.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from zhprune_hub.hub import push_folder

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import make_tiny_checkpoint

BASE_REPO = "tester/tiny-base"
COLLECTION = "Tiny pruned family"
WORKFLOW = Path(__file__).resolve().parents[2] / ".github" / "workflows" / "publish-matrix.yml"


def _cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    from zhprune_hub.cli import main

    monkeypatch.setattr(sys, "argv", ["zhprune-hub", *args])
    with pytest.raises(SystemExit) as info:
        main()
    out, err = capsys.readouterr()
    return info.value.code, out, err


def _plan(tmp_path: Path, data_dir: Path) -> Path:
    plan = {
        "owner": "tester",
        "collection": COLLECTION,
        "defaults": {
            "model": BASE_REPO, "repo_id": "{owner}/tiny-{name}", "calibration": "c4", "num_samples": 8,
            "seq_len": 64, "ppl": ["wikitext2"], "max_tokens": 512, "ppl_seq_len": 128, "tasks": ["piqa"],
            "limit": 8, "data_dir": str(data_dir),
        },
        "variants": [
            {"name": "r20", "ratio": 0.2},
            {"name": "r30", "ratio": 0.3},
            {"name": "R30 uniform", "ratio": 0.3, "layout": "uniform"},
        ],
    }  # fmt: skip
    path = tmp_path / "zhprune.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False), encoding="utf-8")
    return path


def _base_column(card_text: str) -> dict[str, str]:
    """metric -> the base cell of the card's metrics table."""
    rows = {}
    for line in card_text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] not in {"metric", "---"} and not cells[0].startswith("-"):
            rows[cells[0]] = cells[1]
    return rows


def test_matrix_then_one_job_per_variant_then_aggregate(tmp_path, hub_server, shared_data, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", hub_server.endpoint)
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    base = make_tiny_checkpoint("llama", tmp_path / "base-src")
    push_folder(base, BASE_REPO, endpoint=hub_server.endpoint, token=hub_server.token, commit_message="base")
    plan = _plan(tmp_path, shared_data)

    # --- plan job: validate once, pin the base --------------------------------------------------------
    code, out, err = _cli(["plan", "matrix", str(plan)], monkeypatch, capsys)
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1  # one line, ready for $GITHUB_OUTPUT
    matrix = json.loads(out)
    pinned = hub_server.head(BASE_REPO)
    assert [e["id"] for e in matrix["include"]] == ["r20", "r30", "r30-uniform"]
    assert {e["model_revision"] for e in matrix["include"]} == {pinned}
    assert [e["repo_id"] for e in matrix["include"]] == [
        "tester/tiny-r20",
        "tester/tiny-r30",
        "tester/tiny-R30-uniform",
    ]
    (tmp_path / "matrix.json").write_text(out, encoding="utf-8")
    moved = hub_server.commit(BASE_REPO, {"README.md": b"---\nlicense: mit\n---\nA newer base.\n"})  # base moves

    # --- base job ---------------------------------------------------------------------------------------
    artifact = tmp_path / "artifact" / "base-results"
    code, out, err = _cli(
        ["plan", "evaluate-base", str(plan), "--matrix", str(tmp_path / "matrix.json"), "--base-results-dir",
         str(artifact), "--work-dir", str(tmp_path / "runner-base" / "work"), "--json"],
        monkeypatch, capsys,
    )  # fmt: skip
    assert code == 0, err
    bases = json.loads(out)["bases"]
    assert [b["status"] for b in bases] == ["computed", "reused", "reused"]  # one base, one protocol: measured once
    assert len(list(artifact.glob("base-*.json"))) == 1

    # --- one job per variant, each on its own runner ------------------------------------------------------
    results_dir = tmp_path / "variant-results"
    hub_server.fail_next_commit = 500  # the first variant's push fails
    for entry in matrix["include"]:
        runner = tmp_path / f"runner-{entry['id']}"
        shutil.copytree(artifact, runner / "base-results")
        code, out, err = _cli(
            ["publish", str(plan), "--variant", entry["id"], "--model-revision", entry["model_revision"],
             "--base-results-dir", str(runner / "base-results"), "--work-dir", str(runner / "work"), "--json"],
            monkeypatch, capsys,
        )  # fmt: skip
        (results_dir / f"publish-{entry['id']}").mkdir(parents=True)
        (results_dir / f"publish-{entry['id']}" / "publish.json").write_text(out, encoding="utf-8")
        [variant] = json.loads(out)["variants"]
        assert variant["id"] == entry["id"] and variant["base_evaluation"] == "reused", err
        assert "base results reused from" in " ".join(err.split())
        assert code == (1 if entry["id"] == "r20" else 0), err

    # --- aggregate job: one failure reported, the others in the collection ---------------------------------
    summary = tmp_path / "summary.md"
    code, out, err = _cli(
        ["plan", "aggregate", str(plan), "--results-dir", str(results_dir), "--summary", str(summary), "--json"],
        monkeypatch, capsys,
    )  # fmt: skip
    doc = json.loads(out)
    assert code == 1 and doc["failed"] == ["r20"], err
    text = summary.read_text(encoding="utf-8")
    assert "| r20 | tester/tiny-r20 | failed (push) |" in text and "### 1 of 3 variants did not publish" in text
    assert [r for r, _ in hub_server.collection_items(COLLECTION)] == ["tester/tiny-r30", "tester/tiny-R30-uniform"]

    # --- the failed job is re-run: it resumes at push; the aggregate is complete --------------------------
    runner = tmp_path / "runner-r20"
    code, out, err = _cli(
        ["publish", "--config", str(plan), "--variant", "r20", "--model-revision", pinned, "--base-results-dir",
         str(runner / "base-results"), "--work-dir", str(runner / "work"), "--json"],
        monkeypatch, capsys,
    )  # fmt: skip
    assert code == 0 and "prune done earlier" in " ".join(err.split()), err
    (results_dir / "publish-r20" / "publish.json").write_text(out, encoding="utf-8")
    code, out, err = _cli(
        ["plan", "aggregate", str(plan), "--results-dir", str(results_dir), "--summary", str(summary), "--json"],
        monkeypatch, capsys,
    )  # fmt: skip
    doc = json.loads(out)
    assert code == 0 and doc["failed"] == [] and len(doc["bases"]) == 1, err
    repos = ["tester/tiny-r20", "tester/tiny-r30", "tester/tiny-R30-uniform"]
    items = hub_server.collection_items(COLLECTION)
    assert sorted(r for r, _ in items) == sorted(repos) and all(note.startswith("zhprune-hub: ") for _, note in items)
    assert doc["collection"]["added"] == ["tester/tiny-r20"] and doc["collection"]["items"] == [r for r, _ in items]

    # Every variant pruned the pinned commit, not the newer one, and every card shows the same base numbers.
    base_values = doc["bases"][0]["values"]
    columns = []
    for repo in repos:
        files = hub_server.files(repo)
        report = json.loads(files["zhprune_pruning.json"])
        assert report["base_model"]["commit"] == pinned != moved
        card = ModelCard(files["README.md"].decode())
        assert f"`{BASE_REPO}` at commit `{pinned}`" in card.text
        columns.append(_base_column(card.text))
    assert columns[0] == columns[1] == columns[2] and len(columns[0]) >= 4
    assert columns[0]["perplexity wikitext2 ↓"] == f"{base_values['ppl/wikitext2']:.3f}"

    # The summary: the base once, then each variant against it.
    text = summary.read_text(encoding="utf-8")
    assert text.count("| **base** |") == 1 and f"`{BASE_REPO}` @ `{pinned[:8]}`" in text
    for name in ("r20", "r30", "R30 uniform"):
        assert f"| {name} | [tester/tiny-" in text
    assert "did not publish" not in text and f"Collection: [{COLLECTION}](" in text


def test_the_example_workflow_wires_the_jobs_together():
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    jobs = workflow["jobs"]
    assert list(jobs) == ["plan", "base", "variant", "aggregate"]
    commands = {name: [s.get("with", {}).get("command", "publish") for s in job["steps"] if s.get("uses") == "./"]
                for name, job in jobs.items()}  # fmt: skip
    assert commands == {
        "plan": ["plan-matrix"],
        "base": ["evaluate-base"],
        "variant": ["publish"],
        "aggregate": ["aggregate"],
    }
    variant = jobs["variant"]
    assert variant["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert variant["strategy"]["fail-fast"] == "${{ inputs.fail-fast == true }}"
    assert variant["concurrency"]["group"].endswith("${{ matrix.repo_id }}")
    publish_step = next(s for s in variant["steps"] if s.get("uses") == "./")
    assert publish_step["with"]["variant"] == "${{ matrix.id }}"
    assert publish_step["with"]["model-revision"] == "${{ matrix.model_revision }}"
    assert jobs["aggregate"]["if"] == "${{ always() && needs.plan.result == 'success' }}"
    for name, job in jobs.items():
        assert job["permissions"] == {"contents": "read"}, name
        for step in job["steps"]:
            assert "HF_TOKEN" not in step.get("with", {}), name  # the token is never an input


def test_a_bad_plan_fails_in_the_matrix_step(tmp_path, hub_server, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", hub_server.endpoint)
    plan = tmp_path / "zhprune.yaml"
    plan.write_text(
        yaml.safe_dump({"defaults": {"model": "tester/nope", "repo_id": "tester/x-{name}"},
                        "variants": [{"name": "a"}, {"name": "b", "calibration": "c5"}]}),
        encoding="utf-8",
    )  # fmt: skip
    code, out, err = _cli(["plan", "matrix", str(plan)], monkeypatch, capsys)
    assert code == 2 and out == "" and "variant 'b': Unknown corpus 'c5'" in err and "Traceback" not in err

    plan.write_text(yaml.safe_dump({"defaults": {"model": "tester/nope", "repo_id": "tester/x"}}), encoding="utf-8")
    code, out, err = _cli(["plan", "matrix", str(plan)], monkeypatch, capsys)
    assert code == 2 and "Model 'tester/nope' was not found on" in err

    code, _, err = _cli(["publish", "--config", str(plan), "--variant", "zz", "--dry-run"], monkeypatch, capsys)
    assert code == 2 and "has no variant with id 'zz'; its variants are: default." in err


def test_the_readme_shows_the_workflow_as_shipped():
    text = WORKFLOW.read_text(encoding="utf-8")
    readme = (WORKFLOW.parents[2] / "README.md").read_text(encoding="utf-8")
    assert text[text.index("name: Publish pruned models") :].rstrip("\n") in readme
