"""Integration fixtures: the local Hub server (`hub_server`) and a Xet-free huggingface_hub.

huggingface_hub reads HF_HUB_DISABLE_XET once, at import, into `constants.HF_HUB_DISABLE_XET`,
and the local server speaks only the classic LFS protocol. So the variable is set here before
anything imports huggingface_hub, and `_classic_lfs` checks that it took effect.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["HF_HUB_DISABLE_XET"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for `hubserver`

import pytest
from hubserver import HubServer, hub_server, running_hub_server

__all__ = ["HubServer", "hub_server", "running_hub_server"]


@pytest.fixture(autouse=True)
def _classic_lfs(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    if not constants.HF_HUB_DISABLE_XET:
        # Imported before this conftest (e.g. a wider test run): the env var was missed at import.
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
