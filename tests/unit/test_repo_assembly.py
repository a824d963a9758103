"""Public names for local paths, and the fingerprints that decide whether a stage resumes."""

from __future__ import annotations

import os
from pathlib import Path

from zhprune_hub.fingerprint import fingerprint_model_dir, fingerprint_sources, first_change
from zhprune_hub.repo_assembly import PublicNames, licence_files, public_names


def test_public_names_replace_whole_paths_only(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    names = public_names(base_dir=tmp_path / "models" / "smol", base_name="smol", data_dir=data)
    text = f"{data}/c4/x.parquet[:1500], {data}base/y, {tmp_path}/models/smol and {tmp_path}/models/smolder"
    assert names.text(text) == (f"<data-dir>/c4/x.parquet[:1500], {data}base/y, smol and {tmp_path}/models/smolder")
    assert names.doc({"a": [str(data), 3], "b": None}) == {"a": ["<data-dir>", 3], "b": None}
    assert names.leaks(f"see {data}") == [str(data)] and names.leaks("nothing local") == []


def test_a_symlinked_path_is_replaced_in_both_forms(tmp_path):
    real = tmp_path / "real-data"
    real.mkdir()
    link = tmp_path / "data-link"
    link.symlink_to(real)
    names = PublicNames.build([(link, "<data-dir>")])
    assert names.text(f"{link}/a {real}/b") == "<data-dir>/a <data-dir>/b"


def test_licence_files_are_found_whatever_their_suffix(tmp_path):
    for name in ("LICENSE", "LICENSE.txt", "USE_POLICY.md", "NOTICE", "README.md", "license_notes.md"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in licence_files(tmp_path)] == [
        "LICENSE", "LICENSE.txt", "NOTICE", "USE_POLICY.md", "license_notes.md",
    ]  # fmt: skip


def test_fingerprints_see_content_not_touches(tmp_path):
    data = tmp_path / "calib.txt"
    data.write_text("one\n")
    recorded = fingerprint_sources([f"{data}[:10]", "Salesforce/wikitext@main (wikitext-2-raw-v1/train)"])
    assert [r["kind"] for r in recorded] == ["file", "hub"] and recorded[0]["path"] == str(data)
    os.utime(data, ns=(1, 1))
    assert first_change(recorded) is None  # touched, same bytes
    data.write_text("two\n")
    assert first_change(recorded) == f"{data} changed"
    data.unlink()
    assert first_change(recorded) == f"{data} is gone"


def test_a_model_directory_is_fingerprinted_by_size_and_time(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"w" * 10)
    recorded = [fingerprint_model_dir(tmp_path)]
    assert first_change(recorded) is None
    os.utime(tmp_path / "model.safetensors", ns=(5, 5))
    assert first_change(recorded) == f"{Path(tmp_path)} changed"
