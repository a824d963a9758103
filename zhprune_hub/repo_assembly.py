"""The folder that is published: weights, config, code, card, results, report, and the base's licence files.

What is published names nothing of the machine that built it: the base model is named by its Hub id
(or its directory name when it was local), files of the data directory as `<data-dir>/...`, the work
directory as `<work-dir>`, the home directory as `~`. Every JSON and Markdown file of the folder is
checked for the local paths that were replaced before the folder is handed to `push`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhprune_hub.errors import ZhpruneError

RESULTS_NAME = "zhprune_results.json"
#: Files of the base model's repository that carry its terms: a pruned model stays under them.
LICENCE_PREFIXES = ("LICENSE", "LICENCE", "USE_POLICY", "NOTICE")
_CHECKED_SUFFIXES = (".json", ".md")


class AssemblyError(ZhpruneError):
    """The folder to publish could not be assembled, or would expose a local path."""


# --- public names for local paths ------------------------------------------------------------------


@dataclass(frozen=True)
class PublicNames:
    """Replaces local absolute paths by the names a reader of the published repository can use."""

    replacements: tuple[tuple[str, str], ...]

    @classmethod
    def build(cls, pairs: list[tuple[Path | str | None, str]]) -> PublicNames:
        """From (local path, public name) pairs; both the typed and the resolved form of a path are replaced."""
        found: dict[str, str] = {}
        for path, name in pairs:
            if path is None or not str(path).strip():
                continue
            for form in {str(Path(path).expanduser()), str(Path(path).expanduser().resolve())}:
                if os.path.isabs(form) and form != os.sep:
                    found.setdefault(form.rstrip(os.sep), name)
        return cls(tuple(sorted(found.items(), key=lambda kv: -len(kv[0]))))

    def _pattern(self, prefix: str) -> re.Pattern[str]:
        return re.compile(re.escape(prefix) + r"(?![\w.-])")

    def text(self, value: str) -> str:
        for prefix, name in self.replacements:
            value = self._pattern(prefix).sub(lambda _m, name=name: name, value)
        return value

    def doc(self, value: Any) -> Any:
        """The same JSON-like document with every string passed through `text`."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.doc(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.doc(v) for v in value]
        return value

    def leaks(self, text: str) -> list[str]:
        return [prefix for prefix, _ in self.replacements if self._pattern(prefix).search(text)]


def public_base_name(reference: str, local_dir: Path, *, from_hub: bool) -> str:
    """The base model as a reader knows it: its Hub id, or the name of its local directory."""
    return reference if from_hub else Path(local_dir).resolve().name


def public_names(
    *,
    base_dir: Path | None,
    base_name: str,
    data_dir: Path | str | None = None,
    calibration: str | None = None,
    extra: list[tuple[Path | str | None, str]] | None = None,
) -> PublicNames:
    """The replacements for one publish: base directory, data directory, calibration files, `extra`, home."""
    pairs: list[tuple[Path | str | None, str]] = [(base_dir, base_name), (data_dir, "<data-dir>"), *(extra or [])]
    for part in (calibration or "").split(","):
        candidate = Path(re.sub(r":[0-9.]+$", "", part.strip())).expanduser()
        if part.strip() and candidate.is_file():
            pairs.append((candidate, candidate.name))
    pairs.append((Path.home(), "~"))
    return PublicNames.build(pairs)


# --- the base's licence files ------------------------------------------------------------------------


def licence_files(base_dir: Path | None) -> list[Path]:
    """LICENSE / USE_POLICY / NOTICE files at the top of the base model's directory (any suffix)."""
    if base_dir is None or not Path(base_dir).is_dir():
        return []
    return sorted(p for p in Path(base_dir).iterdir() if p.is_file() and p.name.upper().startswith(LICENCE_PREFIXES))


def copy_licence_files(base_dir: Path | None, folder: Path) -> list[str]:
    """Copy the base's licence files into `folder` (a file of that name already there wins); their names."""
    names = []
    for path in licence_files(base_dir):
        if not (folder / path.name).exists():
            shutil.copy2(path, folder / path.name)
        names.append(path.name)
    return names


# --- assembly --------------------------------------------------------------------------------------------


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def relabel(results: Any, old: str, new: str) -> Any:
    """The same results with one model renamed (the repo id may change without re-evaluating)."""
    if old == new:
        return results
    models = [m.model_copy(update={"model_id": new}) if m.model_id == old else m for m in results.models]
    deltas = [d.model_copy(update={"model_id": new}) if d.model_id == old else d for d in results.deltas]
    reference = new if results.reference == old else results.reference
    return results.model_copy(update={"models": models, "deltas": deltas, "reference": reference})


def public_results(results: Any, names: PublicNames) -> Any:
    """Results whose model ids and sources name no local path."""
    return type(results).model_validate(names.doc(results.model_dump(mode="json")))


def assemble_repo(
    target: Path,
    *,
    model_dir: Path,
    report: dict[str, Any],
    results: Any,
    repo_id: str,
    command: str,
    base_dir: Path | None,
    names: PublicNames,
    folders: dict[str, Path] | None = None,
) -> tuple[Path, Any]:
    """Build the folder to push in a staging folder beside `target`, check it, then swap it in.

    Weights and code are hard-linked from the pruned checkpoint (copied across file systems), and
    each of `folders` (e.g. an OpenVINO export) into the subfolder its key names; the pruning report,
    the results and the card are written with local paths replaced; the base's licence files are
    copied. Returns (README path, card context).

    Raises:
        AssemblyError: a local path would still be published.
    """
    from zhprune_hub.card import write_card
    from zhprune_hub.outputs import OUTPUT_MARKER, atomic_directory
    from zhprune_hub.pruning import REPORT_NAME
    from zhprune_hub.results import save_results
    from zhprune_hub.workspace import write_json

    with atomic_directory(Path(target), overwrite=True) as staging:
        for path in sorted(Path(model_dir).rglob("*")):
            if path.is_file() and path.name not in (REPORT_NAME, OUTPUT_MARKER):
                _link_or_copy(path, staging / path.relative_to(model_dir))
        for name, folder in (folders or {}).items():
            for path in sorted(Path(folder).rglob("*")):
                if path.is_file() and path.name != OUTPUT_MARKER:
                    _link_or_copy(path, staging / name / path.relative_to(folder))
        carried = copy_licence_files(base_dir, staging)
        report = names.doc(report)
        write_json(staging / REPORT_NAME, report)
        results = public_results(results, names)
        save_results(results, staging / RESULTS_NAME)
        readme, ctx = write_card(
            staging,
            report=report,
            results=results,
            repo_id=repo_id,
            command=names.text(command),
            base_dir=base_dir,
            pruned_id=repo_id,
            licence_files=carried,
        )
        check_no_local_paths(staging, names)
    return Path(target) / readme.name, ctx


def check_no_local_paths(folder: Path, names: PublicNames) -> None:
    """Fail when a published JSON or Markdown file still shows one of the replaced local paths.

    Raises:
        AssemblyError: naming the file and the path.
    """
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file() or path.suffix.lower() not in _CHECKED_SUFFIXES:
            continue
        leaked = names.leaks(path.read_text(encoding="utf-8", errors="replace"))
        if leaked:
            raise AssemblyError(
                f"{path.name} would publish the local path {leaked[0]!r}; nothing was pushed, report this as a bug."
            )


# --- the `card` sub-command ----------------------------------------------------------------------------


def prune_command(report: dict[str, Any], directory: Path) -> str:
    """The `zhprune-hub prune` command recorded in a pruning report."""
    options = report.get("options", {})
    parts = [
        "zhprune-hub prune",
        shlex.quote(report["base_model"]["reference"]),
        "--output",
        shlex.quote(str(directory)),
    ]
    if options.get("repair") is False:
        parts.append("--no-repair")
    for key in ("ratio", "method", "layout", "head_unit", "calibration", "language", "num_samples", "seq_len",
                "damping", "correction", "round_to", "temperature", "tau", "seed", "gguf_file", "revision"):  # fmt: skip
        value = options.get(key)
        if value is not None or key == "tau":
            parts += [f"--{key.replace('_', '-')}", shlex.quote("None" if value is None else str(value))]
    return " ".join(parts)


def card_into(directory: Path, *, base: str, results_path: Path, repo_id: str | None = None) -> tuple[Path, Any]:
    """Render README.md and the per-layer PNG into a pruned checkpoint, and copy the results beside them.

    The card names the base by its Hub id or directory name and the checkpoint by its directory name.

    Raises:
        ZhpruneError: no pruning report, unreadable results, an unknown base model, a bad repo id.
    """
    from zhprune_hub.card import pruned_results, write_card
    from zhprune_hub.loading import resolve_source
    from zhprune_hub.plan import PruneSettings, render_repo_id
    from zhprune_hub.pruning import read_report
    from zhprune_hub.results import load_results, save_results

    directory = Path(directory)
    report = read_report(directory)
    results = load_results(results_path)
    pruned = pruned_results(results)
    if repo_id is None:
        repo_id = pruned.model_id if pruned.model_id.count("/") == 1 and not Path(pruned.model_id).exists() else None
    repo_id = repo_id or f"OWNER/{directory.resolve().name}"
    if not repo_id.startswith("OWNER/"):
        render_repo_id(repo_id, owner=None, model=base, name="card", prune=PruneSettings(), label="--repo-id")
    source = resolve_source(base)
    base_name = public_base_name(source.reference, source.local_dir, from_hub=source.from_hub)
    options = report.get("options", {})
    names = public_names(
        base_dir=None if source.from_hub else source.local_dir,
        base_name=base_name,
        data_dir=options.get("data_dir"),
        calibration=options.get("calibration"),
        extra=[(directory.resolve(), directory.resolve().name)],
    )
    results = relabel(relabel(results, pruned.model_id, repo_id), results.reference, base_name)
    results = public_results(results, names)
    carried = copy_licence_files(source.local_dir, directory)
    save_results(results, directory / RESULTS_NAME)
    return write_card(
        directory,
        report=names.doc(report),
        results=results,
        repo_id=repo_id,
        command=names.text(prune_command(report, directory)),
        base_dir=source.local_dir,
        pruned_id=repo_id,
        licence_files=carried,
    )
