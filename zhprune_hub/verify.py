"""Structural and numerical checks of a pruned checkpoint, read from the files on disk.

Shapes are read from the safetensors headers (no weights loaded) and compared with what the
(per-block) config promises, for every block and every projection: not just block 0.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from zhprune_hub.errors import ModelSourceError
from zhprune_hub.prune.families import FamilySpec, family_for

#: Keys every block check reads from config.json.
_CONFIG_KEYS = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "vocab_size")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class VerifyResult:
    directory: str
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"directory": self.directory, "ok": self.ok, "checks": [asdict(c) for c in self.checks]}


def read_shapes(directory: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape for every safetensors file in the directory (headers only).

    Raises:
        ModelSourceError: no safetensors file, or one whose header is damaged (e.g. a truncated file).
    """
    from safetensors import safe_open

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ModelSourceError(f"{directory} holds no .safetensors files; verify needs a saved checkpoint.")
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 (safe_open has no __iter__)
                    shapes[name] = tuple(handle.get_slice(name).get_shape())
        except Exception as exc:  # safetensors raises its own SafetensorError (not exported) or OSError
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelSourceError(
                f"{file} is damaged ({reason}); it is truncated or not a safetensors file, so write or download "
                "it again."
            ) from None
    return shapes


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"{path} is damaged ({exc}); write or download it again.") from None


@dataclass(frozen=True)
class BaseLayout:
    """What verify compares a pruned checkpoint with."""

    source: Any
    shapes: dict[str, tuple[int, ...]]
    config: dict[str, Any]
    #: Parameter count when the base had to be loaded anyway (GGUF), else None.
    parameters: int | None = None


def base_layout(base: str, *, gguf_file: str | None = None) -> BaseLayout:
    """Shapes and config of a base model, from safetensors headers or, for a GGUF file, its weights.

    A GGUF base has no safetensors headers to read: it is dequantised once and its state dict gives
    the shapes under transformers' names.
    """
    from zhprune_hub.loading import load_model, read_config, resolve_source

    source = resolve_source(base, gguf_file=gguf_file)
    if not source.gguf_file:
        return BaseLayout(source, read_shapes(source.local_dir), read_config(source.local_dir))
    model, _ = load_model(source, device="cpu")
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    layout = BaseLayout(source, shapes, model.config.to_dict(), sum(p.numel() for p in model.parameters()))
    del model
    return layout


def block_widths(config: dict[str, Any]) -> list[dict[str, int]]:
    """Widths every block should have, from the per-block list (global) or the top-level keys (uniform)."""
    per_block = config.get("zhprune_layers")
    if per_block:
        return [dict(b) for b in per_block]
    keys = ("num_attention_heads", "num_key_value_heads", "intermediate_size")
    kv = config.get("num_key_value_heads") or config["num_attention_heads"]
    uniform = {keys[0]: config["num_attention_heads"], keys[1]: kv, keys[2]: config["intermediate_size"]}
    return [dict(uniform) for _ in range(config["num_hidden_layers"])]


def _expected_bias(spec: FamilySpec, config: dict[str, Any], projection: str) -> bool | None:
    """Whether the family's code builds this projection with a bias (None: the config does not say)."""
    if spec.name == "qwen2":
        # Qwen2Attention hard-codes bias=True on q/k/v and False on o_proj; its MLP has none.
        return projection in spec.head_projections
    attention = (*spec.head_projections, spec.o_proj)
    if projection in attention:
        return bool(config.get("attention_bias", False))
    return bool(config.get("mlp_bias", False))


def _block_checks(
    spec: FamilySpec,
    config: dict[str, Any],
    shapes: dict[str, tuple[int, ...]],
    base_shapes: dict[str, tuple[int, ...]] | None,
    base_index: list[int],
) -> list[Check]:
    hidden = config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    checks: list[Check] = []
    widths = block_widths(config)
    prefix = spec.layers_path
    shape_problems: list[str] = []
    bias_problems: list[str] = []
    gqa_problems: list[str] = []
    for i, width in enumerate(widths):
        heads, kv, inter = width["num_attention_heads"], width["num_key_value_heads"], width["intermediate_size"]
        if kv < 1 or heads % kv:
            gqa_problems.append(f"block {i}: {heads} query heads over {kv} KV heads")
        attn = f"{prefix}.{i}.{spec.attention}"
        mlp = f"{prefix}.{i}.{spec.mlp}"
        expected = {
            f"{attn}.{spec.q_proj}": (heads * head_dim, hidden),
            f"{attn}.{spec.k_proj}": (kv * head_dim, hidden),
            f"{attn}.{spec.v_proj}": (kv * head_dim, hidden),
            f"{attn}.{spec.o_proj}": (hidden, heads * head_dim),
            f"{mlp}.{spec.gate_proj}": (inter, hidden),
            f"{mlp}.{spec.up_proj}": (inter, hidden),
            f"{mlp}.{spec.down_proj}": (hidden, inter),
        }
        for module, shape in expected.items():
            actual = shapes.get(f"{module}.weight")
            if actual != shape:
                shape_problems.append(f"{module}.weight is {actual}, config says {shape}")
            projection = module.rsplit(".", 1)[1]
            bias = shapes.get(f"{module}.bias")
            if base_shapes is not None:
                base_module = module.replace(f"{prefix}.{i}.", f"{prefix}.{base_index[i]}.", 1)
                should_have = f"{base_module}.bias" in base_shapes
            else:
                should_have = _expected_bias(spec, config, projection)
            if should_have is not None and (bias is not None) != should_have:
                state = "missing" if should_have else "unexpected"
                bias_problems.append(f"{module}.bias is {state}")
            if bias is not None and actual is not None and bias != (actual[0],):
                bias_problems.append(f"{module}.bias has {bias}, its weight has {actual[0]} output rows")
        for norm in ("input_layernorm", "post_attention_layernorm"):
            norm_shape = shapes.get(f"{prefix}.{i}.{norm}.weight")
            if norm_shape is not None and norm_shape != (hidden,):
                shape_problems.append(f"{prefix}.{i}.{norm}.weight is {norm_shape}, hidden size is {hidden}")
    extra_blocks = {
        name.split(".")[2]
        for name in shapes
        if name.startswith(f"{prefix}.") and int(name.split(".")[2]) >= len(widths)
    }
    if extra_blocks:
        shape_problems.append(f"weights for blocks {sorted(extra_blocks)} exceed num_hidden_layers={len(widths)}")
    checks.append(Check("shapes", not shape_problems, "; ".join(shape_problems[:5]) or f"{len(widths)} blocks match"))
    checks.append(Check("biases", not bias_problems, "; ".join(bias_problems[:5]) or "present where expected, sized"))
    checks.append(Check("gqa", not gqa_problems, "; ".join(gqa_problems) or "heads divisible by KV heads everywhere"))
    return checks


def _embedding_check(config: dict[str, Any], shapes: dict[str, tuple[int, ...]], base_config: dict | None) -> Check:
    vocab, hidden = config["vocab_size"], config["hidden_size"]
    embed = shapes.get("model.embed_tokens.weight")
    problems = []
    if embed != (vocab, hidden):
        problems.append(f"embed_tokens is {embed}, expected {(vocab, hidden)}")
    head = shapes.get("lm_head.weight")
    if head is not None and head != (vocab, hidden):
        problems.append(f"lm_head is {head}, expected {(vocab, hidden)}")
    if head is None and not config.get("tie_word_embeddings", False):
        problems.append("lm_head.weight is missing and embeddings are not tied")
    if base_config is not None:
        for key in ("vocab_size", "hidden_size"):
            if base_config.get(key) != config.get(key):
                problems.append(f"{key} changed from {base_config.get(key)} to {config.get(key)}")
    return Check("embeddings", not problems, "; ".join(problems) or f"vocab {vocab}, hidden size {hidden} kept")


def _tokenizer_check(directory: Path, base_source: Any) -> Check:
    from zhprune_hub.loading import ModelSource, load_tokenizer

    try:
        tokenizer = load_tokenizer(ModelSource(reference=str(directory), local_dir=directory))
    except Exception as exc:
        return Check("tokenizer", False, f"does not load: {str(exc).splitlines()[0]}")
    if base_source is None:
        return Check("tokenizer", True, f"loads, {len(tokenizer)} tokens")
    base = load_tokenizer(base_source)
    probe = "Pruning keeps the tokenizer. 剪枝后分词器不变。"
    same = base.get_vocab() == tokenizer.get_vocab() and base(probe)["input_ids"] == tokenizer(probe)["input_ids"]
    return Check("tokenizer", same, "identical to the base" if same else "differs from the base tokenizer")


def _reload_check(directory: Path) -> tuple[Check, int | None]:
    """Build the model from its config and run a probe through it one block at a time.

    Every tensor is placed into the module the config builds (a shape that disagrees fails here),
    and the probe's logits must be finite. Streaming keeps this possible for checkpoints larger
    than memory; only one block is resident at a time.
    """
    import torch
    from transformers import AutoConfig

    from zhprune_hub.loading import ModelSource, trust_for
    from zhprune_hub.prune.engine import streamed_logits
    from zhprune_hub.prune.families import family_for
    from zhprune_hub.prune.streaming import SafetensorsSource, Streamer, empty_model
    from zhprune_hub.prune.traversal import Traversal

    try:
        trust = trust_for(ModelSource(reference=str(directory), local_dir=directory), None)
        config = AutoConfig.from_pretrained(directory, trust_remote_code=trust)
        skeleton = empty_model(config, trust_remote_code=trust)
        params = sum(p.numel() for p in skeleton.parameters())  # before streaming unties a tied head
        streamer = Streamer(skeleton, SafetensorsSource(directory), device=torch.device("cpu"), dtype=torch.float32)
        traversal = Traversal(skeleton, family_for(config.model_type), streamer, batch_size=1)
        ids = torch.arange(1, 17).unsqueeze(0) % config.vocab_size
        logits = streamed_logits(traversal, ids)
    except Exception as exc:
        return Check("reload", False, f"does not load: {str(exc).splitlines()[0]}"), None
    finite = bool(torch.isfinite(logits).all())
    detail = (
        "every tensor fits the module its config builds; forward pass finite" if finite else "forward pass has NaN/inf"
    )
    return Check("reload", finite, detail), params


def stored_parameter_count(directory: Path) -> int:
    """Parameters a checkpoint stores, from the safetensors headers (a tied head is stored once)."""
    import math

    return sum(math.prod(shape) for shape in read_shapes(directory).values())


def _plan_check(directory: Path, report: dict[str, Any], spec: FamilySpec, base_dir: Path) -> Check:
    """Every sliced tensor equals the base's rows/columns the report says were kept.

    q/k/v and gate/up rows (and their biases) are copied, never changed; o_proj/down_proj columns
    are copied too unless the report says they were repaired (re-fitted), in which case only their
    shapes were checked above. Reads tensor slices from both checkpoints, never a whole model.
    """
    import torch

    from zhprune_hub.prune.streaming import SafetensorsSource
    from zhprune_hub.prune.surgery import head_rows

    if not SafetensorsSource.available(base_dir):
        return Check("plan", True, "skipped: the base has no safetensors to compare slices with")
    pruned, base = SafetensorsSource(directory), SafetensorsSource(base_dir)
    repaired = bool((report.get("repair") or {}).get("enabled"))
    head_dim = json.loads((directory / "config.json").read_text()).get("head_dim")
    problems: list[str] = []
    new_index = 0
    for layer in report["layers"]:
        if layer["removed"]:
            continue
        q_rows = head_rows(layer["kept_heads"], head_dim, torch.device("cpu"))
        kv_rows = head_rows(layer["kept_kv_heads"], head_dim, torch.device("cpu"))
        channels = torch.tensor(layer["kept_channels"], dtype=torch.long)
        attn, mlp = f"{spec.attention}", f"{spec.mlp}"
        rows = {
            f"{attn}.{spec.q_proj}": q_rows,
            f"{attn}.{spec.k_proj}": kv_rows,
            f"{attn}.{spec.v_proj}": kv_rows,
            f"{mlp}.{spec.gate_proj}": channels,
            f"{mlp}.{spec.up_proj}": channels,
        }
        cols = {} if repaired else {f"{attn}.{spec.o_proj}": q_rows, f"{mlp}.{spec.down_proj}": channels}
        for module, index in [
            *[(m, ("rows", i)) for m, i in rows.items()],
            *[(m, ("cols", i)) for m, i in cols.items()],
        ]:
            for kind in ("weight", "bias"):
                name_new = f"{spec.layers_path}.{new_index}.{module}.{kind}"
                name_base = f"{spec.layers_path}.{layer['index']}.{module}.{kind}"
                if name_new not in pruned.names() or name_base not in base.names():
                    continue
                mine = pruned.get(name_new)
                theirs = base.get(name_base)
                axis, kept = index
                if kind == "bias" and axis == "cols":
                    expected = theirs
                else:
                    expected = theirs.index_select(0 if axis == "rows" else 1, kept)
                if mine.shape != expected.shape or not torch.equal(mine, expected.to(mine.dtype)):
                    problems.append(f"{name_new} is not the base's kept {axis}")
        new_index += 1
    detail = "; ".join(problems[:5]) or (
        "q/k/v and gate/up rows equal the base's kept rows"
        + ("; o_proj/down_proj re-fitted (repair)" if repaired else "; o_proj/down_proj columns too")
    )
    return Check("plan", not problems, detail)


def verify_checkpoint(directory: Path, *, base: str | None = None) -> VerifyResult:
    """Run every check; never raises for a bad checkpoint, it reports it."""
    from zhprune_hub.pruning import REPORT_NAME

    directory = Path(directory).expanduser().resolve()
    config_path = directory / "config.json"
    if not config_path.exists():
        raise ModelSourceError(f"{directory} has no config.json; pass the directory written by `zhprune-hub prune`.")
    config = _read_json(config_path)
    if not isinstance(config, dict):
        raise ModelSourceError(f"{config_path} is not a JSON object; it is not a model config.")
    spec = family_for(str(config.get("model_type", "?")))
    missing = [key for key in _CONFIG_KEYS if key not in config]
    if missing:
        raise ModelSourceError(f"{config_path} lacks {', '.join(missing)}; it is not a complete model config.")
    shapes = read_shapes(directory)
    report_path = directory / REPORT_NAME
    report = _read_json(report_path) if report_path.exists() else None
    kept = [lp["index"] for lp in report["layers"] if not lp["removed"]] if report else None

    base_shapes = base_config = base_source = based = None
    if base is not None:
        # The GGUF file the checkpoint was pruned from, when the base directory holds several.
        pruned_from = ((report or {}).get("options") or {}).get("gguf_file")
        based = base_layout(
            base, gguf_file=pruned_from if pruned_from and (Path(base) / pruned_from).is_file() else None
        )
        base_shapes, base_config, base_source = based.shapes, based.config, based.source
    base_index = kept if kept is not None else list(range(config["num_hidden_layers"]))

    checks = _block_checks(spec, config, shapes, base_shapes, base_index)
    checks.append(_embedding_check(config, shapes, base_config))
    checks.append(_tokenizer_check(directory, base_source))
    reload_check, loaded_params = _reload_check(directory)
    checks.append(reload_check)
    if report is not None and loaded_params is not None:
        recorded = report["parameters"]["after"]["total"]
        checks.append(
            Check(
                "report-counts",
                recorded == loaded_params,
                f"report says {recorded:,} parameters, files hold {loaded_params:,}",
            )
        )
    if report is not None and based is not None:
        base_params = based.parameters
        if base_params is None:
            base_params = stored_parameter_count(based.source.local_dir)
        recorded = report["parameters"]["before"]["total"]
        checks.append(
            Check("base-counts", recorded == base_params, f"report says {recorded:,}, base holds {base_params:,}")
        )
        checks.append(_plan_check(directory, report, spec, based.source.local_dir))
    return VerifyResult(directory=str(directory), checks=checks)
