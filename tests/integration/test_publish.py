"""`publish` end to end on a tiny model against the local Hub server (unmodified huggingface_hub client).

One module-scoped dry run does the expensive stages (prune, verify, evaluate, card); each test copies
that work directory, so a test that pushes resumes at `push` exactly like a rerun after a crash.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, snapshot_download

from zhprune_hub.hub import push_folder
from zhprune_hub.outputs import OUTPUT_MARKER
from zhprune_hub.plan import plan_from_flags, resolve_variants
from zhprune_hub.publish import STAGES, publish

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import make_tiny_checkpoint

REPO = "tester/tiny-pruned"
JSON_KEYS = {
    "name", "repo_id", "status", "failed_stage", "error", "repo_url", "commit_url", "pr_url", "work_dir",
    "results", "card", "ppl_delta", "deltas_markdown", "base_evaluation", "id", "metrics",
}  # fmt: skip


def _flags(data_dir: Path) -> dict:
    return dict(
        calibration="c4", num_samples=8, seq_len=64, ppl="wikitext2", max_tokens=512, ppl_seq_len=128,
        tasks="piqa", limit=8, data_dir=data_dir,
    )  # fmt: skip


def _cli_flags(data_dir: Path) -> list[str]:
    return [
        "--calibration", "c4", "--num-samples", "8", "--seq-len", "64", "--ppl", "wikitext2", "--max-tokens",
        "512", "--ppl-seq-len", "128", "--tasks", "piqa", "--limit", "8", "--data-dir", str(data_dir),
    ]  # fmt: skip


def _variants(base: Path, data_dir: Path, **extra):
    return resolve_variants(plan_from_flags({"model": str(base), "repo_id": REPO, **_flags(data_dir), **extra}))


BASE_README = "---\nlicense: other\nlicense_name: tiny-terms\nlicense_link: LICENSE\n---\n# tiny base\n"
LICENCE_FILES = {"LICENSE": "Tiny terms: use it kindly.\n", "USE_POLICY.md": "# Use policy\n\nNo harm.\n"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, shared_data):
    """A tiny base checkpoint (with licence files) and a work directory whose stages up to `card` are done."""
    root = tmp_path_factory.mktemp("publish")
    base = make_tiny_checkpoint("llama", root / "base")
    (base / "README.md").write_text(BASE_README, encoding="utf-8")
    for name, text in LICENCE_FILES.items():
        (base / name).write_text(text, encoding="utf-8")
    work = root / "work"
    report = publish(_variants(base, shared_data), work_dir=work, dry_run=True)
    assert report.ok, report.variants[0].error
    return base, work, report.variants[0]


@pytest.fixture
def work(prepared, tmp_path) -> Path:
    copy = tmp_path / "work"
    shutil.copytree(prepared[1], copy)
    return copy


def _marker(work_dir: str, stage: str) -> dict:
    return json.loads((Path(work_dir) / stage / "stage.json").read_text())


def _cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    from zhprune_hub.cli import main

    monkeypatch.setattr(sys, "argv", ["zhprune-hub", *args])
    with pytest.raises(SystemExit) as info:
        main()
    out, err = capsys.readouterr()
    return info.value.code, out, err


def _logits(directory: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=True, dtype=torch.float32)
    with torch.no_grad():
        return model(torch.arange(1, 33).unsqueeze(0)).logits


def test_dry_run_outputs(prepared):
    _, _, outcome = prepared
    assert outcome.status == "dry-run" and outcome.repo_url is None
    repo = Path(outcome.repo_dir)
    names = {p.name for p in repo.iterdir()}
    assert {"README.md", "zhprune_layers.png", "zhprune_results.json", "zhprune_pruning.json", "config.json"} <= names
    assert "modeling_zhprune.py" in names and "model.safetensors" in names
    for stage in STAGES[:-1]:
        assert _marker(outcome.work_dir, stage)["stage"] == stage
    assert not (Path(outcome.work_dir) / "push").exists()
    assert outcome.ppl_delta is not None and outcome.deltas_markdown in Path(outcome.card).read_text()


def test_the_repository_names_no_local_path(prepared, shared_data):
    """Base directory, data directory, work directory and home appear in no published text file."""
    base, work, outcome = prepared
    repo = Path(outcome.repo_dir)
    local = {str(base), str(base.resolve()), str(shared_data), str(shared_data.resolve()), str(work), str(Path.home())}
    for path in repo.rglob("*"):
        if path.suffix in {".md", ".json", ".py", ".txt"} or path.name in LICENCE_FILES:
            text = path.read_text(encoding="utf-8")
            assert not [p for p in local if p in text], path.name
    card = ModelCard.load(repo / "README.md")
    assert f"- Base model: `{base.name}`." in card.text
    assert "read from <data-dir>/c4/c4_validation_2k.parquet[:1500]" in card.text
    assert f"zhprune-hub publish {base.name} --repo-id {REPO}" in card.text
    results = json.loads((repo / "zhprune_results.json").read_text())
    assert results["reference"] == results["models"][0]["model_id"] == base.name
    assert results["models"][0]["perplexity"][0]["source"] == "<data-dir>/wikitext2/wiki.test.raw"


def test_the_base_licence_travels_with_the_pruned_model(prepared):
    repo = Path(prepared[2].repo_dir)
    for name, text in LICENCE_FILES.items():
        assert (repo / name).read_text(encoding="utf-8") == text
    card = ModelCard.load(repo / "README.md")
    assert (card.data.license, card.data.license_name, card.data.license_link) == ("other", "tiny-terms", "LICENSE")
    assert "License: `other` (`tiny-terms`, [terms](LICENSE)), inherited from the base model." in card.text
    assert "The base model's LICENSE, USE_POLICY.md are included in this repository unchanged" in card.text


def test_cli_publish_from_hub_then_download_matches_local_logits(hub_server, shared_data, prepared, tmp_path):
    """The whole command in a subprocess: pull from the server, prune, ..., push; then download and load."""
    push_folder(prepared[0], "tester/tiny-base", endpoint=hub_server.endpoint, token=hub_server.token,
                commit_message="base")  # fmt: skip
    env = {**os.environ, "HF_ENDPOINT": hub_server.endpoint, "HF_TOKEN": hub_server.token, "HF_HUB_DISABLE_XET": "1"}
    work = tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, "-m", "zhprune_hub", "publish", "tester/tiny-base", "--repo-id", REPO, "--json",
         "--work-dir", str(work), *_cli_flags(shared_data)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert hub_server.token not in proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema_version"] == 1 and doc["dry_run"] is False and len(doc["variants"]) == 1
    variant = doc["variants"][0]
    assert set(variant) == JSON_KEYS
    assert variant["status"] == "published" and variant["failed_stage"] is None and variant["error"] is None
    head = hub_server.head(REPO)
    assert variant["commit_url"] == f"{hub_server.endpoint}/{REPO}/commit/{head}"
    assert variant["repo_url"] == f"{hub_server.endpoint}/{REPO}"

    # one commit holds every file of the assembled folder
    history = hub_server.history(REPO)
    assert len(history) == 2
    repo_dir = Path(variant["card"]).parent
    local = {p.relative_to(repo_dir).as_posix() for p in repo_dir.rglob("*") if p.is_file()} - {OUTPUT_MARKER}
    assert set(history[0].tree) - {".gitattributes"} == local

    card = ModelCard(hub_server.files(REPO)["README.md"].decode())
    assert card.data.base_model == "tester/tiny-base" and "pruned" in card.data.tags
    # pulled from the Hub, the base's licence files still reach the pruned repository
    assert hub_server.files(REPO)["LICENSE"] == LICENCE_FILES["LICENSE"].encode() and card.data.license == "other"
    assert "- Base model: `tester/tiny-base` at commit" in card.text

    fresh = tmp_path / "fresh"
    snapshot_download(REPO, endpoint=hub_server.endpoint, token=hub_server.token, local_dir=fresh)
    local_model = Path(variant["work_dir"]) / "prune" / "model"
    torch.testing.assert_close(_logits(fresh), _logits(local_model), rtol=0, atol=0)


def test_republish_makes_no_commit(hub_server, prepared, work, shared_data, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub_server.endpoint)
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    first = publish(_variants(prepared[0], shared_data), work_dir=work).variants[0]
    assert first.status == "published", first.error
    commits = hub_server.commits_made

    again = publish(_variants(prepared[0], shared_data), work_dir=work).variants[0]

    assert again.status == "unchanged" and again.commit_url == first.commit_url
    assert hub_server.commits_made == commits
    assert {s: again.stages[s] for s in STAGES} == {**dict.fromkeys(STAGES[:-1], "resumed"), "push": "ran"}


def test_create_pr_opens_a_pr_and_leaves_main(hub_server, prepared, work, shared_data, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", hub_server.endpoint)
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    hub_server.create_repo(REPO)
    main = hub_server.head(REPO)

    code, out, err = _cli(
        ["publish", str(prepared[0]), "--repo-id", REPO, "--create-pr", "--json", "--work-dir", str(work),
         *_cli_flags(shared_data)],
        monkeypatch, capsys,
    )  # fmt: skip

    variant = json.loads(out)["variants"][0]
    assert code == 0 and variant["status"] == "published", err
    assert variant["pr_url"] == f"{hub_server.endpoint}/{REPO}/discussions/1"
    assert hub_server.head(REPO) == main
    assert "README.md" in hub_server.files(REPO, "refs/pr/1")


@pytest.mark.parametrize("fault", ["commit_500", "dropped_upload"])
def test_failed_push_keeps_results_and_the_rerun_does_not_prune(
    fault, hub_server, prepared, work, shared_data, monkeypatch, capsys
):
    monkeypatch.setenv("HF_ENDPOINT", hub_server.endpoint)
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    hub_server.create_repo(REPO)
    main = hub_server.head(REPO)
    args = ["publish", str(prepared[0]), "--repo-id", REPO, "--work-dir", str(work), *_cli_flags(shared_data)]
    work_dir = work / Path(prepared[2].work_dir).name
    pruned = _marker(work_dir, "prune")
    weights_mtime = (work_dir / "prune" / "model" / "model.safetensors").stat().st_mtime_ns
    if fault == "commit_500":
        hub_server.fail_next_commit = 500
    else:
        # Two LFS files (weights, picture) upload in parallel and share the faults: enough for six tries each.
        hub_server.lfs_put_faults = collections.deque(["drop", *[503] * 11])

    code, out, err = _cli([*args, "--json"], monkeypatch, capsys)

    variant = json.loads(out)["variants"][0]
    assert code == 1 and variant["status"] == "failed" and variant["failed_stage"] == "push"
    expected = "HTTP 500" if fault == "commit_500" else "LFS upload failed after retries"
    assert expected in variant["error"] and f"main was left unchanged at {main[:8]}" in variant["error"]
    assert "\n" not in variant["error"] and hub_server.token not in out + err
    assert hub_server.head(REPO) == main
    assert Path(variant["results"]).exists() and Path(variant["card"]).exists()

    hub_server.lfs_put_faults.clear()
    code, out, err = _cli(args, monkeypatch, capsys)  # human output this time

    assert code == 0, err
    assert "published" in out and hub_server.head(REPO) != main
    assert _marker(work_dir, "prune") == pruned
    assert (work_dir / "prune" / "model" / "model.safetensors").stat().st_mtime_ns == weights_mtime
    assert "prune done earlier" in " ".join(err.split())


def test_no_token_fails_before_pruning(prepared, tmp_path, shared_data, monkeypatch, capsys):
    code, _, err = _cli(
        ["publish", str(prepared[0]), "--repo-id", REPO, "--work-dir", str(tmp_path / "w"), *_cli_flags(shared_data)],
        monkeypatch, capsys,
    )  # fmt: skip
    assert code == 3 and "No Hub token found" in err and not (tmp_path / "w").exists()


def test_card_command_names_no_local_path_and_carries_the_licence(prepared, tmp_path, shared_data, monkeypatch, capsys):
    base, work, outcome = prepared
    checkpoint = tmp_path / "pruned-checkpoint"
    shutil.copytree(Path(outcome.work_dir) / "prune" / "model", checkpoint)
    results = Path(outcome.work_dir) / "evaluate" / "zhprune_results.json"
    assert str(shared_data) in results.read_text()  # the local results do name the data directory

    code, _, err = _cli(["card", str(checkpoint), "--base", str(base), "--results", str(results)], monkeypatch, capsys)

    assert code == 0, err
    readme = (checkpoint / "README.md").read_text()
    for local in (str(base), str(shared_data), str(tmp_path), str(work)):
        assert local not in readme and local not in (checkpoint / "zhprune_results.json").read_text()
    assert f"- Base model: `{base.name}`." in readme and "zhprune-hub prune base --output pruned-checkpoint" in readme
    assert (checkpoint / "LICENSE").read_text() == LICENCE_FILES["LICENSE"]
