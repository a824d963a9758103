"""`publish` on the real SmolLM2-135M against the local Hub server, with short limits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, snapshot_download

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

pytestmark = pytest.mark.slow

REPO = "tester/SmolLM2-135M-pruned-20"


@pytest.fixture
def hub(tmp_path):
    os.environ["HF_HUB_DISABLE_XET"] = "1"
    from hubserver import running_hub_server

    with running_hub_server(tmp_path / "hub") as server:
        yield server


def _logits(directory: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=True, dtype=torch.float32)
    with torch.no_grad():
        return model(torch.arange(100, 164).unsqueeze(0)).logits


def test_publish_smollm2_then_download_matches(hub, smollm2_dir, shared_data, tmp_path):
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": hub.token, "HF_HUB_DISABLE_XET": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "zhprune_hub", "publish", str(smollm2_dir), "--repo-id", REPO, "--json",
         "--num-samples", "32", "--seq-len", "64", "--ppl", "wikitext2", "--max-tokens", "2048",
         "--tasks", "piqa", "--limit", "20", "--data-dir", str(shared_data), "--work-dir", str(tmp_path / "work")],
        env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert hub.token not in proc.stdout + proc.stderr
    variant = json.loads(proc.stdout)["variants"][0]
    assert variant["status"] == "published"
    assert 0 < variant["ppl_delta"] < 20  # worse (32 short calibration windows, no retraining), not collapsed
    results = json.loads(Path(variant["results"]).read_text())
    assert [m["model_id"] for m in results["models"]] == [smollm2_dir.name, REPO]  # a local base: its name

    card = ModelCard(hub.files(REPO)["README.md"].decode())
    assert "pruned" in card.data.tags and card.data.eval_results
    assert variant["deltas_markdown"] in str(card)
    for name, data in hub.files(REPO).items():
        if name.endswith((".md", ".json")):
            assert str(smollm2_dir) not in data.decode() and str(shared_data) not in data.decode(), name

    fresh = tmp_path / "fresh"
    snapshot_download(REPO, endpoint=hub.endpoint, token=hub.token, local_dir=fresh)
    local = Path(variant["work_dir"]) / "prune" / "model"
    torch.testing.assert_close(_logits(fresh), _logits(local), rtol=0, atol=0)
