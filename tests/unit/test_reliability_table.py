"""RELIABILITY.md is generated from tests/reliability_cases.py: the copy must be current."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("reliability_table", REPO_ROOT / "scripts" / "reliability_table.py")
assert spec and spec.loader
table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(table)


def test_repository_reliability_md_is_current() -> None:
    """A case added without `python scripts/reliability_table.py` leaves RELIABILITY.md stale; this catches it."""
    assert table.main(["--check"]) == 0, "run: python scripts/reliability_table.py"


def test_stale_document_is_reported_and_rewritten(tmp_path: Path) -> None:
    document = tmp_path / "RELIABILITY.md"
    document.write_text("old\n")
    assert table.main(["--check", "--document", str(document)]) == 1
    assert table.main(["--document", str(document)]) == 0
    text = document.read_text()
    assert "| 1 | (root) | `zhprune-hub (nothing)` | no command at all | 2 |" in text
    assert "`zhprune-hub prune model -o out --tau -1` | negative tau | 2 | Invalid --tau |" in text
    assert table.main(["--check", "--document", str(document)]) == 0
