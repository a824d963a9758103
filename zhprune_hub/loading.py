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

    @property
    def from_hub(self) -> bool:
        return not Path(self.reference).exists()


def resolve_source(
    model: str,
    *,
    revision: str | None = None,
    gguf_file: str | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
) -> ModelSource:
    """Turn a Hub id or path into a ModelSource, pulling from the Hub when needed."""
    path = Path(model).expanduser()
    if path.is_dir():
        if gguf_file is None and not (path / "config.json").exists():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            if len(ggufs) == 1:
                gguf_file = ggufs[0]
            elif ggufs:
                raise ModelSourceError(
                    f"{path} holds several GGUF files ({', '.join(ggufs)}); choose one with --gguf-file."
                )
            else:
                raise ModelSourceError(
                    f"{path} has no config.json and no .gguf file; pass a Hugging Face checkpoint directory."
                )
        if gguf_file is not None and not (path / gguf_file).exists():
            raise ModelSourceError(f"GGUF file {gguf_file!r} was not found in {path}.")
        return ModelSource(reference=model, local_dir=path.resolve(), revision=revision, gguf_file=gguf_file)
    if path.exists():
        raise ModelSourceError(f"{path} is a file; pass the directory that holds the checkpoint.")
    if model.count("/") > 1 or model.startswith((".", "/", "~")):
        raise ModelSourceError(f"{model!r} is neither an existing directory nor a Hub id of the form OWNER/NAME.")
    from zhprune_hub.hub import pull

    local, commit = pull(model, revision=revision, endpoint=endpoint, token=token, gguf_file=gguf_file)
    return ModelSource(reference=model, local_dir=local, revision=revision, commit=commit, gguf_file=gguf_file)


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
    return json.loads(config_path.read_text())


def needs_remote_code(local_dir: Path) -> bool:
    """True when the checkpoint is our `global` layout (config auto_map to shipped modeling code)."""
    config_path = local_dir / "config.json"
    if not config_path.exists():
        return False
    return "auto_map" in json.loads(config_path.read_text())


def shipped_code_matches(local_dir: Path) -> bool:
    """True when every modeling file the checkpoint ships equals the copy inside this package."""
    ours = {p.name: p.read_bytes() for p in MODELING_DIR.glob("*_zhprune.py")}
    theirs = {p.name: p.read_bytes() for p in local_dir.glob("*.py")}
    return bool(theirs) and all(ours.get(name) == data for name, data in theirs.items())


def trust_for(source: ModelSource, trust_remote_code: bool | None) -> bool:
    """Whether to run the checkpoint's own code: ours is trusted, anything else needs the user's consent.

    Raises:
        ModelSourceError: the checkpoint ships foreign code and trust_remote_code was not given.
    """
    if source.gguf_file or not needs_remote_code(source.local_dir):
        return bool(trust_remote_code)
    if trust_remote_code is None:
        if not shipped_code_matches(source.local_dir):
            raise ModelSourceError(
                f"{source.reference} ships modeling code that differs from zhprune-hub's own; "
                "review it and pass --trust-remote-code to run it."
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
