"""Prune → save → reload on tiny models of every family; logits must match the masked base model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.tiny_models import TEXT, make_tiny_checkpoint
from zhprune_hub.errors import RatioError, UnsupportedArchitectureError, ZhpruneError
from zhprune_hub.outputs import OUTPUT_MARKER
from zhprune_hub.prune.structure import head_dim_of
from zhprune_hub.pruning import REPORT_NAME, PruneConfig, prune_model
from zhprune_hub.verify import verify_checkpoint

FAMILIES = ["llama", "mistral", "qwen2", "qwen3"]
IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 8, 120, 64, 33, 2]])


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {family: make_tiny_checkpoint(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text("\n".join([TEXT] * 6))
    return path


def run_prune(source: Path, output: Path, **options) -> dict:
    config = PruneConfig(model=str(source), output=output, device="cpu", **options)
    return prune_model(config, log=lambda message: None).report


def logits(directory: Path, *, trust: bool = False) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=trust).eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits


def masked_base_logits(base_dir: Path, report: dict) -> torch.Tensor:
    """The base model with every removed head's o_proj columns and channel's down_proj column zeroed."""
    model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    head_dim = head_dim_of(model)
    with torch.no_grad():
        for layer_report, layer in zip(report["layers"], model.model.layers, strict=True):
            o = layer.self_attn.o_proj.weight
            for head in range(o.shape[1] // head_dim):
                if head not in layer_report["kept_heads"]:
                    o[:, head * head_dim : (head + 1) * head_dim] = 0
            down = layer.mlp.down_proj.weight
            for channel in range(down.shape[1]):
                if channel not in layer_report["kept_channels"]:
                    down[:, channel] = 0
        return model(input_ids=IDS).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_ratio_zero_reproduces_base_logits(family, tiny_dirs, tmp_path):
    report = run_prune(tiny_dirs[family], tmp_path / "out", ratio=0.0, method="magnitude")
    assert report["parameters"]["after"] == report["parameters"]["before"]
    assert torch.equal(logits(tmp_path / "out"), logits(tiny_dirs[family]))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layout", ["global", "uniform"])
@pytest.mark.parametrize("head_unit", ["group", "query"])
def test_pruned_model_equals_masked_base(family, layout, head_unit, tiny_dirs, tmp_path):
    # Random removes heads and channels in proportion; take the first seed whose plan drops heads, so the
    # comparison exercises head slicing (q/k/v rows, biases, o_proj columns) as well as channels.
    for seed in range(20):
        out = tmp_path / f"out-{seed}"
        report = run_prune(
            tiny_dirs[family], out, ratio=0.3, method="random", layout=layout, head_unit=head_unit, seed=seed
        )
        if min(len(layer["kept_heads"]) for layer in report["layers"]) < 8:
            break
    assert min(len(layer["kept_heads"]) for layer in report["layers"]) < 8, "no seed removed a head"
    assert report["parameters"]["removed_fraction_of_total"] >= 0.3
    pruned = logits(out, trust=report["layout"] == "global")
    torch.testing.assert_close(pruned, masked_base_logits(tiny_dirs[family], report), atol=2e-5, rtol=1e-4)
    assert verify_checkpoint(out, base=str(tiny_dirs[family])).ok


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_uniform_layout_loads_with_stock_transformers(family, tiny_dirs, tmp_path):
    out = tmp_path / "out"
    report = run_prune(tiny_dirs[family], out, ratio=0.25, method="random", layout="uniform")
    config = json.loads((out / "config.json").read_text())
    assert "auto_map" not in config and config["model_type"] == family
    assert not list(out.glob("*.py"))
    assert out.stat().st_mode & 0o777 == 0o755
    assert {path.name: path.stat().st_mode & 0o777 for path in out.iterdir()} == {
        path.name: 0o644 for path in out.iterdir()
    }, "every file readable by the runner's other users (shards are written 0600 by default)"
    model = AutoModelForCausalLM.from_pretrained(out)
    widths = {(len(lp["kept_heads"]), len(lp["kept_channels"])) for lp in report["layers"]}
    assert len(widths) == 1
    assert model.config.intermediate_size == widths.pop()[1]


def test_global_layout_ships_code_and_per_block_widths(tiny_dirs, tmp_path):
    out = tmp_path / "out"
    report = run_prune(tiny_dirs["qwen2"], out, ratio=0.3, method="random", layout="global")
    assert report["layout"] == "global"
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "zhprune_qwen2"
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_zhprune.ZhpruneQwen2ForCausalLM"
    widths = [(b["num_attention_heads"], b["intermediate_size"]) for b in config["zhprune_layers"]]
    assert len(set(widths)) > 1
    assert (out / "modeling_zhprune.py").exists()
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    with pytest.raises(ValueError):
        AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    for layer, width in zip(model.model.layers, widths, strict=True):
        assert layer.self_attn.q_proj.bias.shape[0] == width[0] * head_dim_of(model)
        assert layer.self_attn.o_proj.bias is None
        assert layer.mlp.down_proj.in_features == width[1]


def test_taylor_on_calibration_text_records_everything(tiny_dirs, calibration_file, tmp_path):
    out = tmp_path / "out"
    report = run_prune(
        tiny_dirs["qwen2"],
        out,
        ratio=0.2,
        method="taylor",
        calibration=str(calibration_file),
        language="en",
        num_samples=4,
        seq_len=16,
        seed=3,
    )
    saved = json.loads((out / REPORT_NAME).read_text())
    assert saved == json.loads(json.dumps(report))
    calibration = saved["calibration"]
    assert calibration["num_samples"] == 4 and calibration["seq_len"] == 16 and calibration["seed"] == 3
    assert calibration["language"] == "en" and len(calibration["token_hash"]) == 64
    assert saved["method"] == "taylor" and saved["tool"]["name"] == "zhprune-hub"
    assert saved["timings"]["collect_s"] > 0 and saved["memory"]["peak_rss_mb"] > 0
    assert len(saved["block_importance"]) == 4
    before, after = saved["parameters"]["before"]["total"], saved["parameters"]["after"]["total"]
    assert before - after >= saved["parameters"]["target_removed"]
    again = run_prune(
        tiny_dirs["qwen2"],
        tmp_path / "again",
        ratio=0.2,
        method="taylor",
        calibration=str(calibration_file),
        language="en",
        num_samples=4,
        seq_len=16,
        seed=3,
    )
    assert again["calibration"]["token_hash"] == calibration["token_hash"]
    assert again["layers"] == saved["layers"]


def _rewrite_tensor(directory: Path, name: str, transform) -> None:
    from safetensors.torch import load_file, save_file

    path = directory / "model.safetensors"
    tensors = load_file(path)
    tensors[name] = transform(tensors[name]).contiguous()
    save_file(tensors, path, metadata={"format": "pt"})


def test_verify_catches_truncated_qkv_bias(tiny_dirs, tmp_path):
    out = tmp_path / "out"
    run_prune(tiny_dirs["qwen2"], out, ratio=0.2, method="random", layout="uniform")
    assert verify_checkpoint(out).ok
    _rewrite_tensor(out, "model.layers.2.self_attn.q_proj.bias", lambda t: t[:-16])
    result = verify_checkpoint(out)
    failed = {check.name: check.detail for check in result.checks if not check.ok}
    assert "biases" in failed and "model.layers.2.self_attn.q_proj.bias" in failed["biases"]


def test_verify_catches_config_that_disagrees_with_weights(tiny_dirs, tmp_path):
    out = tmp_path / "out"
    run_prune(tiny_dirs["llama"], out, ratio=0.2, method="random", layout="global")
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    config["zhprune_layers"][1]["intermediate_size"] += 1
    config_path.write_text(json.dumps(config))
    result = verify_checkpoint(out)
    failed = {check.name: check.detail for check in result.checks if not check.ok}
    assert "model.layers.1.mlp" in failed["shapes"]
    assert not result.ok


def test_verify_catches_missing_bias_against_base(tiny_dirs, tmp_path):
    out = tmp_path / "out"
    run_prune(tiny_dirs["qwen2"], out, ratio=0.2, method="random", layout="uniform")
    from safetensors.torch import load_file, save_file

    tensors = load_file(out / "model.safetensors")
    del tensors["model.layers.0.self_attn.k_proj.bias"]
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    failed = {c.name: c.detail for c in verify_checkpoint(out, base=str(tiny_dirs["qwen2"])).checks if not c.ok}
    assert "k_proj.bias is missing" in failed["biases"]


def test_unreachable_ratio_is_refused_in_one_sentence(tiny_dirs, tmp_path):
    with pytest.raises(RatioError, match=r"at most [\d,]+ can go") as info:
        run_prune(tiny_dirs["llama"], tmp_path / "out", ratio=0.95, method="magnitude")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_unsupported_architecture_lists_supported(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.tiny_models import tiny_tokenizer

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=320)).save_pretrained(tmp_path / "gpt2")
    tiny_tokenizer().save_pretrained(tmp_path / "gpt2")
    with pytest.raises(UnsupportedArchitectureError, match="llama, mistral, qwen2, qwen3"):
        run_prune(tmp_path / "gpt2", tmp_path / "out", ratio=0.1, method="magnitude")


def test_existing_output_is_replaced_only_when_this_tool_wrote_it(tiny_dirs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ZhpruneError, match="--overwrite"):
        run_prune(tiny_dirs["llama"], out, ratio=0.1, method="magnitude")
    with pytest.raises(ZhpruneError, match="was not written by zhprune-hub"):
        run_prune(tiny_dirs["llama"], out, ratio=0.1, method="magnitude", overwrite=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    ours = tmp_path / "ours"
    run_prune(tiny_dirs["llama"], ours, ratio=0.1, method="magnitude")
    assert json.loads((ours / OUTPUT_MARKER).read_text())["state"] == "complete"
    run_prune(tiny_dirs["llama"], ours, ratio=0.2, method="magnitude", overwrite=True)
    assert json.loads((ours / REPORT_NAME).read_text())["ratio"] == 0.2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_bad_input_is_one_sentence(tiny_dirs, tmp_path):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "zhprune_hub", *args], capture_output=True, text=True, timeout=120)

    bad_ratio = cli("prune", str(tiny_dirs["llama"]), "-o", str(tmp_path / "x"), "--ratio", "1.5")
    assert bad_ratio.returncode == 2
    assert "Traceback" not in bad_ratio.stderr and "--ratio" in bad_ratio.stderr
    missing = cli("prune", str(tmp_path / "nope" / "model"), "-o", str(tmp_path / "y"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "neither an existing directory nor a Hub id" in missing.stderr
    ok = cli(
        "prune",
        str(tiny_dirs["qwen3"]),
        "-o",
        str(tmp_path / "z"),
        "--ratio",
        "0.1",
        "--method",
        "magnitude",
        "--tau",
        "None",
        "--json",
    )
    assert ok.returncode == 0, ok.stderr
    payload = json.loads(ok.stdout)
    assert payload["report"]["family"] == "qwen3"
    shutil.rmtree(tmp_path / "z")


def test_global_layout_generates_with_kv_cache(tiny_dirs, tmp_path):
    """Per-block KV head counts must work with the KV cache: cached greedy decoding equals full forwards."""
    out = tmp_path / "out"
    run_prune(tiny_dirs["llama"], out, ratio=0.1, method="random", layout="global", head_unit="group")
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    kv_heads = {layer.self_attn.k_proj.out_features for layer in model.model.layers}
    assert len(kv_heads) > 1, "the plan should leave blocks with different KV widths"
    prompt = IDS[:, :5]
    with torch.no_grad():
        cached = model.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True)
        sequence = prompt
        for _ in range(6):
            next_id = model(input_ids=sequence, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            sequence = torch.cat([sequence, next_id], dim=1)
    assert torch.equal(cached, sequence)
