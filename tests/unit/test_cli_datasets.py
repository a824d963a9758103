"""`zhprune-hub datasets`: the listing, its JSON form, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from zhprune_hub.cli import app
from zhprune_hub.data import known_names


def _cli(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, **(env_extra or {})}
    env.pop("ZHPRUNE_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-c", "from zhprune_hub.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_json_lists_every_name_and_where_it_is_read_from(shared_data: Path) -> None:
    result = CliRunner().invoke(app, ["datasets", "--json", "--data-dir", str(shared_data)])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert set(rows) == {*known_names(), "auto"}
    assert rows["wikitext_zh"]["aliases"] == ["wikitext-zh", "wikipedia_zh", "wikipedia-zh"]
    assert rows["c4_zh"]["language"] == "zh" and rows["ptb"]["purposes"] == ["perplexity"]
    assert rows["wikitext_zh"]["calibration"]["read_from"] == str(shared_data / "wikipedia_zh" / "cmrc2018_dev.json")
    assert rows["wikitext2"]["calibration"]["read_from"].startswith("Hub Salesforce/wikitext@main")


def test_table_and_name_filter(shared_data: Path) -> None:
    result = CliRunner().invoke(app, ["datasets", "wikipedia-zh", "ptb", "--data-dir", str(shared_data)])
    assert result.exit_code == 0, result.output
    assert "wikitext_zh" in result.output and "ptb" in result.output and "c4_zh" not in result.output


def test_without_data_dir_everything_points_at_the_hub(tmp_path: Path) -> None:
    result = _cli("datasets", "--json", env_extra={"ZHPRUNE_DATA_DIR": "", "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    for row in json.loads(result.stdout):
        for split in ("calibration", "evaluation"):
            if row[split] is not None:
                assert row[split]["read_from"].startswith("Hub ") and "offline" in row[split]["read_from"]


def test_unknown_name_is_one_line_without_traceback() -> None:
    result = _cli("datasets", "wikitxt")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "'wikitxt'" in errors[0] and "wikitext_zh" in errors[0] and "path" in errors[0]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_missing_data_dir_is_one_line_without_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = _cli("datasets", "--data-dir", str(missing))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and str(missing) in errors[0]
    assert "Traceback" not in result.stderr
