"""Talking to the Hub: pull a model snapshot, push a folder as one commit.

Every function takes an explicit endpoint and token instead of reading global state, so tests
can point it at a local Hub-compatible server and users at a mirror (HF_ENDPOINT).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from zhprune_hub.errors import HubError, ModelSourceError

if TYPE_CHECKING:
    from huggingface_hub import HfApi

DEFAULT_ENDPOINT = "https://huggingface.co"
#: Local folders never pushed: git metadata and huggingface_hub's local_dir bookkeeping.
SKIPPED_FOLDERS = (".git", ".cache")

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
    # The base's terms travel with the pruned model (no suffix on most Hub repos).
    "LICENSE*",
    "LICENCE*",
    "License*",
    "license*",
    "USE_POLICY*",
    "NOTICE*",
]
#: Remote files a push leaves in place although the folder lacks them: the Hub writes .gitattributes.
KEPT_REMOTE = (".gitattributes",)


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

    With `gguf_file`, only that GGUF file is downloaded (beside the tokenizer and config files);
    otherwise no GGUF file is.

    Raises:
        ModelSourceError: the repository or revision does not exist, or the Hub is unreachable.
    """
    from huggingface_hub import snapshot_download

    endpoint = resolve_endpoint(endpoint)
    patterns = [p for p in PULL_PATTERNS if p != "*.gguf"]
    if gguf_file is not None:
        patterns = [p for p in patterns if p != "*.safetensors"] + [gguf_file]
    with pull_errors(repo_id, revision=revision, endpoint=endpoint):
        path = snapshot_download(
            repo_id,
            revision=revision,
            endpoint=endpoint,
            token=token,
            cache_dir=cache_dir,
            allow_patterns=patterns,
        )
    # snapshot_download returns .../snapshots/<commit sha>
    name = Path(path).name
    return Path(path), name if len(name) == 40 else None


def remote_files(
    repo_id: str, *, revision: str | None = None, endpoint: str | None = None, token: str | bool | None = None
) -> dict[str, int | None] | None:
    """File name -> size of a Hub model at `revision`; None when offline mode forbids asking.

    Raises:
        ModelSourceError: as `pull`.
    """
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return None
    endpoint = resolve_endpoint(endpoint)
    with pull_errors(repo_id, revision=revision, endpoint=endpoint):
        info = HfApi(endpoint=endpoint, token=token).model_info(repo_id, revision=revision, files_metadata=True)
    return {sibling.rfilename: sibling.size for sibling in info.siblings or []}


@contextlib.contextmanager
def pull_errors(repo_id: str, *, revision: str | None, endpoint: str | None) -> Iterator[None]:
    """Turn the ways a download fails into one sentence that names the cause (never the token)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = endpoint or DEFAULT_ENDPOINT
    try:
        yield
    except GatedRepoError as exc:  # a subclass of RepositoryNotFoundError: test it first
        raise ModelSourceError(f"Model {repo_id!r} is gated; accept its terms on the Hub and set HF_TOKEN.") from exc
    except RevisionNotFoundError as exc:
        raise ModelSourceError(
            f"Revision {revision!r} does not exist in {repo_id!r} on {where}; pass an existing branch, tag or "
            "commit (or leave --revision out for main)."
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelSourceError(
            f"Model {repo_id!r} was not found on {where} (or it is private and HF_TOKEN does not give access); "
            "check the id, or pass a local directory."
        ) from exc
    except LocalEntryNotFoundError as exc:
        at = f" at revision {revision!r}" if revision else ""
        if constants.HF_HUB_OFFLINE:
            raise ModelSourceError(
                f"Model {repo_id!r}{at} is not in the local cache and HF_HUB_OFFLINE is set; unset it to "
                "download, or pass a local directory."
            ) from exc
        raise ModelSourceError(
            f"Model {repo_id!r}{at} is not in the local cache and {where} cannot be reached; check the "
            "network, set HF_ENDPOINT to a mirror, or pass a local directory."
        ) from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "error"
        raise ModelSourceError(
            f"Downloading {repo_id!r} from {where} failed with HTTP {status}; try again later or pass a local "
            "directory."
        ) from exc
    except _transport_errors() as exc:
        raise ModelSourceError(
            f"{where} could not be reached while downloading {repo_id!r} ({type(exc).__name__}); check the "
            "network or HF_ENDPOINT, or pass a local directory."
        ) from exc


def resolve_commit(
    repo_id: str, *, revision: str | None = None, endpoint: str | None = None, token: str | bool | None = None
) -> str:
    """The commit id a model's revision (branch, tag or commit; main when None) points to now.

    Raises:
        ModelSourceError: the repository or revision does not exist, or the Hub cannot be reached.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    endpoint = resolve_endpoint(endpoint)
    where = endpoint or DEFAULT_ENDPOINT
    try:
        sha = HfApi(endpoint=endpoint, token=token).model_info(repo_id, revision=revision).sha
    except RevisionNotFoundError:
        raise ModelSourceError(
            f"Revision {revision!r} does not exist in {repo_id!r}; pass an existing branch, tag or commit."
        ) from None
    except GatedRepoError:
        raise ModelSourceError(f"Model {repo_id!r} is gated; accept its terms on the Hub and set HF_TOKEN.") from None
    except RepositoryNotFoundError:
        raise ModelSourceError(
            f"Model {repo_id!r} was not found on {where}; check the id (and HF_TOKEN for a private model)."
        ) from None
    except Exception as exc:
        reason = failure_reason(exc, where)
        if reason is None:
            raise
        raise ModelSourceError(f"The revision of {repo_id!r} could not be read from {where} ({reason}).") from exc
    if not sha:
        raise ModelSourceError(f"{where} named no commit for {repo_id!r} at {revision or 'main'!r}.")
    return sha


@dataclass(frozen=True)
class HubUrls:
    """Browser URLs of a repo and, when known, of one commit."""

    repo: str
    commit: str | None = None


def hub_urls(repo_id: str, *, endpoint: str | None = None, commit_oid: str | None = None) -> HubUrls:
    """The repo (and commit) URLs to print for `endpoint` (a mirror, a local server or the Hub)."""
    base = (resolve_endpoint(endpoint) or DEFAULT_ENDPOINT).rstrip("/")
    repo = f"{base}/{repo_id}"
    return HubUrls(repo=repo, commit=f"{repo}/commit/{commit_oid}" if commit_oid else None)


@dataclass(frozen=True)
class PushResult:
    """What one push did: the commit it made (or found), and whether anything changed."""

    repo_id: str
    repo_url: str
    commit_url: str
    commit_oid: str
    pr_url: str | None
    revision: str
    changed: bool
    files: int


def push_folder(
    folder: Path,
    repo_id: str,
    *,
    endpoint: str | None,
    token: str | None,
    private: bool = False,
    create_pr: bool = False,
    revision: str | None = None,
    commit_message: str,
    commit_description: str | None = None,
) -> PushResult:
    """Make the target branch (or a new pull request) hold exactly the files of `folder`, in one commit.

    The repo is created if missing; a `revision` branch that does not exist is created from main
    first. The head of the target is read once; the commit adds every local file, deletes every
    remote file the folder lacks (except .gitattributes) and names that head as its parent, so a
    commit that lands in between makes the Hub refuse ours (HTTP 412) instead of being overwritten.
    Identical content makes no commit (and opens no PR): the result says `changed=False`. After the
    commit the remote tree is compared with the folder (git blob sha1 for regular files, sha256 for
    LFS files), extra remote files included.

    Args:
        token: a write token; None means huggingface_hub's own lookup (HF_TOKEN, then the login
            file). It is never printed, logged or put in an error message.
        revision: target branch (or an existing `refs/pr/N`); URL-quoted values are accepted.

    Raises:
        HubError: no token, the folder is empty, the target moved under us, or the Hub failed; the
            message says whether the target branch changed and that the local folder is kept.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token

    folder = Path(folder)
    files = _folder_files(folder)
    endpoint = resolve_endpoint(endpoint)
    where = endpoint or DEFAULT_ENDPOINT
    branch = unquote(revision) if revision else None
    target = branch or "main"
    if not token and not get_token():
        raise HubError(
            f"No Hub token found for pushing to {repo_id!r}; pass --token or set HF_TOKEN "
            "(or run `hf auth login`), nothing was pushed."
        )
    api = HfApi(endpoint=endpoint, token=token or None)
    stage, head_before = "creating the repository", None
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if branch is not None and not branch.startswith("refs/pr/") and not api.revision_exists(repo_id, branch):
            stage = f"creating branch {branch!r}"
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        stage = f"reading the head of {target!r}"
        head_before = api.repo_info(repo_id, revision=target).sha
        stale = [p for p in _remote_files(api, repo_id, head_before) if p not in files and p not in KEPT_REMOTE]
        stage = "uploading and committing"
        operations: list[Any] = [
            CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(path)) for rel, path in files.items()
        ]
        operations += [CommitOperationDelete(path_in_repo=rel, is_folder=False) for rel in stale]
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message,
            commit_description=commit_description,
            revision=branch,
            create_pr=create_pr,
            parent_commit=head_before,
        )
    except Exception as exc:
        raise _push_error(exc, api, folder=folder, repo_id=repo_id, where=where, stage=stage, target=target,
                          head_before=head_before) from exc  # fmt: skip

    changed = info.pr_url is not None if create_pr else info.oid != head_before
    urls = hub_urls(repo_id, endpoint=endpoint, commit_oid=info.oid)
    _verify_remote(api, repo_id, info.oid, files, where=where, commit_url=urls.commit or urls.repo)
    return PushResult(
        repo_id=repo_id,
        repo_url=urls.repo,
        commit_url=urls.commit or urls.repo,
        commit_oid=info.oid,
        pr_url=info.pr_url,
        revision=info.pr_revision or target,
        changed=changed,
        files=len(files),
    )


def _remote_files(api: HfApi, repo_id: str, revision: str | None) -> dict[str, Any]:
    """Every file of the remote tree at `revision`, by path."""
    from huggingface_hub import RepoFile

    return {
        f.path: f for f in api.list_repo_tree(repo_id, recursive=True, revision=revision) if isinstance(f, RepoFile)
    }


def _push_error(
    exc: Exception,
    api: HfApi,
    *,
    folder: Path,
    repo_id: str,
    where: str,
    stage: str,
    target: str,
    head_before: str | None,
) -> Exception:
    """The one-sentence HubError for a failed push (or `exc` itself when it is not a known failure shape)."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError) and exc.response is not None and exc.response.status_code == 412:
        now = _head(api, repo_id, target)
        return HubError(
            f"Pushing {folder} to {repo_id!r} on {where} was refused because {target} moved from "
            f"{(head_before or '?')[:8]} to {(now or '?')[:8]} after it was read: nothing was overwritten and the "
            "local folder is kept, so look at that commit and run the push again."
        )
    reason = failure_reason(exc, where)
    if reason is None:
        return exc
    state = _target_state(api, repo_id, target, head_before)
    return HubError(
        f"Pushing {folder} to {repo_id!r} on {where} failed while {stage} ({reason}); {state}, "
        "and the local folder is kept, so fix the cause and run the push again."
    )


def _folder_files(folder: Path) -> dict[str, Path]:
    """Files to push, by their path in the repo (posix, sorted)."""
    if not folder.is_dir():
        raise HubError(f"Folder {str(folder)!r} to push does not exist; nothing was pushed.")
    from zhprune_hub.outputs import OUTPUT_MARKER

    files = {
        path.relative_to(folder).as_posix(): path
        for path in sorted(folder.rglob("*"))
        if path.is_file()
        and path.name != OUTPUT_MARKER  # local bookkeeping (pid, host name): never published
        and not any(part in SKIPPED_FOLDERS for part in path.relative_to(folder).parts)
    }
    if not files:
        raise HubError(f"Folder {str(folder)!r} has no files to push; nothing was pushed.")
    return files


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Network failures of whichever HTTP stack this huggingface_hub uses (httpx2, httpx, requests)."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "RequestException")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def failure_reason(exc: BaseException, where: str) -> str | None:
    """A short, token-free reason for a known push failure shape; None for anything else (a bug)."""
    from huggingface_hub.errors import HfHubHTTPError

    transport = _transport_errors()
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "error"
        if status in (401, 403):
            return f"HTTP {status}: the Hub rejected the token, pass a token with write access via --token or HF_TOKEN"
        return f"HTTP {status}"
    if isinstance(exc, RuntimeError) and isinstance(exc.__cause__, (HfHubHTTPError, *transport)):
        # huggingface_hub wraps an LFS upload that failed after its retries this way.
        return f"an LFS upload failed after retries with {type(exc.__cause__).__name__}"
    if isinstance(exc, transport):
        if type(exc).__module__.startswith(("httpx", "requests")):
            return f"{where} could not be reached: {type(exc).__name__}"
        # hf_xet reports a server without the Xet protocol as a plain ConnectionError
        return (
            f"the upload connection failed with {type(exc).__name__}; a server without Xet needs HF_HUB_DISABLE_XET=1"
        )
    return None


def _head(api: HfApi, repo_id: str, target: str) -> str | None:
    """The commit `target` points to now, or None when it cannot be read."""
    try:
        return api.repo_info(repo_id, revision=target).sha
    except Exception:
        return None


def _target_state(api: HfApi, repo_id: str, target: str, head_before: str | None) -> str:
    """What a failed push left on the target branch, checked against the Hub where possible."""
    if head_before is None:
        return "no commit was made"
    head_now = _head(api, repo_id, target)
    if head_now is None:
        return f"{target} could not be re-checked (it was at {head_before[:8]} before the push)"
    if head_now == head_before:
        return f"{target} was left unchanged at {head_before[:8]}"
    return f"{target} moved from {head_before[:8]} to {(head_now or '?')[:8]}, so check it on the Hub"


def _verify_remote(
    api: HfApi, repo_id: str, commit: str, files: dict[str, Path], *, where: str, commit_url: str
) -> None:
    """Compare the remote tree at `commit` with the local files; raise HubError on any difference or extra file."""
    try:
        remote = _remote_files(api, repo_id, commit)
    except Exception as exc:
        reason = failure_reason(exc, where)
        if reason is None:
            raise
        raise HubError(
            f"Commit {commit[:8]} was pushed to {repo_id!r} but its files could not be listed to verify it "
            f"({reason}); the local folder is kept, check {commit_url}."
        ) from exc
    differing = [rel for rel, path in files.items() if not _same_content(path, remote.get(rel))]
    differing += sorted(p for p in remote if p not in files and p not in KEPT_REMOTE)
    if differing:
        shown = ", ".join(differing[:5]) + (f" and {len(differing) - 5} more" if len(differing) > 5 else "")
        raise HubError(
            f"Commit {commit[:8]} on {repo_id!r} differs from the local folder in {shown}; "
            f"the local folder is kept, inspect {commit_url} and push again."
        )


def _same_content(path: Path, remote: object) -> bool:
    """Whether a remote RepoFile holds exactly the bytes of `path`."""
    if remote is None:
        return False
    size = path.stat().st_size
    lfs = getattr(remote, "lfs", None)
    if lfs is not None:
        return lfs.size == size and lfs.sha256 == _file_digest(path, hashlib.sha256())
    # git's blob id: sha1 over a "blob <size>\0" header and the bytes
    return getattr(remote, "blob_id", None) == _file_digest(path, hashlib.sha1(b"blob %d\0" % size))


def _file_digest(path: Path, digest: hashlib._Hash) -> str:
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
