"""Which checkpoint code runs without --trust-remote-code: only our own modules, named locally by auto_map."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from zhprune_hub.errors import ModelSourceError
from zhprune_hub.loading import MODELING_DIR, ModelSource, auto_map_entries, shipped_code_matches, trust_for

OURS = {
    "AutoConfig": "modeling_zhprune.ZhpruneLlamaConfig",
    "AutoModelForCausalLM": "modeling_zhprune.ZhpruneLlamaForCausalLM",
}


def checkpoint(tmp_path: Path, auto_map: dict, *, tokenizer_map: dict | None = None, copy_code: bool = True) -> Path:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "zhprune_llama", "auto_map": auto_map}))
    if tokenizer_map is not None:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({"auto_map": tokenizer_map}))
    if copy_code:
        shutil.copyfile(MODELING_DIR / "modeling_zhprune.py", tmp_path / "modeling_zhprune.py")
    return tmp_path


def source(path: Path) -> ModelSource:
    return ModelSource(reference=str(path), local_dir=path)


def test_our_own_code_is_trusted_without_asking(tmp_path: Path) -> None:
    path = checkpoint(tmp_path, OURS)
    assert shipped_code_matches(path)
    assert trust_for(source(path), None) is True
    assert trust_for(source(path), False) is False  # an explicit no is respected


@pytest.mark.parametrize(
    ("auto_map", "tokenizer_map", "copy_code"),
    [
        ({k: f"other/repo--{v}" for k, v in OURS.items()}, None, True),  # same file, code fetched from elsewhere
        ({**OURS, "AutoTokenizer": "tokenization_x.Tok"}, None, True),  # a module we do not ship
        (OURS, None, False),  # the module file is missing
        (OURS, {"AutoTokenizer": ["other/repo--tok.Tok", None]}, True),  # the tokenizer needs foreign code
    ],
    ids=["other-repository", "unknown-module", "file-missing", "foreign-tokenizer"],
)
def test_anything_else_needs_consent(tmp_path: Path, auto_map: dict, tokenizer_map: dict | None, copy_code: bool):
    path = checkpoint(tmp_path, auto_map, tokenizer_map=tokenizer_map, copy_code=copy_code)
    assert not shipped_code_matches(path)
    with pytest.raises(ModelSourceError, match="needs code that is not zhprune-hub's own"):
        trust_for(source(path), None)
    assert trust_for(source(path), True) is True  # the user said so


def test_one_changed_byte_makes_the_code_foreign(tmp_path: Path) -> None:
    path = checkpoint(tmp_path, OURS)
    code = (path / "modeling_zhprune.py").read_bytes()
    (path / "modeling_zhprune.py").write_bytes(code[:-1] + bytes([code[-1] ^ 1]))
    assert not shipped_code_matches(path)


def test_entries_come_from_both_configs_and_lists(tmp_path: Path) -> None:
    path = checkpoint(tmp_path, OURS, tokenizer_map={"AutoTokenizer": ["a.Slow", None]})
    assert sorted(auto_map_entries(path)) == sorted([*OURS.values(), "a.Slow"])
    (tmp_path / "config.json").write_text("{broken")  # unreadable configs name nothing
    assert auto_map_entries(path) == ["a.Slow"]
