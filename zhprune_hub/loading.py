"""Resolve what the user typed as MODEL into a local directory, then load model and tokenizer.

MODEL may be a Hub id, a local checkpoint directory, or a directory holding a GGUF file.
Our own `global`-layout checkpoints carry modeling code; it is trusted automatically only when
it is byte-identical to the code this version of the tool ships.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhprune_hub.errors import ModelSourceError

MODELING_DIR = Path(__file__).parent / "modeling"


@dataclass(frozen=True)
class ModelSource:
    """Where a model lives on disk and how it was obtained."""

    reference: str
    local_dir: Path
    revision: str | None = None
    commit: str | None = None
    gguf_file: str | None = None
    #: Decisions taken while resolving (e.g. which of several GGUF files was chosen), for the log.
    notes: tuple[str, ...] = ()

    @property
    def from_hub(self) -> bool:
        return not Path(self.reference).exists()


def choose_gguf(files: dict[str, int | None], *, where: str) -> tuple[str, str | None]:
    """Pick one GGUF file among several: the largest, i.e. the highest-precision quantisation.

    Returns the name and, when there was a choice to make, a note saying what was chosen.
    """
    ranked = sorted(files.items(), key=lambda item: (-(item[1] or 0), item[0]))
    name = ranked[0][0]
    if len(ranked) == 1:
        return name, None
    others = ", ".join(other for other, _ in ranked[1:])
    return name, (
        f"{where} holds {len(ranked)} GGUF files; using {name} (the largest, i.e. the highest-precision "
        f"quantisation) rather than {others}; pass --gguf-file to choose another."
    )


def _local_source(path: Path, model: str, *, revision: str | None, gguf_file: str | None) -> ModelSource:
    if revision is not None:
        raise ModelSourceError(
            f"A revision ({revision!r}) applies to Hub models, but {model!r} is a local directory; drop the revision."
        )
    notes: tuple[str, ...] = ()
    if gguf_file is None and not (path / "config.json").exists():
        ggufs = {p.name: p.stat().st_size for p in path.glob("*.gguf") if p.is_file()}
        if not ggufs:
            raise ModelSourceError(
                f"{path} has no config.json and no .gguf file; pass a Hugging Face checkpoint directory."
            )
        gguf_file, note = choose_gguf(ggufs, where=str(path))
        notes = (note,) if note else ()
    if gguf_file is not None and not (path / gguf_file).is_file():
        found = ", ".join(sorted(p.name for p in path.glob("*.gguf"))) or "none"
        raise ModelSourceError(f"GGUF file {gguf_file!r} was not found in {path} (GGUF files there: {found}).")
    return ModelSource(reference=model, local_dir=path.resolve(), gguf_file=gguf_file, notes=notes)


def resolve_source(
    model: str,
    *,
    revision: str | None = None,
    gguf_file: str | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
) -> ModelSource:
    """Turn a Hub id or path into a ModelSource, pulling from the Hub when needed.

    A directory (or Hub repository) without config.json but with GGUF files uses `gguf_file`, else
    the largest GGUF file; only that file is downloaded.

    Raises:
        ModelSourceError: no such directory or valid Hub id, no loadable files, or the pull failed.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return _local_source(path, model, revision=revision, gguf_file=gguf_file)
    if path.exists():
        raise ModelSourceError(f"{path} is a file; pass the directory that holds the checkpoint.")
    if model.count("/") > 1 or model.startswith((".", "/", "~")):
        raise ModelSourceError(f"{model!r} is neither an existing directory nor a Hub id of the form OWNER/NAME.")
    from zhprune_hub.preflight import check_repo_id

    check_repo_id(model, what="Model", owner_required=False, error=ModelSourceError)
    from zhprune_hub.hub import pull, remote_files

    notes: tuple[str, ...] = ()
    files = remote_files(model, revision=revision, endpoint=endpoint, token=token)
    if files is not None:
        ggufs = {name: size for name, size in files.items() if name.endswith(".gguf") and "/" not in name}
        if gguf_file is not None and gguf_file not in ggufs:
            raise ModelSourceError(
                f"GGUF file {gguf_file!r} is not in {model!r} (GGUF files there: {', '.join(sorted(ggufs)) or 'none'})."
            )
        if gguf_file is None and "config.json" not in files and ggufs:
            gguf_file, note = choose_gguf(ggufs, where=model)
            notes = (note,) if note else ()
    local, commit = pull(model, revision=revision, endpoint=endpoint, token=token, gguf_file=gguf_file)
    if files is None and gguf_file is None and not (local / "config.json").exists():
        # Offline: the cached snapshot decides which GGUF file to use, as a local directory would.
        cached = _local_source(local, model, revision=None, gguf_file=None)
        gguf_file, notes = cached.gguf_file, cached.notes
    return ModelSource(
        reference=model, local_dir=local, revision=revision, commit=commit, gguf_file=gguf_file, notes=notes
    )


def pick_device(device: str) -> str:
    """`auto` means CUDA when present, else CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelSourceError(f"Device {device!r} was requested but CUDA is not available; use --device cpu.")
    return device


def pick_dtype(dtype: str, device: str) -> Any:
    """`auto` means float32 on CPU (exact, fast enough) and bfloat16 on GPUs that support it."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise ModelSourceError(f"dtype {dtype!r} is not one of auto, float32, bfloat16, float16.") from None


def read_config(local_dir: Path) -> dict[str, Any]:
    config_path = local_dir / "config.json"
    if not config_path.exists():
        raise ModelSourceError(f"{local_dir} has no config.json.")
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"{config_path} is damaged ({exc}); write or download it again.") from None


def auto_map_entries(local_dir: Path) -> list[str]:
    """Every class reference in the `auto_map` of config.json and tokenizer_config.json.

    These name the code transformers would import with trust_remote_code: `module.Class` for a file
    shipped in the checkpoint, `owner/repo--module.Class` for code in another repository.
    """
    entries: list[str] = []
    for name in ("config.json", "tokenizer_config.json"):
        path = local_dir / name
        try:
            doc = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, ValueError):
            continue
        auto_map = doc.get("auto_map") if isinstance(doc, dict) else None
        if not isinstance(auto_map, dict):
            continue
        for value in auto_map.values():
            for item in value if isinstance(value, list | tuple) else [value]:
                if isinstance(item, str) and item:
                    entries.append(item)
    return entries


def needs_remote_code(local_dir: Path) -> bool:
    """True when loading the checkpoint would import code from it (an `auto_map` in its configs)."""
    return bool(auto_map_entries(local_dir))


def shipped_code_matches(local_dir: Path) -> bool:
    """True when every module the `auto_map` entries name is a local file equal to zhprune-hub's own copy.

    An entry that points at another repository (`owner/repo--module.Class`), names a module this
    package does not ship, or whose file differs by a byte, makes the checkpoint foreign.
    """
    entries = auto_map_entries(local_dir)
    if not entries:
        return False
    for entry in entries:
        if "--" in entry or "." not in entry:
            return False
        module = entry.rsplit(".", 1)[0]
        if "/" in module or "\\" in module or module.startswith("."):
            return False
        ours, theirs = MODELING_DIR / f"{module}.py", local_dir / f"{module}.py"
        if not module.endswith("_zhprune") or not ours.is_file() or not theirs.is_file():
            return False
        if ours.read_bytes() != theirs.read_bytes():
            return False
    return True


def trust_for(source: ModelSource, trust_remote_code: bool | None) -> bool:
    """Whether to run the checkpoint's own code (model and tokenizer alike): ours is trusted, anything
    else only with the user's consent. Always a bool, so transformers never prompts.

    Raises:
        ModelSourceError: the checkpoint needs foreign code and trust_remote_code was not given.
    """
    if source.gguf_file or not needs_remote_code(source.local_dir):
        return bool(trust_remote_code)
    if trust_remote_code is None:
        if not shipped_code_matches(source.local_dir):
            raise ModelSourceError(
                f"{source.reference} needs code that is not zhprune-hub's own (its auto_map names "
                f"{', '.join(sorted(set(auto_map_entries(source.local_dir))))}); review it and pass "
                "--trust-remote-code to run it."
            )
        return True
    return trust_remote_code


def load_tokenizer(source: ModelSource, *, trust_remote_code: bool | None = None) -> Any:
    """The checkpoint's tokenizer, never prompting about remote code."""
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {"trust_remote_code": trust_for(source, trust_remote_code)}
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    try:
        return AutoTokenizer.from_pretrained(source.local_dir, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelSourceError(
            f"Could not load the tokenizer of {source.reference}: {str(exc).splitlines()[0]}"
        ) from exc


def load_model(
    source: ModelSource,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool | None = None,
) -> tuple[Any, Any]:
    """Load (model, tokenizer) in eval mode on the chosen device.

    Raises:
        ModelSourceError: the checkpoint cannot be loaded, or it ships code that is not ours
            and trust_remote_code was not given.
    """
    from transformers import AutoModelForCausalLM

    device = pick_device(device)
    kwargs: dict[str, Any] = {
        "dtype": pick_dtype(dtype, device),
        "trust_remote_code": trust_for(source, trust_remote_code),
    }
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    tokenizer = load_tokenizer(source, trust_remote_code=kwargs["trust_remote_code"])
    try:
        model = AutoModelForCausalLM.from_pretrained(source.local_dir, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"Could not load {source.reference}: {str(exc).splitlines()[0]}") from exc
    if source.gguf_file:
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    model.to(device)
    model.eval()
    return model, tokenizer
