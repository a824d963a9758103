"""The sequential engine on tiny models: one block resident, block-wise taylor, compensated cuts, repair."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.tiny_models import TEXT, make_tiny_checkpoint
from zhprune_hub.outputs import OUTPUT_MARKER
from zhprune_hub.prune import streaming
from zhprune_hub.prune.collect import collect
from zhprune_hub.prune.families import family_for
from zhprune_hub.prune.importance import prunable_parameters, taylor_scores
from zhprune_hub.prune.streaming import SafetensorsSource, Streamer, empty_model
from zhprune_hub.prune.structure import decoder_layers, head_dim_of
from zhprune_hub.prune.traversal import Traversal
from zhprune_hub.pruning import REPORT_NAME, PruneConfig, prune_model
from zhprune_hub.verify import verify_checkpoint

IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 8, 120, 64, 33, 2]])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("seq")
    return {family: make_tiny_checkpoint(family, root / family, layers=5) for family in ("llama", "qwen2")}


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text("\n\n".join([TEXT] * 12))
    return path


def prune(source: Path, output: Path, calibration: Path, **options) -> dict:
    settings = dict(calibration=str(calibration), language="en", num_samples=8, seq_len=24, device="cpu")
    settings.update(options)
    return prune_model(PruneConfig(model=str(source), output=output, **settings), log=lambda _m: None).report


def test_only_one_decoder_block_is_ever_resident(tiny, calibration_file, tmp_path, monkeypatch):
    resident: set[int] = set()
    most = [0]
    load, release = Streamer.load, Streamer.release

    def spy_load(self, module, prefix):
        load(self, module, prefix)
        if ".layers." in f"{prefix}.":
            resident.add(id(module))
            most[0] = max(most[0], len(resident))

    def spy_release(module):
        resident.discard(id(module))
        release(module)

    monkeypatch.setattr(Streamer, "load", spy_load)
    monkeypatch.setattr(Streamer, "release", staticmethod(spy_release))
    report = prune(tiny["qwen2"], tmp_path / "out", calibration_file, ratio=0.2)
    assert report["method"] == "obs" and most[0] == 1 and not resident


@pytest.mark.parametrize("gradient_tokens", [1024, 12], ids=["whole-batches", "one-window-at-a-time"])
def test_blockwise_taylor_scores_equal_whole_model_gradients(tiny, calibration_file, monkeypatch, gradient_tokens):
    """Taylor scores gathered block by block (gradients of one block at a time) equal whole-model autograd,
    also when each batch's recomputation with gradients runs one window at a time (a shape the
    traversal first meets there, so its block arguments are captured then)."""
    monkeypatch.setattr("zhprune_hub.prune.collect._HEAD_CHUNK", 5)  # the loss in several head calls
    monkeypatch.setattr("zhprune_hub.prune.collect.GRADIENT_BATCH_TOKENS", gradient_tokens)
    from tests.tiny_models import tiny_tokenizer

    source = tiny["llama"]
    tokenizer = tiny_tokenizer()
    ids = torch.tensor(tokenizer(TEXT)["input_ids"][:48]).reshape(4, 12)

    model = AutoModelForCausalLM.from_pretrained(source).eval()
    spec = family_for(model.config.model_type)
    head_dim = head_dim_of(model)
    for p in model.parameters():
        p.requires_grad_(False)
    layers = decoder_layers(model, spec)
    prunable = [p for layer in layers for p in prunable_parameters(layer, spec)]
    for p in prunable:
        p.requires_grad_(True)
    for start in range(0, 4, 2):  # two batches: gradients of the per-batch mean loss, summed
        batch = ids[start : start + 2]
        model(input_ids=batch, labels=batch, use_cache=False).loss.backward()
    expected = [taylor_scores(layer, spec, head_dim, {id(p): p.grad for p in layer.parameters()}) for layer in layers]

    skeleton = empty_model(model.config, trust_remote_code=False)
    streamer = Streamer(skeleton, SafetensorsSource(source), device=torch.device("cpu"), dtype=torch.float32)
    traversal = Traversal(skeleton, spec, streamer, batch_size=2)
    evidence = collect(
        traversal, "taylor", traversal.embed(ids), head_unit="group", head_dim=head_dim, seed=0,
        scratch=Path("/nonexistent"), labels=ids,
    )  # fmt: skip
    for got, want in zip((b.scores for b in evidence.blocks), expected, strict=True):
        for field in ("heads", "kv_heads", "channels"):
            torch.testing.assert_close(getattr(got, field), getattr(want, field), rtol=1e-4, atol=1e-7)


def test_obs_evidence_does_not_depend_on_the_gradient_batch(tiny, monkeypatch):
    """Fisher diagonals and cost curves are sums over tokens: splitting the recomputation changes nothing."""
    from tests.tiny_models import tiny_tokenizer

    source = tiny["qwen2"]
    ids = torch.tensor(tiny_tokenizer()(TEXT)["input_ids"][:48]).reshape(4, 12)
    config = AutoModelForCausalLM.from_pretrained(source).config
    spec = family_for(config.model_type)

    def evidence():
        skeleton = empty_model(config, trust_remote_code=False)
        streamer = Streamer(skeleton, SafetensorsSource(source), device=torch.device("cpu"), dtype=torch.float32)
        traversal = Traversal(skeleton, spec, streamer, batch_size=4)
        return collect(
            traversal, "obs", traversal.embed(ids), head_unit="group", head_dim=head_dim_of(skeleton), seed=0,
            scratch=Path("/nonexistent"), labels=ids,
        ).blocks  # fmt: skip

    whole = evidence()
    monkeypatch.setattr("zhprune_hub.prune.collect.GRADIENT_BATCH_TOKENS", 12)
    split = evidence()
    for a, b in zip(whole, split, strict=True):
        torch.testing.assert_close(a.fisher_mlp, b.fisher_mlp, rtol=1e-5, atol=1e-12)
        torch.testing.assert_close(a.fisher_attention, b.fisher_attention, rtol=1e-5, atol=1e-12)
        assert a.channel_curve.costs == pytest.approx(b.channel_curve.costs, rel=1e-4)
        assert a.head_curve.costs == pytest.approx(b.head_curve.costs, rel=1e-4)


def test_stream_correction_is_fitted_towards_the_dense_models_own_stream(tiny, calibration_file, tmp_path, monkeypatch):
    """Each block's repair sees the dense model's hidden states at that block (not the pruned stream's), and
    the report says how much of the accumulated error the repairs undid."""
    from zhprune_hub.prune import engine

    windows: list[torch.Tensor] = []
    embed = Traversal.embed

    def spy_embed(self, input_ids):
        windows.append(input_ids.clone())
        return embed(self, input_ids)

    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    cut_block = engine.cut_block

    def spy_cut(traversal, index, block, states, decision, **options):
        seen[index] = (torch.cat(options["dense_states"]), torch.cat(states))
        return cut_block(traversal, index, block, states, decision, **options)

    monkeypatch.setattr(Traversal, "embed", spy_embed)
    monkeypatch.setattr(engine, "cut_block", spy_cut)
    report = prune(tiny["llama"], tmp_path / "out", calibration_file, ratio=0.25, correction=0.5)

    model = AutoModelForCausalLM.from_pretrained(tiny["llama"]).eval()
    with torch.no_grad():
        hidden = model(input_ids=windows[-1], output_hidden_states=True).hidden_states
    assert sorted(seen) == list(range(5))
    for index, (dense, pruned) in seen.items():
        torch.testing.assert_close(dense, hidden[index], rtol=1e-4, atol=1e-5)
        if index > 0:
            assert not torch.allclose(pruned, hidden[index], atol=1e-3), "the pruned stream must differ"
    assert report["repair"]["stream_correction"] == 0.5
    assert report["options"]["correction"] == 0.5
    assert verify_checkpoint(tmp_path / "out").ok


def test_spooled_states_give_the_same_scores(tiny, calibration_file, tmp_path, monkeypatch):
    """With a zero memory budget every block's states go to disk and back; the plan must not change."""
    in_memory = prune(tiny["llama"], tmp_path / "a", calibration_file, ratio=0.25, method="taylor")
    from zhprune_hub.prune import spool

    original = spool.StateSpool.__init__

    def zero_budget(self, scratch, *, expected_bytes, memory_budget=0):
        original(self, scratch, expected_bytes=expected_bytes, memory_budget=0)
        assert self.on_disk

    monkeypatch.setattr(spool.StateSpool, "__init__", zero_budget)
    on_disk = prune(tiny["llama"], tmp_path / "b", calibration_file, ratio=0.25, method="taylor")
    assert on_disk["layers"] == in_memory["layers"]
    assert not list((tmp_path / "b").rglob("states-*")) and not list((tmp_path / "b").rglob("batch-*.pt"))


def test_pass_two_states_in_files_give_the_same_checkpoint(tiny, calibration_file, tmp_path, monkeypatch):
    """Past the memory budget pass 2 keeps the dense stream and o_proj's inputs in files; nothing else may change."""
    from safetensors.torch import load_file

    from zhprune_hub.prune import spool

    options = dict(ratio=0.4, correction=0.5)  # blocks 3 and 4 lose a KV group, the others keep every head
    in_memory = prune(tiny["llama"], tmp_path / "a", calibration_file, **options)
    kinds: list[str] = []
    original = spool.BatchFiles.__init__

    def recording(self, directory, batches=()):
        kinds.append(Path(directory).name)
        original(self, directory, batches)

    monkeypatch.setattr(spool.BatchFiles, "__init__", recording)
    monkeypatch.setattr(spool, "PASS_TWO_MEMORY_BUDGET", 0)
    spilled = prune(tiny["llama"], tmp_path / "b", calibration_file, **options)
    assert {"dense", "head-inputs"} <= set(kinds)
    assert spilled["layers"] == in_memory["layers"]
    names = sorted(p.name for p in (tmp_path / "a").glob("*.safetensors"))
    assert names == sorted(p.name for p in (tmp_path / "b").glob("*.safetensors"))
    for name in names:
        a, b = load_file(tmp_path / "a" / name), load_file(tmp_path / "b" / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert not list((tmp_path / "b").rglob("batch-*.pt"))
    assert not (tmp_path / "b" / ".zhprune-scratch").exists()


@pytest.mark.parametrize("layout", ["global", "uniform"])
@pytest.mark.parametrize("head_unit", ["group", "query", "none"])
def test_compensated_default_meets_the_target_and_verifies(tiny, calibration_file, tmp_path, layout, head_unit):
    out = tmp_path / "out"
    report = prune(tiny["qwen2"], out, calibration_file, ratio=0.3, layout=layout, head_unit=head_unit)
    assert report["parameters"]["removed_fraction_of_total"] >= 0.3
    assert report["repair"]["enabled"] is True
    assert verify_checkpoint(out, base=str(tiny["qwen2"])).ok
    if head_unit == "none":  # attention untouched: every block keeps all its heads
        base_heads = json.loads((tiny["qwen2"] / "config.json").read_text())["num_attention_heads"]
        assert {lp["num_heads"] for lp in report["layers"] if not lp["removed"]} == {base_heads}
    if report["layout"] == "uniform":
        assert len({(lp["num_heads"], lp["intermediate_size"]) for lp in report["layers"]}) == 1


def test_repair_lowers_every_block_error_and_is_what_the_checkpoint_holds(tiny, calibration_file, tmp_path):
    out = tmp_path / "out"
    report = prune(tiny["llama"], out, calibration_file, ratio=0.3, method="taylor")
    for layer in report["layers"]:
        down = layer["repair"]["down_proj"]
        assert down["error_repaired"] <= down["error_cut"]
    assert any(layer["repair"]["down_proj"]["error_repaired"] < 0.9 * layer["repair"]["down_proj"]["error_cut"]
               for layer in report["layers"])  # fmt: skip
    unrepaired = tmp_path / "plain"
    plain = prune(tiny["llama"], unrepaired, calibration_file, ratio=0.3, method="taylor", repair=False)
    assert plain["layers"][0]["kept_channels"] == report["layers"][0]["kept_channels"]
    assert plain["repair"]["enabled"] is False

    # The repaired checkpoint differs from the plain cut only in o_proj/down_proj weights.
    from safetensors.torch import load_file

    repaired, sliced = load_file(out / "model.safetensors"), load_file(unrepaired / "model.safetensors")
    assert repaired.keys() == sliced.keys()
    changed = {name for name in repaired if not torch.equal(repaired[name], sliced[name])}
    assert changed and all(name.endswith(("o_proj.weight", "down_proj.weight")) for name in changed)


def test_sharded_output_has_an_index_and_reloads(tiny, calibration_file, tmp_path):
    out = tmp_path / "out"
    prune(tiny["qwen2"], out, calibration_file, ratio=0.2, max_shard_size="40KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 1 and set(index["weight_map"].values()) == set(shards)
    leftovers = [p.name for p in out.glob(".zhprune-*") if p.name != OUTPUT_MARKER]  # the marker says "ours"
    assert not (out / streaming.__name__).exists() and not leftovers
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert torch.isfinite(model(input_ids=IDS).logits).all()
    assert json.loads((out / REPORT_NAME).read_text())["parameters"]["after"]["total"] == sum(
        p.numel() for p in model.parameters()
    )


def test_verify_checks_slices_against_the_base_without_loading_either_model(tiny, calibration_file, tmp_path,
                                                                            monkeypatch):  # fmt: skip
    out = tmp_path / "out"
    prune(tiny["qwen2"], out, calibration_file, ratio=0.25, method="taylor")

    def refuse(*args, **kwargs):
        raise AssertionError("verify must not load a whole model")

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", refuse)
    checks = {c.name: c for c in verify_checkpoint(out, base=str(tiny["qwen2"])).checks}
    assert checks["plan"].ok and "re-fitted" in checks["plan"].detail
    assert checks["reload"].ok and checks["base-counts"].ok

    from safetensors.torch import load_file, save_file

    tensors = load_file(out / "model.safetensors")
    tensors["model.layers.1.self_attn.k_proj.bias"][0] += 1.0
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    checks = {c.name: c for c in verify_checkpoint(out, base=str(tiny["qwen2"])).checks}
    assert not checks["plan"].ok and "model.layers.1.self_attn.k_proj.bias" in checks["plan"].detail


@pytest.mark.parametrize(("method", "layout"), [("obs", "global"), ("taylor", "uniform")])
def test_round_to_keeps_widths_aligned_and_records_what_it_changed(tiny, calibration_file, tmp_path, method, layout):
    out = tmp_path / "out"
    report = prune(tiny["llama"], out, calibration_file, ratio=0.3, method=method, layout=layout, round_to=32, tau=100)
    assert report["parameters"]["removed_fraction_of_total"] >= 0.3
    widths = [lp["intermediate_size"] for lp in report["layers"] if not lp["removed"]]
    assert widths and all(w % 32 == 0 and w > 0 for w in widths)
    rounding = report["rounding"]
    assert report["round_to"] == 32 and rounding["round_to"] == 32
    assert rounding["intermediate_size"] == [lp["intermediate_size"] for lp in report["layers"]]
    assert len(rounding["intermediate_size_unrounded"]) == len(widths)
    assert any("--round-to 32" in note for note in report["notes"])
    assert verify_checkpoint(out, base=str(tiny["llama"])).ok


def test_round_to_that_divides_no_width_is_refused_before_any_output(tiny, calibration_file, tmp_path):
    from zhprune_hub.errors import RatioError

    with pytest.raises(RatioError, match="--round-to 40 needs every MLP width to be a multiple of 40"):
        prune(tiny["llama"], tmp_path / "out", calibration_file, round_to=40)
    assert not (tmp_path / "out").exists()
