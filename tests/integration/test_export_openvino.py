"""Real OpenVINO exports of a tiny uniform-layout pruned model, through the export environment.

Needs the environment built by scripts/install_export_env.sh, named by $ZHPRUNE_EXPORT_PYTHON
(`.ci/run` builds it); without it these tests skip and say so.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.tiny_models import TEXT, make_tiny_checkpoint
from zhprune_hub.errors import ExportError, OutputError
from zhprune_hub.export import ExportConfig, export_checkpoint
from zhprune_hub.export.environment import ENV_VAR
from zhprune_hub.export.exporter import RESULT_NAME
from zhprune_hub.outputs import OUTPUT_MARKER
from zhprune_hub.pruning import PruneConfig, prune_model

pytestmark = pytest.mark.skipif(
    not os.environ.get(ENV_VAR),
    reason=f"{ENV_VAR} is unset: build the export environment with scripts/install_export_env.sh",
)


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    base = make_tiny_checkpoint("llama", root / "base")
    output = root / "pruned"
    prune_model(
        PruneConfig(model=str(base), output=output, ratio=0.2, method="magnitude", layout="uniform", device="cpu"),
        log=lambda message: None,
    )
    return output


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ppl") / "text.txt"
    path.write_text("\n\n".join([TEXT] * 8))
    return path


def _tree(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _config(pruned: Path, text_file: Path, **options: object) -> ExportConfig:
    return ExportConfig(directory=pruned, ppl_corpus=str(text_file), ppl_tokens=1024, ppl_seq_len=128, **options)


def _assert_checked_and_recorded(outcome, target: Path, weights: str) -> None:
    assert outcome.output == target
    files = {p.name for p in target.iterdir()}
    assert {"openvino_model.xml", "openvino_model.bin", "config.json", "tokenizer.json", RESULT_NAME} <= files
    assert OUTPUT_MARKER in files
    record = json.loads((target / RESULT_NAME).read_text())
    assert record == json.loads(json.dumps(outcome.record))
    check = record["check"]
    assert record["weights"] == weights and check["passed"] is True
    assert check["windows"] == 8 and check["tokens_predicted"] == 8 * 127
    assert check["ppl_increase"] <= 0.10
    if weights == "fp16":
        assert check["max_abs_diff"] <= 0.5 and check["top1_agreement"] >= 0.98
    assert record["versions"]["optimum-intel"] and record["versions"]["openvino"]


def test_export_beside_the_checkpoint_then_overwrite(pruned: Path, text_file: Path) -> None:
    """int8 to the default place, a second run refused without --overwrite, then fp16 replaces it."""
    checkpoint = lambda: {k: v for k, v in _tree(pruned).items() if not k.startswith("openvino/")}  # noqa: E731
    before = checkpoint()
    config = _config(pruned, text_file, weights="int8")
    _assert_checked_and_recorded(export_checkpoint(config, log=lambda m: None), pruned / "openvino", "int8")
    with pytest.raises(OutputError, match="already exists and is not empty; pass --overwrite"):
        export_checkpoint(config, log=lambda m: None)
    assert json.loads((pruned / "openvino" / RESULT_NAME).read_text())["weights"] == "int8"  # refused: untouched
    again = export_checkpoint(config.model_copy(update={"overwrite": True, "weights": "fp16"}), log=lambda m: None)
    _assert_checked_and_recorded(again, pruned / "openvino", "fp16")
    assert checkpoint() == before  # the checkpoint is read, never written


def test_failed_check_leaves_nothing_behind(pruned: Path, text_file: Path, tmp_path: Path) -> None:
    before = _tree(pruned)
    target = tmp_path / "refused"
    # fp16 weights cannot match float32 logits to 1e-9: the check must refuse, and the export must go
    config = _config(pruned, text_file, weights="fp16", output=target, max_logit_diff=1e-9)
    with pytest.raises(ExportError) as caught:
        export_checkpoint(config, log=lambda m: None)
    assert "was not kept: its logits differ from the PyTorch model's by up to" in str(caught.value)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # no staging directory either
    assert _tree(pruned) == before


def test_publish_dry_run_ships_the_export_in_the_repo(tmp_path: Path, shared_data: Path) -> None:
    from huggingface_hub import ModelCard

    from zhprune_hub.plan import plan_from_flags, resolve_variants
    from zhprune_hub.publish import publish

    base = make_tiny_checkpoint("llama", tmp_path / "base")
    flags = dict(
        model=str(base), repo_id="tester/tiny-ov", method="magnitude", layout="uniform", export="int8",
        ppl="wikitext2", max_tokens=512, ppl_seq_len=128, tasks="none", data_dir=shared_data,
    )  # fmt: skip
    report = publish(resolve_variants(plan_from_flags(flags)), work_dir=tmp_path / "work", dry_run=True)
    (variant,) = report.variants
    assert variant.status == "dry-run" and variant.stages["export"] == "ran", variant.error
    repo = Path(variant.repo_dir)
    assert (repo / "openvino" / "openvino_model.xml").is_file() and (repo / "openvino" / RESULT_NAME).is_file()
    assert not (repo / "openvino" / OUTPUT_MARKER).exists()
    card = ModelCard((repo / "README.md").read_text())
    assert {"openvino", "openvino-int8"} <= set(card.data.tags)
    assert 'OVModelForCausalLM.from_pretrained("tester/tiny-ov", subfolder="openvino")' in card.text
