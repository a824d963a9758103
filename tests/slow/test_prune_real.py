"""Real checkpoints: the importance measure must beat random group selection at the same ratio."""

from __future__ import annotations

from pathlib import Path

import pytest

from zhprune_hub.data import evaluation_text
from zhprune_hub.evaluate.perplexity import perplexity, tokenize
from zhprune_hub.loading import ModelSource, load_model
from zhprune_hub.pruning import PruneConfig, prune_model
from zhprune_hub.verify import verify_checkpoint

pytestmark = pytest.mark.slow


def wikitext_ppl(directory: Path, data_dir: Path) -> float:
    model, tokenizer = load_model(ModelSource(reference=str(directory), local_dir=directory), device="cpu")
    ids = tokenize(tokenizer, evaluation_text("wikitext2", data_dir=data_dir).text)
    return perplexity(model, ids, seq_len=256, max_tokens=4096, batch_size=4).perplexity


@pytest.mark.parametrize(
    ("model_fixture", "calibration"),
    [("smollm2_dir", "c4"), ("qwen25_dir", "wikitext_zh")],
)
def test_taylor_beats_random_at_ten_percent(model_fixture, calibration, shared_data, tmp_path, request):
    base = request.getfixturevalue(model_fixture)
    common = dict(model=str(base), ratio=0.1, layout="global", seed=0, device="cpu", data_dir=shared_data)
    taylor = prune_model(
        PruneConfig(output=tmp_path / "taylor", method="taylor", calibration=calibration, num_samples=16, **common),
        log=lambda message: None,
    )
    random = prune_model(PruneConfig(output=tmp_path / "random", method="random", **common), log=lambda message: None)
    for outcome in (taylor, random):
        assert outcome.report["parameters"]["removed_fraction_of_total"] >= 0.1
    assert verify_checkpoint(tmp_path / "taylor", base=str(base)).ok
    taylor_ppl = wikitext_ppl(tmp_path / "taylor", shared_data)
    random_ppl = wikitext_ppl(tmp_path / "random", shared_data)
    print(f"{base.name}: taylor {taylor_ppl:.2f} vs random {random_ppl:.2f}")
    assert taylor_ppl < random_ppl
