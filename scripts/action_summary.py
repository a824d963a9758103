"""Turn `zhprune-hub publish --json` output into GitHub Action outputs, a job summary and log annotations.

Shipped with the composite action (action.yml) and run by whatever interpreter the action set up, so it
uses the standard library only. Usage:

    python scripts/action_summary.py RESULTS.json --exit-code N

RESULTS.json is what `publish --json` printed (possibly empty when it failed before printing) and N its
exit status. The outputs go to $GITHUB_OUTPUT, the summary is appended to $GITHUB_STEP_SUMMARY (each
skipped when unset), one line per variant and an `::error` annotation per failed variant go to stdout.
The exit status is 1 when publish failed or any variant failed, else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


def load_results(path: Path) -> dict[str, Any] | None:
    """The publish document at `path`, or None when it is missing, empty or not a publish document."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("variants"), list):
        return None
    return doc


def headline_delta(doc: dict[str, Any]) -> float | None:
    """The relative perplexity change of the first variant (plan order) that has one."""
    for variant in doc["variants"]:
        if variant.get("ppl_delta") is not None:
            return float(variant["ppl_delta"])
    return None


def action_outputs(doc: dict[str, Any] | None, results: Path) -> dict[str, str]:
    """The action's outputs: URLs one per line in plan order, the results path and the headline delta."""
    if doc is None:
        return {"repo-urls": "", "commit-urls": "", "results": "", "ppl-delta": ""}
    variants = doc["variants"]
    delta = headline_delta(doc)
    return {
        "repo-urls": "\n".join(v["repo_url"] for v in variants if v.get("repo_url")),
        "commit-urls": "\n".join(
            v.get("pr_url") or v["commit_url"] for v in variants if v.get("pr_url") or v.get("commit_url")
        ),
        "results": str(results),
        "ppl-delta": "" if delta is None else repr(delta),
    }


def write_outputs(path: Path, outputs: dict[str, str]) -> None:
    """Append outputs in the multi-line file-command form, with a delimiter no value can contain."""
    with path.open("a", encoding="utf-8") as fh:
        for name, value in outputs.items():
            delimiter = f"ghadelimiter_{uuid.uuid4().hex}"
            while delimiter in value:  # pragma: no cover - a 128-bit collision
                delimiter = f"ghadelimiter_{uuid.uuid4().hex}"
            fh.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")


def _link(text: str, url: str | None) -> str:
    return f"[{_cell(text)}]({url})" if url else _cell(text)


def _cell(text: Any) -> str:
    """Text safe inside a markdown table cell: one line, pipes escaped."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _fenced(text: str) -> str:
    """`text` as a fenced block whose fence is longer than any backtick run inside it."""
    fence = "`" * max(3, _longest_backtick_run(text) + 1)
    return f"{fence}text\n{text}\n{fence}"


def _longest_backtick_run(text: str) -> int:
    best = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        best = max(best, run)
    return best


def _format_delta(delta: Any) -> str:
    return "–" if delta is None else f"{float(delta):+.2%}"


def _status_text(variant: dict[str, Any]) -> str:
    if variant.get("status") == "failed":
        return f"failed ({variant.get('failed_stage') or 'unknown stage'})"
    return str(variant.get("status"))


def render_summary(doc: dict[str, Any] | None, *, exit_code: int) -> str:
    """The job summary: an overview table, then per variant its links and its deltas table."""
    if doc is None:
        return (
            "## zhprune-hub publish\n\n"
            f"`zhprune-hub publish` exited with status {exit_code} before printing its results: "
            "the step's log says why.\n"
        )
    dry = " (dry run: nothing pushed)" if doc.get("dry_run") else ""
    lines = [
        f"## zhprune-hub publish{dry}",
        "",
        "| variant | repository | status | perplexity change | commit |",
        "|---|---|---|---|---|",
    ]
    for v in doc["variants"]:
        commit = v.get("pr_url") or v.get("commit_url")
        commit_text = "pull request" if v.get("pr_url") else (commit.rsplit("/", 1)[-1][:7] if commit else "–")
        lines.append(
            f"| {_cell(v.get('name', ''))} | {_link(v.get('repo_id') or '–', v.get('repo_url'))} "
            f"| {_cell(_status_text(v))} | {_format_delta(v.get('ppl_delta'))} | {_link(commit_text, commit)} |"
        )
    for v in doc["variants"]:
        lines += ["", f"### {_cell(v.get('name', ''))}: {_cell(v.get('repo_id') or '')}", ""]
        links = [
            f"[{label}]({v[key]})"
            for label, key in (("repository", "repo_url"), ("commit", "commit_url"), ("pull request", "pr_url"))
            if v.get(key)
        ]
        lines.append(" · ".join([f"**{_cell(_status_text(v))}**", *links]))
        if v.get("status") == "failed":
            lines += ["", _fenced(str(v.get("error") or "no error message"))]
        if v.get("deltas_markdown"):
            lines += ["", str(v["deltas_markdown"]).rstrip("\n")]
    return "\n".join(lines) + "\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def log_lines(doc: dict[str, Any] | None, *, exit_code: int) -> list[str]:
    """One line per variant for the log, and an `::error` annotation per failure (escaped, one line each)."""
    if doc is None:
        return [
            f"::error title=zhprune-hub publish::{_escape_data(f'zhprune-hub publish exited with status {exit_code} before printing its results; the log above says why.')}"
        ]
    lines = []
    for v in doc["variants"]:
        name, repo = str(v.get("name", "")), str(v.get("repo_id") or "")
        if v.get("status") == "failed":
            stage = v.get("failed_stage") or "unknown stage"
            message = f"variant {name} ({repo}) failed at stage {stage}: {v.get('error') or 'no error message'}"
            lines.append(f"::error title={_escape_property(f'zhprune-hub: {name}')}::{_escape_data(message)}")
        else:
            where = v.get("pr_url") or v.get("commit_url") or v.get("repo_url") or ""
            delta = "" if v.get("ppl_delta") is None else f", perplexity {_format_delta(v['ppl_delta'])}"
            # A plain line (starts with "variant", so never a workflow command): only newlines need care.
            line = f"variant {name} ({repo}): {v.get('status')}{delta} {where}".rstrip()
            lines.append(line.replace("\r", " ").replace("\n", " "))
    if exit_code and not any(v.get("status") == "failed" for v in doc["variants"]):
        lines.append(f"::error title=zhprune-hub publish::zhprune-hub publish exited with status {exit_code}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="File holding `zhprune-hub publish --json` output.")
    parser.add_argument("--exit-code", type=int, default=0, help="Exit status of `zhprune-hub publish`.")
    args = parser.parse_args(argv)

    doc = load_results(args.results)
    if doc is not None and doc.get("schema_version") != SCHEMA_VERSION:
        print(f"::warning::results schema_version {doc.get('schema_version')!r}, this script reads {SCHEMA_VERSION}")
    for line in log_lines(doc, exit_code=args.exit_code):
        print(line)
    if out := os.environ.get("GITHUB_OUTPUT"):
        write_outputs(Path(out), action_outputs(doc, args.results.resolve()))
    if summary := os.environ.get("GITHUB_STEP_SUMMARY"):
        with Path(summary).open("a", encoding="utf-8") as fh:
            fh.write(render_summary(doc, exit_code=args.exit_code))
    failed = doc is None or any(v.get("status") == "failed" for v in doc["variants"])
    return 1 if args.exit_code or failed else 0


if __name__ == "__main__":
    sys.exit(main())
