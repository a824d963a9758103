"""Write RELIABILITY.md from the bad-input cases in tests/reliability_cases.py.

    python scripts/reliability_table.py           # rewrite RELIABILITY.md
    python scripts/reliability_table.py --check   # exit 1 if RELIABILITY.md is stale (the test suite runs this)

The cases themselves run in tests/integration/test_reliability.py; this script only shows them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = REPO_ROOT / "RELIABILITY.md"

INTRO = """# Reliability: what zhprune-hub does with bad input and faults

Every row below is a test (`tests/integration/test_reliability.py`, one parametrised test over
`tests/reliability_cases.py`). Each runs the installed `zhprune-hub` console script in an empty sandbox
directory holding only what the row needs (a tiny random llama checkpoint as `model`, its pruned output as
`pruned`, two GGUF files in `gguf`, ...), with no Hub token unless the row sets one, and checks:

- the exit code: 0 success, 2 a usage error or a problem with the input, 3 a Hub failure, 130 interrupted;
- stderr: no traceback; one sentence (`Error: ...`, ending in a full stop) that contains the text in the
  last column, or click's usage message for usage errors;
- nothing lost, nothing left behind: after the run the sandbox holds exactly the files it held before, byte
  for byte, apart from what a successful row writes (its output directory).

Hub rows talk to the test suite's local Hub-compatible server through the real huggingface_hub client
(`{hub}`; `{token}` is its write token). Rows marked SIGINT/SIGKILL send the signal once the run's staging
directory (or, for `publish`, the pull stage's marker) exists. The two rows about a read-only directory are
skipped when the suite runs as root, which ignores permission bits; the `/sys` rows test the same refusal on a
filesystem that refuses everyone.

Run them: `python -m pytest -q tests/integration/test_reliability.py` (about two minutes on two cores).
Regenerate this file after adding a case: `python scripts/reliability_table.py`.

"""


def render() -> str:
    sys.path.insert(0, str(REPO_ROOT))
    from tests.reliability_cases import CASES, render_table

    commands = sorted({case.command for case in CASES})
    summary = f"{len(CASES)} cases over {', '.join(f'`{c}`' for c in commands)}.\n\n"
    return INTRO + summary + render_table(CASES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Exit 1 if the document is out of date.")
    parser.add_argument("--document", type=Path, default=DOCUMENT)
    args = parser.parse_args(argv)
    text = render()
    current = args.document.read_text(encoding="utf-8") if args.document.exists() else ""
    if args.check:
        if current != text:
            print(f"{args.document} is out of date: run python scripts/reliability_table.py")
            return 1
        return 0
    from zhprune_hub.outputs import write_atomically

    write_atomically(args.document, text)
    print(f"wrote {args.document} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
