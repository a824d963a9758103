"""BENCHMARKS.md tables are copies of benchmarks/results/*.md: the copy must be current and the tool must say why it fails."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("benchmarks_report", REPO_ROOT / "benchmarks" / "report.py")
assert spec and spec.loader
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)

RESULTS = """# Quality

Commands:

    python benchmarks/quality.py --models smollm2

## smollm2

| method | ppl |
|---|---|
| base | 30.51 |
| taylor | 52.34 |

## qwen2.5

| method | ppl |
|---|---|
| base | 46.29 |
"""


def write_case(tmp_path: Path, body: str, heading: str = "smollm2") -> Path:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "q.md").write_text(RESULTS)
    document = tmp_path / "BENCHMARKS.md"
    document.write_text(
        f"# Benchmarks\n\nprose\n\n<!-- table: results/q.md ## {heading} -->\n{body}<!-- /table -->\n\nmore\n"
    )
    return document


def test_stale_table_is_rewritten_and_prose_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = write_case(tmp_path, "| method | ppl |\n|---|---|\n| base | 99.00 |\n")
    args = ["--document", str(document), "--root", str(tmp_path)]
    assert report.main([*args, "--check"]) == 1
    assert "out of date" in capsys.readouterr().out
    assert report.main(args) == 0
    text = document.read_text()
    assert "| taylor | 52.34 |" in text and "99.00" not in text and "46.29" not in text
    assert text.startswith("# Benchmarks\n\nprose\n") and text.endswith("<!-- /table -->\n\nmore\n")
    assert document.stat().st_mode & 0o777 == 0o644
    assert report.main([*args, "--check"]) == 0


def test_missing_heading_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = write_case(tmp_path, "", heading="llama")
    before = document.read_text()
    assert report.main(["--document", str(document), "--root", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: BENCHMARKS.md: results/q.md: no '## llama' heading"
    assert document.read_text() == before


def test_repository_benchmarks_md_is_current() -> None:
    """A results file rerun without `python benchmarks/report.py` leaves BENCHMARKS.md stale; this catches it."""
    document = (REPO_ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert report.MARKER.search(document), "BENCHMARKS.md has no table markers"
    assert report.render(document, REPO_ROOT) == document, "run: python benchmarks/report.py"
