"""push_folder and pull against the local Hub server, through the unmodified huggingface_hub client."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from huggingface_hub import snapshot_download
from safetensors.torch import save_file

from zhprune_hub.errors import HubError
from zhprune_hub.hub import hub_urls, pull, push_folder

REPO = "tester/tiny-pruned"


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    generator = torch.Generator().manual_seed(0)
    save_file({"w": torch.randn(256, 320, generator=generator)}, str(folder / "model.safetensors"))  # ~320 KB
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 320}))
    (folder / "README.md").write_text("---\nlicense: apache-2.0\ntags: [pruned]\n---\n# tiny pruned\n")
    return folder


def _push(server, folder: Path, **kwargs):
    kwargs.setdefault("token", server.token)
    kwargs.setdefault("commit_message", "Publish pruned model")
    return push_folder(folder, REPO, endpoint=server.endpoint, **kwargs)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_push_then_snapshot_download_gives_the_same_bytes(hub_server, model_dir, tmp_path):
    result = _push(hub_server, model_dir)

    assert result.changed and result.files == 3 and result.pr_url is None and result.revision == "main"
    assert result.commit_oid == hub_server.head(REPO)
    assert result.repo_url == f"{hub_server.endpoint}/{REPO}"
    assert result.commit_url == hub_urls(REPO, endpoint=hub_server.endpoint, commit_oid=result.commit_oid).commit
    assert hub_server.history(REPO)[0].title == "Publish pruned model"
    tree = hub_server.history(REPO)[0].tree
    assert tree["model.safetensors"].lfs and not tree["config.json"].lfs

    fresh = tmp_path / "fresh"
    snapshot_download(REPO, endpoint=hub_server.endpoint, local_dir=fresh, token=hub_server.token)
    downloaded = {k: v for k, v in _snapshot(fresh).items() if not k.startswith(".")}
    assert downloaded == _snapshot(model_dir)


def test_republishing_identical_bytes_makes_no_commit(hub_server, model_dir):
    first = _push(hub_server, model_dir)
    commits, history = hub_server.commits_made, len(hub_server.history(REPO))

    again = _push(hub_server, model_dir, commit_message="Publish again")

    assert not again.changed and again.commit_oid == first.commit_oid
    assert hub_server.commits_made == commits and len(hub_server.history(REPO)) == history


def test_create_pr_opens_a_pr_ref_and_leaves_main(hub_server, model_dir):
    _push(hub_server, model_dir)
    main = hub_server.head(REPO)

    same = _push(hub_server, model_dir, create_pr=True)  # identical to main: no PR
    assert not same.changed and same.pr_url is None and same.commit_oid == main
    assert not any(ref.startswith("refs/pr/") for ref in hub_server.refs(REPO))

    (model_dir / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 256}))
    result = _push(hub_server, model_dir, create_pr=True)

    assert result.changed and result.revision == "refs/pr/1"
    assert result.pr_url == f"{hub_server.endpoint}/{REPO}/discussions/1"
    assert hub_server.refs(REPO)["refs/pr/1"] == result.commit_oid
    assert hub_server.head(REPO) == main
    assert hub_server.files(REPO, "refs/pr/1")["config.json"] == (model_dir / "config.json").read_bytes()


def test_push_to_a_quoted_pr_revision_updates_only_that_pr(hub_server, model_dir):
    _push(hub_server, model_dir)
    (model_dir / "config.json").write_text("{}")
    _push(hub_server, model_dir, create_pr=True)
    main, pr_head = hub_server.head(REPO), hub_server.head(REPO, "refs/pr/1")
    (model_dir / "config.json").write_text('{"fixed": true}')

    result = _push(hub_server, model_dir, revision="refs%2Fpr%2F1")

    assert result.changed and result.revision == "refs/pr/1"
    assert hub_server.history(REPO, "refs/pr/1")[1].oid == pr_head
    assert hub_server.head(REPO) == main


def test_revision_creates_the_branch_from_main_and_leaves_main(hub_server, model_dir):
    result = _push(hub_server, model_dir, revision="pruned-20")

    refs = hub_server.refs(REPO)
    assert result.changed and result.revision == "pruned-20" and refs["pruned-20"] == result.commit_oid
    assert [c.title for c in hub_server.history(REPO)] == ["initial commit"]
    assert hub_server.history(REPO, "pruned-20")[1].oid == refs["main"]


def test_private_push_creates_a_private_repo(hub_server, model_dir, tmp_path):
    result = _push(hub_server, model_dir, private=True)

    assert result.changed and hub_server.repos[REPO].private
    with pytest.raises(Exception, match="Repository Not Found"):
        snapshot_download(REPO, endpoint=hub_server.endpoint, local_dir=tmp_path / "anon", token=False)


def test_commit_500_raises_hub_error_and_changes_nothing(hub_server, model_dir):
    _push(hub_server, model_dir)
    main, commits = hub_server.head(REPO), hub_server.commits_made
    (model_dir / "config.json").write_text('{"changed": true}')
    before = _snapshot(model_dir)
    hub_server.fail_next_commit = 500

    with pytest.raises(HubError) as info:
        _push(hub_server, model_dir)

    message = str(info.value)
    assert "HTTP 500" in message and f"main was left unchanged at {main[:8]}" in message
    assert "local folder is kept" in message
    assert hub_server.head(REPO) == main and hub_server.commits_made == commits
    assert _snapshot(model_dir) == before


def test_dropped_lfs_uploads_raise_hub_error_quickly_and_change_nothing(hub_server, model_dir):
    _push(hub_server, model_dir)
    main, commits = hub_server.head(REPO), hub_server.commits_made
    save_file({"w": torch.ones(256, 320)}, str(model_dir / "model.safetensors"))
    before = _snapshot(model_dir)
    puts_before = len(hub_server.requests_to("lfs_put"))
    hub_server.break_lfs_uploads()

    with pytest.raises(HubError) as info:
        _push(hub_server, model_dir)

    assert "LFS upload failed after retries with RemoteProtocolError" in str(info.value)
    assert f"main was left unchanged at {main[:8]}" in str(info.value)
    assert hub_server.head(REPO) == main and hub_server.commits_made == commits
    assert _snapshot(model_dir) == before
    assert len(hub_server.requests_to("lfs_put")) - puts_before == 6  # the client's first try and its 5 retries


def test_one_dropped_lfs_upload_is_retried_by_the_client(hub_server, model_dir):
    hub_server.drop_lfs_uploads = 1

    result = _push(hub_server, model_dir)

    assert result.changed and hub_server.lfs_uploads == 1
    assert [r.status for r in hub_server.requests_to("lfs_put")] == [0, 200]


def test_wrong_token_is_one_clear_error_and_never_shown(hub_server, model_dir, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "hf_wrong_secret_token_value_42"

    with pytest.raises(HubError) as info:
        _push(hub_server, model_dir, token=wrong)

    message = str(info.value)
    assert "rejected the token" in message and "no commit was made" in message
    assert message.count(".") >= 1 and "\n" not in message
    assert REPO not in hub_server.repos
    _assert_token_absent(wrong, info.value, capsys, caplog)


def test_token_never_appears_in_output_or_errors(hub_server, model_dir, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    _push(hub_server, model_dir)
    hub_server.fail_next_commit = 500
    (model_dir / "config.json").write_text("{}")
    with pytest.raises(HubError) as info:
        _push(hub_server, model_dir)
    _assert_token_absent(hub_server.token, info.value, capsys, caplog)


def _assert_token_absent(token: str, error: BaseException, capsys, caplog) -> None:
    chain, seen = [], error
    while seen is not None:
        chain.append(f"{seen!r} {seen}")
        seen = seen.__cause__ or seen.__context__
    captured = capsys.readouterr()
    for text in (*chain, captured.out, captured.err, caplog.text):
        assert token not in text


def test_token_comes_from_hf_token_when_not_passed(hub_server, model_dir, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub_server.token)

    result = _push(hub_server, model_dir, token=None)

    assert result.changed


def test_missing_token_fails_before_any_request(hub_server, model_dir):
    with pytest.raises(HubError, match="No Hub token found"):
        _push(hub_server, model_dir, token=None)
    assert hub_server.requests == []


def test_remote_content_that_differs_from_the_folder_is_reported(hub_server, model_dir):
    hub_server.tamper_next_commit = {"config.json": b'{"tampered": true}'}

    with pytest.raises(HubError, match=r"differs from the local folder in config\.json"):
        _push(hub_server, model_dir)


def test_pull_downloads_a_pushed_snapshot_with_an_explicit_endpoint(hub_server, model_dir, tmp_path):
    pushed = _push(hub_server, model_dir)

    path, commit = pull(REPO, endpoint=hub_server.endpoint, token=hub_server.token, cache_dir=tmp_path / "cache")

    assert commit == pushed.commit_oid
    assert (path / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()
    assert json.loads((path / "config.json").read_text())["hidden_size"] == 320


# --- the remote tree equals the folder, in one commit on top of the head that was read ------------------


def _remote_tree(server, revision: str = "main") -> set[str]:
    return set(server.files(REPO, revision)) - {".gitattributes"}


def _local_tree(folder: Path) -> set[str]:
    return set(_snapshot(folder))


def test_files_gone_from_the_folder_are_deleted_in_the_same_commit(hub_server, model_dir):
    save_file({"w": torch.zeros(4, 4)}, str(model_dir / "model-00002-of-00002.safetensors"))  # an older variant's shard
    (model_dir / "extra").mkdir()
    (model_dir / "extra" / "notes.txt").write_text("old")
    first = _push(hub_server, model_dir)
    hub_server.commit(REPO, {"added-by-hand.md": b"someone else's file"})
    (model_dir / "model-00002-of-00002.safetensors").unlink()
    (model_dir / "extra" / "notes.txt").unlink()
    (model_dir / "extra").rmdir()
    commits = hub_server.commits_made

    result = _push(hub_server, model_dir)

    assert result.changed and hub_server.commits_made == commits + 1
    assert _remote_tree(hub_server) == _local_tree(model_dir) == {"model.safetensors", "config.json", "README.md"}
    request = hub_server.commit_requests[-1]
    assert set(request.deleted) == {"model-00002-of-00002.safetensors", "extra/notes.txt", "added-by-hand.md"}
    assert request.parent_commit == hub_server.history(REPO)[1].oid != first.commit_oid  # the head it read
    assert set(request.added) == set()  # the three kept files are unchanged: nothing re-sent


def test_every_push_names_the_head_it_read_as_parent(hub_server, model_dir):
    hub_server.create_repo(REPO)
    initial = hub_server.head(REPO)

    _push(hub_server, model_dir)

    [request] = hub_server.commit_requests
    assert request.parent_commit == initial and request.revision == "main" and not request.create_pr


@pytest.mark.parametrize("target", ["main", "branch"])
def test_a_concurrent_commit_is_never_overwritten(hub_server, model_dir, target):
    revision = "pruned-20" if target == "branch" else None
    _push(hub_server, model_dir, revision=revision)
    ref = revision or "main"
    before = hub_server.head(REPO, ref)
    (model_dir / "config.json").write_text('{"ours": true}')
    local = _snapshot(model_dir)
    hub_server.race_next_commit = {"config.json": b'{"theirs": true}'}

    with pytest.raises(HubError) as info:
        _push(hub_server, model_dir, revision=revision)

    message = str(info.value)
    theirs = hub_server.head(REPO, ref)
    assert theirs != before and hub_server.files(REPO, ref)["config.json"] == b'{"theirs": true}'
    assert f"{ref} moved from {before[:8]} to {theirs[:8]} after it was read" in message
    assert "nothing was overwritten" in message and "\n" not in message and message.count(". ") == 0
    assert _snapshot(model_dir) == local
    if target == "branch":
        assert hub_server.head(REPO) == hub_server.history(REPO, ref)[-1].oid  # main untouched


def test_a_branch_push_deletes_stale_files_only_on_that_branch(hub_server, model_dir):
    (model_dir / "stale.json").write_text("{}")
    _push(hub_server, model_dir)
    _push(hub_server, model_dir, revision="pruned-20")
    (model_dir / "stale.json").unlink()

    result = _push(hub_server, model_dir, revision="pruned-20")

    assert result.changed and result.revision == "pruned-20"
    assert _remote_tree(hub_server, "pruned-20") == _local_tree(model_dir)
    assert "stale.json" in hub_server.files(REPO)  # main keeps what it had


def test_a_pull_request_holds_exactly_the_folder(hub_server, model_dir):
    (model_dir / "stale.json").write_text("{}")
    _push(hub_server, model_dir)
    main = hub_server.head(REPO)
    (model_dir / "stale.json").unlink()

    result = _push(hub_server, model_dir, create_pr=True)

    assert result.changed and result.revision == "refs/pr/1" and hub_server.head(REPO) == main
    assert _remote_tree(hub_server, "refs/pr/1") == _local_tree(model_dir)
    assert hub_server.history(REPO, "refs/pr/1")[1].oid == main
    assert hub_server.commit_requests[-1].parent_commit == main


def test_an_extra_remote_file_after_the_commit_is_reported(hub_server, model_dir):
    hub_server.tamper_next_commit = {"unexpected.txt": b"x"}

    with pytest.raises(HubError, match=r"differs from the local folder in unexpected\.txt"):
        _push(hub_server, model_dir)
