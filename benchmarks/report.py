"""Copy the tables of benchmarks/results/*.md into BENCHMARKS.md, so the document cannot drift from the data.

    python benchmarks/report.py            # rewrite the tables in BENCHMARKS.md in place
    python benchmarks/report.py --check    # exit 1 if any table is stale (the test suite runs this)

BENCHMARKS.md marks each copied table with a pair of comments; the text between them is replaced by the
table found under `## HEADING` in FILE (paths relative to the repository root):

    <!-- table: benchmarks/results/quality_grid_smollm2.md ## smollm2 -->
    ...
    <!-- /table -->

Everything outside the markers (the commands, the reading) is prose and stays as written.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_atomically

REPO_ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(
    r"(?P<open><!-- table: (?P<file>\S+) ## (?P<heading>[^>]+?) -->\n)(?P<body>.*?)(?P<close><!-- /table -->)",
    re.DOTALL,
)


class ReportError(Exception):
    """A marker that points at a file or heading that does not exist."""


def table_under(markdown: str, heading: str) -> str:
    """The first contiguous block of `|` lines after `## heading`."""
    lines = markdown.splitlines()
    try:
        start = lines.index(f"## {heading}")
    except ValueError:
        raise ReportError(f"no '## {heading}' heading") from None
    rows: list[str] = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            rows.append(line)
        elif rows or line.startswith("#"):
            break
    if not rows:
        raise ReportError(f"no table under '## {heading}'")
    return "\n".join(rows) + "\n"


def render(document: str, root: Path) -> str:
    """`document` with every marked table replaced by the current one from its results file."""

    def replace(match: re.Match[str]) -> str:
        source = root / match["file"]
        if not source.is_file():
            raise ReportError(f"{match['file']} does not exist (run the benchmark that writes it, or fix the marker)")
        try:
            table = table_under(source.read_text(encoding="utf-8"), match["heading"].strip())
        except ReportError as error:
            raise ReportError(f"{match['file']}: {error}") from None
        return match["open"] + table + match["close"]

    return MARKER.sub(replace, document)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--document", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="Where the marked paths are relative to.")
    parser.add_argument("--check", action="store_true", help="Only report whether the document is current.")
    args = parser.parse_args(argv)

    current = args.document.read_text(encoding="utf-8")
    try:
        updated = render(current, args.root)
    except ReportError as error:
        print(f"error: {args.document.name}: {error}", file=sys.stderr)
        return 2
    tables = len(MARKER.findall(current))
    if updated == current:
        print(f"{args.document.name}: {tables} tables, all current")
        return 0
    if args.check:
        print(f"{args.document.name} is out of date with benchmarks/results; run: python benchmarks/report.py")
        return 1
    write_atomically(args.document, updated)
    print(f"{args.document.name}: {tables} tables rewritten from benchmarks/results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
