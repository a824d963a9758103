"""The corpora registry: names, mixes, local files, disjoint splits, seeded windows, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from zhprune_hub.data import (
    CORPORA,
    calibration_windows,
    default_eval_names,
    evaluation_text,
    get_corpus,
    known_names,
    list_datasets,
    resolve_data_dir,
)
from zhprune_hub.data.registry import parse_spec
from zhprune_hub.data.sampling import token_hash
from zhprune_hub.data.sources import read_split
from zhprune_hub.errors import DataError


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture
def no_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZHPRUNE_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _write_txt(path: Path, documents: list[str]) -> Path:
    path.write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    return path


# --- names, aliases, specs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("wikitext2", "wikitext2"),
        ("wikitext", "wikitext2"),
        ("WikiText-2", "wikitext2"),
        ("ptb", "ptb"),
        ("c4", "c4"),
        ("wikitext_zh", "wikitext_zh"),
        ("wikitext-zh", "wikitext_zh"),
        ("wikipedia_zh", "wikitext_zh"),
        ("wikipedia-zh", "wikitext_zh"),
        ("c4_zh", "c4_zh"),
        ("c4-zh", "c4_zh"),
    ],
)
def test_names_and_aliases_resolve(typed: str, canonical: str) -> None:
    assert get_corpus(typed).name == canonical


def test_languages_and_purposes() -> None:
    table = {c.name: (c.language, c.purposes) for c in CORPORA}
    assert table == {
        "wikitext2": ("en", ("calibration", "perplexity")),
        "ptb": ("en", ("perplexity",)),
        "c4": ("en", ("calibration", "perplexity")),
        "wikitext_zh": ("zh", ("calibration", "perplexity")),
        "c4_zh": ("zh", ("calibration", "perplexity")),
    }
    assert default_eval_names("en") == ["wikitext2", "ptb"]
    assert default_eval_names("zh") == ["wikitext2", "ptb", "c4_zh"]


def test_unknown_name_lists_known_names_and_says_a_path_works() -> None:
    with pytest.raises(DataError) as info:
        parse_spec("wikitxt")
    message = str(info.value)
    assert "'wikitxt'" in message
    assert all(name in message for name in known_names())
    assert "path" in message and "\n" not in message


def test_mix_is_parsed_and_normalised() -> None:
    parts = parse_spec("wikitext_zh:0.7, c4:0.3")
    assert [(p.label, round(p.weight, 6)) for p in parts] == [("wikitext_zh", 0.7), ("c4", 0.3)]
    parts = parse_spec("wikipedia-zh:2,c4:2")
    assert [(p.label, p.weight) for p in parts] == [("wikitext_zh", 0.5), ("c4", 0.5)]
    assert parse_spec("auto") is None and parse_spec(" AUTO ") is None


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("wikitext_zh:0.7,c4", "'c4'"),
        ("wikitext_zh:0.7,c4:abc", "'c4:abc'"),
        ("wikitext_zh:0,c4:1", "'0'"),
        ("c4:0.5,c4:0.5", "twice"),
        ("auto:0.5,c4:0.5", "'auto'"),
        ("wikitext_zh:0.7,,c4:0.3", "empty"),
        ("nope:0.5,c4:0.5", "'nope'"),
        ("", "empty"),
    ],
)
def test_bad_mix_or_spec_is_one_sentence(spec: str, fragment: str) -> None:
    with pytest.raises(DataError) as info:
        parse_spec(spec)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_missing_or_unsupported_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        parse_spec(str(tmp_path / "nope.txt"))
    other = tmp_path / "data.csv"
    other.write_text("text\nhello\n")
    with pytest.raises(DataError, match="unsupported type"):
        parse_spec(str(other))


def test_resolve_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZHPRUNE_DATA_DIR", raising=False)
    assert resolve_data_dir(None) is None
    assert resolve_data_dir(tmp_path) == tmp_path
    monkeypatch.setenv("ZHPRUNE_DATA_DIR", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    with pytest.raises(DataError, match="ZHPRUNE_DATA_DIR"):
        monkeypatch.setenv("ZHPRUNE_DATA_DIR", str(tmp_path / "missing"))
        resolve_data_dir(None)
    with pytest.raises(DataError, match="--data-dir"):
        resolve_data_dir(tmp_path / "missing")


# --- the local data directory -----------------------------------------------------------------


def test_list_datasets_sees_the_shared_data_dir(shared_data: Path) -> None:
    rows = {row["name"]: row for row in list_datasets(shared_data)}
    assert set(rows) == {*known_names(), "auto"}
    for name in known_names():
        assert rows[name]["evaluation"]["local_found"], name
        assert rows[name]["evaluation"]["read_from"].startswith(str(shared_data))
    # The shared data has no WikiText-2 train split: calibration would come from the Hub.
    assert not rows["wikitext2"]["calibration"]["local_found"]
    assert rows["wikitext2"]["calibration"]["read_from"].startswith("Hub Salesforce/wikitext@")
    assert rows["ptb"]["calibration"] is None
    json.dumps(rows)


def test_evaluation_text_formats(shared_data: Path) -> None:
    wiki = evaluation_text("wikitext", data_dir=shared_data)
    assert wiki.name == "wikitext2" and wiki.language == "en"
    assert wiki.text.startswith(" = Robert Boulter = \n\n Robert Boulter is an English film")
    assert "\r" not in wiki.text and "\n\n\n" not in wiki.text
    ptb = evaluation_text("ptb", data_dir=shared_data)
    assert ptb.text.startswith("no it wasn't black monday\nbut while")
    zh = evaluation_text("c4-zh", data_dir=shared_data)
    assert zh.language == "zh" and zh.source.endswith("cmrc2018_trial.json")
    assert zh.text.count("\n\n") == 255  # 256 trial paragraphs
    with pytest.raises(DataError, match="one corpus"):
        evaluation_text("c4:0.5,ptb:0.5", data_dir=shared_data)


@pytest.mark.parametrize("name", [c.name for c in CORPORA if c.calibration is not None])
def test_calibration_and_evaluation_never_share_text(name: str, shared_data: Path, tokenizer) -> None:
    corpus = get_corpus(name)
    cal, ev = corpus.calibration, corpus.evaluation
    # The registry itself: different local files or disjoint slices of one file, and a different Hub split.
    if cal.local.path == ev.local.path:
        assert cal.local.stop is not None and ev.local.start is not None and cal.local.stop <= ev.local.start
    assert (cal.hub.dataset, cal.hub.config, cal.hub.split, cal.hub.data_files) != (
        ev.hub.dataset,
        ev.hub.config,
        ev.hub.split,
        ev.hub.data_files,
    )
    evaluation = read_split(corpus, "evaluation", shared_data)
    if not (shared_data / cal.local.path).is_file():
        # No silent fallback to other text: without the calibration file (and offline) it is an error.
        with pytest.raises(DataError, match=r"locally .* does not exist.*Hub"):
            read_split(corpus, "calibration", shared_data)
        return
    calibration = read_split(corpus, "calibration", shared_data)
    assert not set(calibration.documents) & set(evaluation.documents)
    eval_text = evaluation.joined()
    assert not any(doc in eval_text for doc in calibration.documents[:200])
    windows = calibration_windows(name, tokenizer, num_samples=16, seq_len=128, data_dir=shared_data)
    for row in windows.input_ids:
        probe = tokenizer.decode(row[40:72]).strip()
        assert probe and probe not in eval_text


# --- sampling ---------------------------------------------------------------------------------


def test_windows_are_reproducible_and_hashed(shared_data: Path, tokenizer) -> None:
    first = calibration_windows("c4", tokenizer, num_samples=8, seq_len=256, seed=3, data_dir=shared_data)
    again = calibration_windows("c4", tokenizer, num_samples=8, seq_len=256, seed=3, data_dir=shared_data)
    other = calibration_windows("c4", tokenizer, num_samples=8, seq_len=256, seed=4, data_dir=shared_data)
    assert first.input_ids.shape == (8, 256) and first.input_ids.dtype == torch.long
    assert torch.equal(first.input_ids, again.input_ids)
    assert first.token_hash == again.token_hash == token_hash(first.input_ids)
    assert other.token_hash != first.token_hash
    report = first.report()
    assert json.loads(json.dumps(report)) == report
    assert report["name"] == "c4" and report["language"] == "en" and report["seed"] == 3
    assert report["num_samples"] == 8 and report["seq_len"] == 256
    assert report["sources"] == [f"{shared_data / 'c4/c4_validation_2k.parquet'}[:1500]"]
    assert "input_ids" not in report


def test_token_hash_is_stable() -> None:
    # Pinned: a changed hash function would make old reports incomparable with new ones.
    expected = "f875c670e07daea324bd87e1d8eb2078d158ee5fcf535e499e128a79602d0428"
    assert token_hash(torch.arange(12).view(3, 4)) == expected
    assert token_hash(torch.arange(12, dtype=torch.int32).view(3, 4)) == expected
    assert token_hash(torch.arange(12).view(4, 3)) != expected


def test_short_documents_are_joined_with_eos_never_padded(tmp_path: Path, tokenizer) -> None:
    documents = [
        f"Short note number {i} about the {word} garden." for i, word in enumerate(["red", "blue", "green"] * 20)
    ]
    path = _write_txt(tmp_path / "notes.txt", documents)
    result = calibration_windows(str(path), tokenizer, num_samples=4, seq_len=64, seed=1, language="en")
    flat = result.input_ids.flatten().tolist()
    eos = tokenizer.eos_token_id
    encoded = {tuple(tokenizer(doc, add_special_tokens=False)["input_ids"]) for doc in documents}
    pieces: list[list[int]] = [[]]
    for token in flat:
        if token == eos:
            pieces.append([])
        else:
            pieces[-1].append(token)
    # Every piece between two EOS is one whole document; the stream never starts with EOS, and
    # the ends are a document's tail (first) and head (last): cut, never padded.
    assert flat[0] != eos
    assert all(tuple(piece) in encoded for piece in pieces[1:-1])
    assert any(tuple(doc[: len(pieces[-1])]) == tuple(pieces[-1]) for doc in encoded)
    assert tuple(pieces[0]) in encoded
    assert len(pieces) - 1 == flat.count(eos) >= 4 * 64 // 20
    assert result.language == "en" and result.sources == [str(path)]


def test_long_document_is_cut_into_windows(tmp_path: Path, tokenizer) -> None:
    long_text = " ".join(f"word{i}" for i in range(2000))
    path = _write_txt(tmp_path / "long.txt", [long_text])
    result = calibration_windows(str(path), tokenizer, num_samples=3, seq_len=50)
    expected = tokenizer(long_text, add_special_tokens=False)["input_ids"][:150]
    assert result.input_ids.flatten().tolist() == expected


def test_too_little_text_says_how_many_windows_fit(tmp_path: Path, tokenizer) -> None:
    documents = ["One small line of text.", "Another small line."]
    path = _write_txt(tmp_path / "tiny.txt", documents)
    total = sum(len(tokenizer(d, add_special_tokens=False)["input_ids"]) for d in documents) + 1
    with pytest.raises(DataError) as info:
        calibration_windows(str(path), tokenizer, num_samples=4, seq_len=8)
    assert f"only {total // 8} windows of 8 tokens" in str(info.value)
    assert "4 were requested" in str(info.value)
    with pytest.raises(DataError, match="positive integer"):
        calibration_windows(str(path), tokenizer, num_samples=0, seq_len=8)


def test_mix_splits_windows_by_weight(shared_data: Path, tokenizer) -> None:
    result = calibration_windows("wikitext_zh:0.7,c4:0.3", tokenizer, num_samples=10, seq_len=64, data_dir=shared_data)
    assert result.input_ids.shape == (10, 64)
    assert result.weights == {"wikitext_zh": 0.7, "c4": 0.3}
    assert result.language == "zh+en" and len(result.sources) == 2
    zh = calibration_windows("wikitext_zh", tokenizer, num_samples=7, seq_len=64, data_dir=shared_data)
    rows = {tuple(row.tolist()) for row in result.input_ids}
    assert {tuple(row.tolist()) for row in zh.input_ids} <= rows
    with pytest.raises(DataError, match="none of the 2 windows"):
        calibration_windows("wikitext_zh:0.9,c4:0.1", tokenizer, num_samples=2, seq_len=64, data_dir=shared_data)


# --- language -----------------------------------------------------------------------------------


def test_auto_needs_the_model_or_an_explicit_language(shared_data: Path, tokenizer) -> None:
    # The card's language list is only a hint: without a model to measure, `auto` cannot decide.
    with pytest.raises(DataError, match="needs the model"):
        calibration_windows(
            "auto", tokenizer, num_samples=2, seq_len=32, data_dir=shared_data, model_card_languages=["zh", "en"]
        )
    explicit = calibration_windows(
        "auto", tokenizer, num_samples=2, seq_len=32, data_dir=shared_data, language="zh", model_card_languages=["en"]
    )
    assert explicit.name == "wikitext_zh" and explicit.spec == "auto" and explicit.language == "zh"
    assert explicit.language_decision.how == "given" and explicit.language_decision.card_languages == ["en"]
    assert explicit.report()["language_decision"]["figures"] is None


def test_language_must_agree_with_a_named_corpus(shared_data: Path, tokenizer) -> None:
    with pytest.raises(DataError, match="'c4' is en text"):
        calibration_windows("c4", tokenizer, num_samples=2, seq_len=32, data_dir=shared_data, language="zh")
    with pytest.raises(DataError, match="'fr'"):
        calibration_windows("c4", tokenizer, num_samples=2, seq_len=32, data_dir=shared_data, language="fr")


def test_file_language_is_detected_or_declared(tmp_path: Path, tokenizer) -> None:
    zh = _write_txt(tmp_path / "zh.txt", ["今天天气很好，我们去公园散步，然后一起吃午饭。" * 5] * 4)
    en = tmp_path / "en.jsonl"
    en.write_text("\n".join(json.dumps({"text": f"An English sentence number {i}."}) for i in range(40)))
    assert calibration_windows(str(zh), tokenizer, num_samples=2, seq_len=16).language == "zh"
    assert calibration_windows(str(en), tokenizer, num_samples=2, seq_len=16).language == "en"
    assert calibration_windows(str(zh), tokenizer, num_samples=2, seq_len=16, language="en").language == "en"


def test_ptb_is_evaluation_only(shared_data: Path, tokenizer) -> None:
    with pytest.raises(DataError, match="perplexity only"):
        calibration_windows("ptb", tokenizer, num_samples=2, seq_len=32, data_dir=shared_data)


# --- bad files and missing sources ------------------------------------------------------------


def test_user_files_in_every_format(tmp_path: Path, tokenizer) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"Document {i} talks about rivers and mountains." for i in range(30)]
    (tmp_path / "a.json").write_text(json.dumps([{"text": t} for t in texts]))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(texts)))
    pq.write_table(pa.table({"text": texts}), tmp_path / "c.parquet")
    _write_txt(tmp_path / "d.txt", texts)
    hashes = {
        calibration_windows(str(tmp_path / name), tokenizer, num_samples=3, seq_len=32).token_hash
        for name in ("a.json", "b.jsonl", "c.parquet", "d.txt")
    }
    assert len(hashes) == 1


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("wrong.jsonl", '{"content": "hello"}\n', "no string field 'text'"),
        ("broken.jsonl", '{"text": "ok"}\n{not json\n', "Line 2"),
        ("wrong.json", '[{"body": "hello"}]', "no string field 'text'"),
        ("empty.txt", "", "holds no text"),
        ("latin1.txt", b"caf\xe9 au lait", "not UTF-8"),
        ("wrong.parquet", None, "no 'text' column"),
        ("junk.parquet", b"not a parquet file", "not a readable parquet"),
    ],
)
def test_bad_user_files_name_the_file_and_field(
    tmp_path: Path, tokenizer, name: str, content: str | bytes | None, fragment: str
) -> None:
    path = tmp_path / name
    if content is None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"body": ["hello"]}), path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(DataError) as info:
        calibration_windows(str(path), tokenizer, num_samples=1, seq_len=4)
    assert fragment in str(info.value) and str(path) in str(info.value)


def test_bad_registered_file_names_the_expected_field(tmp_path: Path, tokenizer) -> None:
    (tmp_path / "wikipedia_zh").mkdir()
    bad = tmp_path / "wikipedia_zh" / "cmrc2018_dev.json"
    bad.write_text(json.dumps({"data": [{"title": "no paragraphs"}]}))
    with pytest.raises(DataError) as info:
        calibration_windows("wikitext_zh", tokenizer, num_samples=1, seq_len=4, data_dir=tmp_path)
    assert str(bad) in str(info.value) and "data[].paragraphs[].context" in str(info.value)


def test_a_copied_data_dir_is_read_like_the_shared_one(
    shared_data: Path, tmp_path: Path, monkeypatch, tokenizer
) -> None:
    (tmp_path / "c4").mkdir()
    shutil.copy(shared_data / "c4" / "c4_validation_2k.parquet", tmp_path / "c4")
    monkeypatch.setenv("ZHPRUNE_DATA_DIR", str(tmp_path))
    from_env = calibration_windows("c4", tokenizer, num_samples=4, seq_len=64)
    from_flag = calibration_windows("c4", tokenizer, num_samples=4, seq_len=64, data_dir=shared_data)
    assert from_env.token_hash == from_flag.token_hash
    assert from_env.sources[0].startswith(str(tmp_path))


def test_offline_without_data_dir_names_both_places(no_data_dir: None, tokenizer) -> None:
    with pytest.raises(DataError) as info:
        calibration_windows("c4", tokenizer, num_samples=2, seq_len=32)
    message = str(info.value)
    assert "no data directory is set" in message and "ZHPRUNE_DATA_DIR" in message
    assert "allenai/c4@main" in message and "HF_HUB_OFFLINE" in message
    assert message.count(". ") == 0 and "\n" not in message
    with pytest.raises(DataError, match=r"ptb/ptb.test.txt does not exist|no data directory"):
        evaluation_text("ptb")


def test_offline_with_a_data_dir_lacking_the_file(no_data_dir: None, tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        evaluation_text("wikitext2", data_dir=tmp_path)
    assert str(tmp_path / "wikitext2" / "wiki.test.raw") in str(info.value)
    assert "Salesforce/wikitext@main" in str(info.value)
