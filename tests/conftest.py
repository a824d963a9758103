"""Hermetic test setup: no test reads the user's Hub cache or token, and nothing downloads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path | None:
    """The local data directory: $ZHPRUNE_DATA_DIR, else ../shared/data beside the checkout."""
    env = os.environ.get("ZHPRUNE_DATA_DIR")
    candidate = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


def models_dir() -> Path:
    env = os.environ.get("ZHPRUNE_MODELS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "zhprune-hub" / "models"


@pytest.fixture(autouse=True)
def _hermetic_hub(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    found = data_dir()
    if found is None:
        pytest.skip("local data directory missing: set ZHPRUNE_DATA_DIR or place shared/data beside the checkout")
    return found


def _real_model(name: str) -> Path:
    path = models_dir() / name
    if not (path / "config.json").exists():
        pytest.skip(f"{name} not prepared: run `python scripts/fetch_test_models.py`")
    return path


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    return _real_model("smollm2-135m")


@pytest.fixture(scope="session")
def qwen25_dir() -> Path:
    return _real_model("qwen2.5-0.5b")
