"""Checks that run before any weights are loaded: a mistake costs a second, not a model load.

What can be known from the command line and from config.json (or a GGUF header) is checked here:
repo ids, the model's family and context length, the calibration spec, the device, and where the
output goes (writable, not the input, enough free space for the expected checkpoint size).
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zhprune_hub.errors import ModelSourceError, PlanError, UnsupportedArchitectureError, ZhpruneError

if TYPE_CHECKING:
    from zhprune_hub.loading import ModelSource
    from zhprune_hub.pruning import PruneConfig

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


# --- repo ids --------------------------------------------------------------------------------------------


def check_repo_id(
    repo_id: str,
    *,
    what: str = "--repo-id",
    where: str = "",
    owner_required: bool = True,
    error: type[ZhpruneError] = PlanError,
) -> str:
    """Validate a Hub repo id with huggingface_hub's own rules (and OWNER/NAME where we create repos).

    Args:
        what: how the message names the value (a flag, "Model", "Repo id").
        where: where it came from, e.g. " (from defaults.repo_id)".

    Raises:
        PlanError (or `error`): the id is malformed; the message quotes it and says how to write it.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise error(
            f"{what} {repo_id!r}{where} is not a valid Hub repo id ({_repo_id_rule(str(exc))}); write it as OWNER/NAME."
        ) from None
    if owner_required and repo_id.count("/") != 1:
        raise error(
            f"{what} {repo_id!r}{where} is not of the form OWNER/NAME (it names no owner); add your user or "
            "organisation name."
        )
    return repo_id


#: huggingface_hub's validator messages (by their start) -> the rule in our own words.
_REPO_ID_RULES = {
    "repo id must be in the form": "only one '/' is allowed",
    "repo id must use alphanumeric": "only letters, digits, '-', '_' and '.' are allowed, not at the start or end",
    "cannot have -- or ..": "'--' and '..' are not allowed",
    "repo_id cannot end by '.git'": "it may not end in '.git'",
}


def _repo_id_rule(message: str) -> str:
    lowered = message.strip().lower()
    for start, rule in _REPO_ID_RULES.items():
        if lowered.startswith(start):
            return rule
    return message.strip().split(". ")[0].rstrip(".")


# --- what config.json (or a GGUF header) says -------------------------------------------------------------


@dataclass(frozen=True)
class ModelFacts:
    """What is known about a model before loading it."""

    model_type: str
    max_position_embeddings: int | None
    #: Total parameters (a tied head counted once), estimated from the config; None when unknown.
    parameters: int | None
    #: dtype the weights are stored in (config.json), or "gguf".
    stored_dtype: str
    #: Width of the hidden states and number of blocks (what the calibration states take); None when unknown.
    hidden_size: int | None = None
    num_layers: int | None = None


def _config(source: ModelSource) -> dict[str, Any]:
    path = source.local_dir / "config.json"
    if not path.is_file():
        raise ModelSourceError(f"{source.reference} has no config.json; pass a Hugging Face checkpoint directory.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"{path} is not valid JSON ({exc}); restore the checkpoint's config.json.") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ModelSourceError(f"{path} has no model_type; it is not a transformers model config.")
    return config


def estimate_parameters(config: dict[str, Any]) -> int | None:
    """Parameter count of a decoder-only config (llama-style blocks); None when keys are missing."""
    try:
        hidden, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
        vocab, inter = int(config["vocab_size"]), int(config["intermediate_size"])
        heads = int(config["num_attention_heads"])
        kv = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or hidden // heads)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    attention = hidden * head_dim * (2 * heads + 2 * kv)
    block = attention + 3 * hidden * inter + 2 * hidden
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return layers * block + embeddings + hidden


def _gguf_facts(source: ModelSource) -> ModelFacts:
    from gguf import GGUFReader
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = source.local_dir / str(source.gguf_file)
    try:
        parsed = load_gguf_checkpoint(str(path), return_tensors=False)["config"]
        parameters = sum(int(tensor.n_elements) for tensor in GGUFReader(str(path)).tensors)
    except ValueError as exc:
        architecture = re.search(r"architecture (\S+) is not supported", str(exc))
        if architecture:
            raise _unsupported(architecture.group(1)) from None
        raise ModelSourceError(
            f"GGUF file {path} cannot be read ({str(exc).rstrip('.')}); it is damaged or incomplete, so download "
            "or convert it again."
        ) from None
    except (OSError, KeyError, IndexError, struct.error) as exc:
        raise ModelSourceError(
            f"GGUF file {path} is damaged or not a GGUF file ({type(exc).__name__}); download or convert it again."
        ) from None
    return ModelFacts(
        model_type=str(parsed.get("model_type")),
        max_position_embeddings=parsed.get("max_position_embeddings"),
        parameters=parameters,
        stored_dtype="gguf",
        hidden_size=_int_or_none(parsed.get("hidden_size")),
        num_layers=_int_or_none(parsed.get("num_hidden_layers")),
    )


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _unsupported(model_type: str) -> UnsupportedArchitectureError:
    from zhprune_hub.prune.families import FAMILIES

    return UnsupportedArchitectureError(model_type, list(FAMILIES))


def model_facts(source: ModelSource) -> ModelFacts:
    """Read family, context length and size from config.json or the GGUF header, without loading weights.

    Raises:
        ModelSourceError: no config, unreadable config or GGUF file.
    """
    if source.gguf_file:
        return _gguf_facts(source)
    config = _config(source)
    dtype = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    return ModelFacts(
        model_type=config["model_type"],
        max_position_embeddings=config.get("max_position_embeddings"),
        parameters=estimate_parameters(config),
        stored_dtype=dtype,
        hidden_size=_int_or_none(config.get("hidden_size")),
        num_layers=_int_or_none(config.get("num_hidden_layers")),
    )


def check_model(source: ModelSource, *, seq_len: int | None = None, seq_len_flag: str = "--seq-len") -> ModelFacts:
    """Refuse a model this tool cannot prune, or a window longer than the model's context.

    Raises:
        UnsupportedArchitectureError: the family has no spec (decided from the config, not the weights).
        ModelSourceError: see `model_facts`; or `seq_len` exceeds max_position_embeddings.
    """
    from zhprune_hub.prune.families import family_for

    facts = model_facts(source)
    family_for(facts.model_type)
    limit = facts.max_position_embeddings
    if seq_len is not None and isinstance(limit, int) and seq_len > limit:
        raise ModelSourceError(
            f"{seq_len_flag} {seq_len} is longer than the {limit} positions {source.reference} was trained for "
            f"(max_position_embeddings); pass {seq_len_flag} {limit} or less."
        )
    return facts


def output_dtype(source: ModelSource, requested: str = "auto") -> str:
    """The dtype a pruned checkpoint is saved in: the base's own, and bfloat16 for a (dequantised) GGUF
    base unless `requested` names another."""
    if source.gguf_file:
        return requested if requested in DTYPE_BYTES else "bfloat16"
    try:
        config = _config(source)
    except ModelSourceError:
        return "float32"
    value = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    return value if value in DTYPE_BYTES else "float32"


def expected_output_bytes(facts: ModelFacts, *, ratio: float, dtype: str) -> int | None:
    """About how large the pruned checkpoint will be: kept parameters × bytes of the saved dtype."""
    if facts.parameters is None:
        return None
    return math.ceil(facts.parameters * (1.0 - ratio)) * DTYPE_BYTES.get(dtype, 4)


def expected_staging_bytes(facts: ModelFacts, config: PruneConfig, *, dtype: str) -> int | None:
    """Peak disk use of the staging directory while the streamed engine prunes; None when unknown.

    The checkpoint writer spools every kept tensor as it comes and then copies them into the final
    shards before it deletes the spool, so the checkpoint is on disk twice at the end. Before that, a
    gradient method (obs, taylor) may spool every block's calibration states to disk (when they exceed
    the engine's memory budget); those are gone before the first block is written. Pass 2 may keep
    two more sets of states in files beside the blocks written so far.
    """
    from zhprune_hub.prune.importance import METHODS
    from zhprune_hub.prune.spool import BACKWARD_MEMORY_BUDGET, pass_two_sets, pass_two_spills

    checkpoint = expected_output_bytes(facts, ratio=config.ratio, dtype=dtype)
    if checkpoint is None:
        return None
    peak = 2 * checkpoint
    method = METHODS[config.method]
    if method.needs_data and facts.hidden_size and facts.num_layers:
        compute_bytes = DTYPE_BYTES.get(config.dtype, 4)  # auto: float32 on CPU, the widest case
        one_set = config.num_samples * config.seq_len * facts.hidden_size * compute_bytes
        if method.needs_gradients and one_set * facts.num_layers > BACKWARD_MEMORY_BUDGET:
            peak = max(peak, one_set * facts.num_layers)
        correcting = config.repair and config.correction > 0
        if pass_two_spills(one_set, correcting):
            peak = max(peak, checkpoint + (pass_two_sets(correcting) - 1) * one_set)
    return peak


# --- devices ---------------------------------------------------------------------------------------------------

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device(device: str) -> None:
    """Refuse a device that does not exist here before anything is loaded.

    Raises:
        ModelSourceError: unknown device name, or CUDA / the CUDA index is not available.
    """
    if not _DEVICE.match(device):
        raise ModelSourceError(f"Device {device!r} is not one of auto, cpu, mps, cuda or cuda:N.")
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ModelSourceError(f"Device {device!r} was requested but CUDA is not available; use --device cpu.")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise ModelSourceError(
            f"Device {device!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)."
        )


# --- the prune stage -----------------------------------------------------------------------------------------------


def _protected_paths(config: PruneConfig, data_dir: Path | None) -> list[Path]:
    paths = [data_dir] if data_dir is not None else []
    model = Path(config.model).expanduser()
    if model.exists():
        paths.append(model)
    return paths


def prune_preflight(config: PruneConfig, *, log: Any = None) -> ModelSource:
    """Everything `prune` can check before loading weights; returns the resolved model source.

    Order: cheap checks of the arguments and the output path first, then the model is resolved
    (a Hub pull downloads it), then its config decides family, context length and output size.

    Raises:
        ZhpruneError: the first problem found, as one sentence.
    """
    from zhprune_hub.data import resolve_data_dir
    from zhprune_hub.data.registry import parse_spec
    from zhprune_hub.loading import resolve_source, trust_for
    from zhprune_hub.outputs import check_free_space, check_output_dir, human_bytes, reclaim_leftovers

    data_dir = resolve_data_dir(config.data_dir)
    protected = _protected_paths(config, data_dir)
    output = check_output_dir(config.output, overwrite=config.overwrite, protected=protected)
    parse_spec(config.calibration)
    check_device(config.device)
    source = resolve_source(config.model, revision=config.revision, gguf_file=config.gguf_file)
    for note in source.notes:
        if log is not None:
            log(f"note: {note}")
    # A Hub model lives in the cache: now that its directory is known, protect it too.
    check_output_dir(output, overwrite=config.overwrite, protected=[*protected, source.local_dir])
    facts = check_model(source, seq_len=config.seq_len)
    trust_for(source, config.trust_remote_code)  # foreign code is refused before anything is loaded
    for removed in reclaim_leftovers(output):
        if log is not None:
            log(f"removed {removed}, left behind by an earlier run that was killed")
    dtype = output_dtype(source, config.dtype)
    size = expected_output_bytes(facts, ratio=config.ratio, dtype=dtype)
    peak = expected_staging_bytes(facts, config, dtype=dtype)
    if size is not None and peak is not None:
        what = f"Pruning into {output} (a {dtype} checkpoint of about {human_bytes(size)}, staged twice while written)"
        check_free_space(output, peak, what=what)
    return source


# --- evaluate and publish ------------------------------------------------------------------------------------------


def check_model_references(models: list[str]) -> None:
    """Check, without any download, that each model is an existing directory or a well-formed Hub id.

    Raises:
        ModelSourceError: a path that does not exist (or holds nothing loadable), or a malformed id.
    """
    from zhprune_hub.loading import resolve_source

    for model in models:
        path = Path(model).expanduser()
        if path.exists() or model.count("/") > 1 or model.startswith((".", "/", "~")):
            resolve_source(model)  # local: cheap, and says what is wrong with the path
        else:
            check_repo_id(model, what="Model", owner_required=False, error=ModelSourceError)


def check_work_dir(work_dir: Path) -> None:
    """The publish work directory must be a directory we can write in.

    Raises:
        OutputError: it is a file, or it (or its nearest existing parent) is not writable.
    """
    from zhprune_hub.outputs import check_writable_dir

    work_dir = Path(work_dir).expanduser().absolute()
    probe = work_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    check_writable_dir(probe, purpose=f"--work-dir {work_dir}")


def _check_export_plan(variant: Any) -> None:
    """An OpenVINO export needs the uniform layout and the export environment: known before any pruning."""
    from zhprune_hub.export.environment import check_environment

    if variant.prune.layout != "uniform":
        raise PlanError(
            f"export: {variant.deploy.export} needs layout: uniform (optimum-intel cannot export the "
            f"{variant.prune.layout} layout's own modeling code); set layout: uniform or drop export."
        )
    check_environment()


def publish_preflight(variants: list[Any], *, work_dir: Path) -> None:
    """What `publish` can check for every variant before the first one starts.

    Repo ids were validated when the plan was resolved; here: the work directory, the zero-shot task
    names (before hours of pruning), and for local models the family and calibration window (Hub
    models are checked right after their pull).

    Raises:
        ZhpruneError: the first problem found, naming the variant.
    """
    from zhprune_hub.data import resolve_data_dir
    from zhprune_hub.data.registry import parse_spec
    from zhprune_hub.loading import resolve_source, trust_for

    check_work_dir(work_dir)
    for variant in variants:
        prune = variant.prune
        try:
            check_repo_id(variant.repo_id)
            resolve_data_dir(prune.data_dir)
            parse_spec(prune.calibration)
            check_device(prune.device)
            if variant.evaluate.tasks:
                from zhprune_hub.evaluate.zeroshot import validate_tasks

                validate_tasks(list(variant.evaluate.tasks), variant.evaluate.include_path)
            if variant.deploy.export:
                _check_export_plan(variant)
            if Path(variant.model).expanduser().exists():
                source = resolve_source(variant.model, revision=variant.model_revision, gguf_file=prune.gguf_file)
                check_model(source, seq_len=prune.seq_len)
                trust_for(source, prune.trust_remote_code)
            else:
                check_repo_id(variant.model, what="Model", owner_required=False, error=ModelSourceError)
        except ZhpruneError as exc:
            if len(variants) > 1:
                exc.args = (f"Variant {variant.name!r}: {exc}",)
            raise


def evaluate_preflight(
    models: list[str], *, ppl: list[str] | None, device: str, dtype: str, json_out: Path | None
) -> Path | None:
    """What `evaluate` can check before loading the first model; returns the absolute --json path.

    Raises:
        ZhpruneError: a missing model path or malformed id, an unknown corpus, device or dtype, or a
            results path that cannot be written.
    """
    from zhprune_hub.data.registry import get_corpus, looks_like_path
    from zhprune_hub.outputs import check_writable_file

    check_model_references(models)
    for name in ppl or []:
        if looks_like_path(name):
            if not Path(name).expanduser().is_file():
                raise ModelSourceError(f"Perplexity text {name!r} does not exist; check the path or use a corpus name.")
        else:
            get_corpus(name)
    check_device(device)
    if dtype not in ("auto", *DTYPE_BYTES):
        raise ModelSourceError(f"--dtype {dtype!r} is not one of auto, float32, bfloat16, float16.")
    if json_out is None or str(json_out) == "-":
        return json_out
    return check_writable_file(json_out, flag="--json")


def export_preflight(config: Any) -> Any:
    """What `export` can check before loading anything: the checkpoint, its layout, the output and the
    export environment. Returns the checked export environment.

    Raises:
        ZhpruneError: not a checkpoint, the global layout or other shipped code, an unwritable or
            occupied output, too little space, or no usable export environment.
    """
    from zhprune_hub.errors import ExportError
    from zhprune_hub.export.environment import check_environment
    from zhprune_hub.export.exporter import BYTES_PER_WEIGHT
    from zhprune_hub.loading import needs_remote_code, shipped_code_matches
    from zhprune_hub.outputs import check_free_space, check_output_dir
    from zhprune_hub.verify import stored_parameter_count

    directory = Path(config.directory).expanduser()
    if not directory.is_dir():
        raise ModelSourceError(f"{directory} is not a directory; pass a checkpoint written by `zhprune-hub prune`.")
    if not (directory / "config.json").is_file():
        raise ModelSourceError(f"{directory} has no config.json; pass a Hugging Face checkpoint directory.")
    if not any(directory.glob("*.safetensors")):
        raise ModelSourceError(
            f"{directory} has no .safetensors weights; pass a checkpoint written by `zhprune-hub prune`."
        )
    if needs_remote_code(directory):
        if shipped_code_matches(directory):
            raise ExportError(
                f"{directory} uses the global layout (per-block widths in zhprune-hub's own modeling code), which "
                "optimum-intel cannot export; prune again with --layout uniform."
            )
        raise ExportError(
            f"{directory} ships its own modeling code (auto_map in its config), which optimum-intel cannot export; "
            "export a checkpoint with a stock transformers architecture."
        )
    target = check_output_dir(config.target, overwrite=config.overwrite)
    weights = stored_parameter_count(directory)
    check_free_space(target, int(weights * BYTES_PER_WEIGHT[config.weights]), what=f"The {config.weights} export")
    return check_environment()
