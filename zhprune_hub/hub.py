"""Talking to the Hub: pull a model snapshot (push lives beside it).

Every function takes an explicit endpoint and token instead of reading global state, so tests
can point it at a local Hub-compatible server and users at a mirror (HF_ENDPOINT).
"""

from __future__ import annotations

import os
from pathlib import Path

from zhprune_hub.errors import ModelSourceError

#: Files a pull needs; weights in other formats (.bin, .pt, .msgpack, .h5) are skipped on purpose.
PULL_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.model",
    "*.txt",
    "*.jinja",
    "*.py",
    "*.gguf",
    "*.tiktoken",
    "*.md",
]


def resolve_endpoint(endpoint: str | None = None) -> str | None:
    """The endpoint to use: the explicit one, else HF_ENDPOINT, else huggingface_hub's default."""
    return endpoint or os.environ.get("HF_ENDPOINT") or None


def pull(
    repo_id: str,
    *,
    revision: str | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    cache_dir: Path | None = None,
    gguf_file: str | None = None,
) -> tuple[Path, str | None]:
    """Download a model snapshot and return (local directory, resolved commit sha).

    Raises:
        ModelSourceError: the repository or revision does not exist, or the Hub is unreachable.
    """
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = resolve_endpoint(endpoint)
    patterns = list(PULL_PATTERNS)
    if gguf_file is None:
        patterns.remove("*.gguf")
    else:
        patterns = [p for p in patterns if p != "*.safetensors"]
    try:
        path = snapshot_download(
            repo_id,
            revision=revision,
            endpoint=endpoint,
            token=token,
            cache_dir=cache_dir,
            allow_patterns=patterns,
        )
    except RepositoryNotFoundError as exc:
        raise ModelSourceError(
            f"Model {repo_id!r} was not found on {endpoint or 'the Hub'}; check the id, or pass a local directory."
        ) from exc
    except RevisionNotFoundError as exc:
        raise ModelSourceError(
            f"Revision {revision!r} does not exist in {repo_id!r}; pass an existing branch, tag or commit."
        ) from exc
    except GatedRepoError as exc:
        raise ModelSourceError(f"Model {repo_id!r} is gated; accept its terms on the Hub and set HF_TOKEN.") from exc
    except LocalEntryNotFoundError as exc:
        raise ModelSourceError(
            f"Model {repo_id!r} is not in the local cache and the Hub cannot be reached "
            f"({endpoint or 'default endpoint'}); set HF_ENDPOINT to a mirror, or pass a local directory."
        ) from exc
    commit = None
    try:
        commit = HfApi(endpoint=endpoint, token=token).model_info(repo_id, revision=revision).sha
    except Exception:
        commit = Path(path).name if len(Path(path).name) == 40 else None
    return Path(path), commit
