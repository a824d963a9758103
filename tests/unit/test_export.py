"""The export command's checks that need no export environment: sentences, layout refusal, the worker's imports."""

from __future__ import annotations

import ast
import json
import shutil
import sys
from pathlib import Path

import pytest

from zhprune_hub.errors import ExportError, ModelSourceError, PlanError
from zhprune_hub.export import ExportConfig
from zhprune_hub.export.environment import ENV_VAR, check_environment, export_python
from zhprune_hub.export.exporter import WORKER, _gate
from zhprune_hub.export.verify_export import Agreement
from zhprune_hub.loading import MODELING_DIR
from zhprune_hub.preflight import export_preflight


def test_unset_variable_says_what_to_install() -> None:
    with pytest.raises(ExportError) as caught:
        export_python({})
    message = str(caught.value)
    assert message.startswith("The OpenVINO export needs its own environment: run `bash scripts/install_export_env.sh")
    assert f"{ENV_VAR}=~/.zhprune-export/bin/python" in message
    assert message.count(". ") == 0 and message.endswith(".")


def test_variable_naming_no_file(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"is not an executable Python interpreter; run `bash scripts/install"):
        export_python({ENV_VAR: str(tmp_path / "nope" / "python")})


def test_interpreter_without_optimum_names_the_missing_module() -> None:
    # this test suite's own interpreter: a real Python that has zhprune-hub's packages but not optimum-intel
    try:
        import optimum.intel  # noqa: F401

        pytest.skip("optimum-intel is importable in the test environment itself")
    except ImportError:
        pass
    with pytest.raises(ExportError) as caught:
        check_environment({ENV_VAR: sys.executable})
    assert "cannot import optimum-intel/OpenVINO/NNCF (ModuleNotFoundError: No module named 'optimum')" in str(
        caught.value
    )


def test_worker_imports_nothing_of_zhprune_hub() -> None:
    """The worker runs in the export environment, where zhprune-hub is not installed."""
    tree = ast.parse(WORKER.read_text(encoding="utf-8"))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add((node.module or "").split(".")[0])
    allowed = {"__future__", "importlib", "json", "sys", "time", "traceback", "pathlib", "typing"}
    allowed |= {"numpy", "torch", "optimum", "transformers"}
    assert modules <= allowed, modules - allowed


def _checkpoint(directory: Path, **config: object) -> Path:
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "llama", **config}))
    (directory / "model.safetensors").write_bytes(b"\0" * 8)
    return directory


def test_global_layout_is_refused_before_anything_runs(tmp_path: Path) -> None:
    ckpt = _checkpoint(
        tmp_path / "pruned",
        auto_map={
            "AutoConfig": "modeling_zhprune.ZhpruneLlamaConfig",
            "AutoModelForCausalLM": "modeling_zhprune.ZhpruneLlamaForCausalLM",
        },
    )
    shutil.copy(MODELING_DIR / "modeling_zhprune.py", ckpt / "modeling_zhprune.py")
    before = sorted(p.name for p in ckpt.iterdir())
    with pytest.raises(ExportError) as caught:
        export_preflight(ExportConfig(directory=ckpt))
    assert str(caught.value) == (
        f"{ckpt} uses the global layout (per-block widths in zhprune-hub's own modeling code), which optimum-intel "
        "cannot export; prune again with --layout uniform."
    )
    assert sorted(p.name for p in ckpt.iterdir()) == before


def test_foreign_code_is_refused(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "foreign", auto_map={"AutoModelForCausalLM": "other/repo--modeling_x.X"})
    with pytest.raises(ExportError, match="ships its own modeling code"):
        export_preflight(ExportConfig(directory=ckpt))


def test_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="is not a directory"):
        export_preflight(ExportConfig(directory=tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match=r"has no config\.json"):
        export_preflight(ExportConfig(directory=tmp_path / "empty"))


def test_default_target_is_beside_the_weights(tmp_path: Path) -> None:
    assert ExportConfig(directory=tmp_path).target == tmp_path.absolute() / "openvino"
    assert ExportConfig(directory=tmp_path, output=tmp_path / "x").target == tmp_path.absolute() / "x"


def test_bad_weights_become_one_sentence() -> None:
    from zhprune_hub.console import build_config

    with pytest.raises(PlanError, match=r"^Invalid --weights: Input should be 'fp16', 'int8' or 'int4' \(got 'int3'\)"):
        build_config(ExportConfig, {"directory": Path("x"), "weights": "int3"})


def _agreement(*, diff: float = 0.01, top1: float = 1.0, ppl: tuple[float, float] = (30.0, 30.3)) -> Agreement:
    return Agreement(
        probe_tokens=50,
        max_abs_diff=diff,
        mean_abs_diff=diff / 10,
        top1_agreement=top1,
        windows=16,
        seq_len=512,
        tokens_predicted=16 * 511,
        ppl_pytorch=ppl[0],
        ppl_exported=ppl[1],
    )


def test_gate_bounds() -> None:
    fp16, int8 = ExportConfig(directory=Path("x"), weights="fp16"), ExportConfig(directory=Path("x"))
    assert _gate(fp16, _agreement()) is None
    assert "beyond the fp16 bound 0.5" in str(_gate(fp16, _agreement(diff=0.7)))
    assert "on only 90.0% of the probe" in str(_gate(fp16, _agreement(top1=0.9)))
    # logit bounds are for fp16 only: compressed weights are judged by perplexity
    assert _gate(int8, _agreement(diff=3.0, top1=0.8)) is None
    assert _gate(int8, _agreement(ppl=(30.0, 32.9))) is None
    refusal = _gate(int8, _agreement(ppl=(30.0, 33.3)))
    assert refusal == "its perplexity 33.30 is 11.0% above the PyTorch model's 30.00, beyond the bound of 10%"
    assert _gate(ExportConfig(directory=Path("x"), max_ppl_increase=0.2), _agreement(ppl=(30.0, 33.3))) is None
