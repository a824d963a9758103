"""The composite action (action.yml) run locally the way a runner runs it, against the local Hub server.

`run_action` parses action.yml, fills each step's `env:` by evaluating the few expressions the action uses
(`inputs.*`, `env.*`, `github.action_path`, `steps.*.outputs.*`; anything else fails the test), gives each
step a fresh GITHUB_OUTPUT file and shared GITHUB_STEP_SUMMARY / RUNNER_TEMP / GITHUB_ACTION_PATH, and runs
its script with `bash --noprofile --norc -eo pipefail` like `shell: bash` does on a runner.

The `python` input points at a wrapper around this interpreter (which already imports this checkout's
zhprune_hub), so the action skips its virtual environment, and the wrapper records every argv it is called
with and whether HF_TOKEN was in its environment: the tests see exactly what reached the tool, and which
steps held the token.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import make_tiny_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[2]
ACTION = yaml.safe_load((REPO_ROOT / "action.yml").read_text(encoding="utf-8"))
EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}")
sys.path.insert(0, str(REPO_ROOT / "scripts"))
import action_env  # noqa: E402
import action_summary  # noqa: E402

REPOSITORY = "tester/zhprune-plans"

TINY_EXTRA = "--num-samples 8 --seq-len 64 --max-tokens 512 --ppl-seq-len 128"
TINY_INPUTS = {
    "calibration": "c4",
    "ppl-datasets": "wikitext2",
    "zeroshot-tasks": "piqa",
    "limit": "8",
    "extra-args": TINY_EXTRA,
}


# --- a minimal runner for composite actions -----------------------------------------------------------------


@dataclass
class ActionRun:
    returncode: int
    outputs: dict[str, str]
    steps: dict[str, dict[str, str]]
    stdout: str
    stderr: str
    summary: str
    argv: list[list[str]]
    root: Path
    token_seen: list[bool]

    @property
    def log(self) -> str:
        return self.stdout + self.stderr

    def results(self) -> dict:
        return json.loads(Path(self.outputs["results"]).read_text(encoding="utf-8"))


def evaluate(expression: str, context: dict) -> str:
    """The value of one `${{ }}` expression, for the expressions action.yml uses and no others."""
    expr = expression.strip()
    head, _, rest = expr.partition(".")
    if head == "inputs" and rest in context["inputs"]:
        return context["inputs"][rest]
    if head == "env":
        return context["env"].get(rest, "")
    if expr == "github.action_path":
        return str(REPO_ROOT)
    if head == "steps":
        step_id, kind, name = rest.split(".", 2)
        assert kind == "outputs", expr
        return context["steps"].get(step_id, {}).get(name, "")
    raise AssertionError(f"expression {expr!r} is not supported by this test's evaluator")


def substitute(value: str, context: dict) -> str:
    return EXPRESSION.sub(lambda m: evaluate(m.group(1), context), str(value))


CONDITION = re.compile(r"^inputs\.([a-z-]+) (==|!=) '([a-z-]*)'$")


def condition_holds(condition: str, context: dict) -> bool:
    """A step's `if:`, for the one form action.yml uses (`inputs.NAME == 'value'` or `!=`) and no other."""
    match = CONDITION.match(condition.strip())
    assert match, f"condition {condition!r} is not supported by this test's evaluator"
    name, op, value = match.groups()
    return (context["inputs"][name] == value) == (op == "==")


def parse_output_file(path: Path) -> dict[str, str]:
    """GITHUB_OUTPUT's two forms: `name=value` and `name<<DELIMITER` ... `DELIMITER`."""
    outputs: dict[str, str] = {}
    lines = iter(path.read_text(encoding="utf-8").splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            value = []
            for body in lines:
                if body == delimiter:
                    break
                value.append(body)
            else:
                raise AssertionError(f"output {name!r}: delimiter {delimiter!r} never closed")
            outputs[name] = "\n".join(value)
        elif line:
            name, value = line.split("=", 1)
            outputs[name] = value
    return outputs


def python_wrapper(directory: Path) -> tuple[Path, Path]:
    """An executable that logs its argv and whether it holds HF_TOKEN (one JSON object a line), then execs
    this interpreter (so it also works when this interpreter lives in a virtual environment)."""
    directory.mkdir(parents=True, exist_ok=True)
    log, wrapper = directory / "argv.jsonl", directory / "python"
    wrapper.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"with open({str(log)!r}, 'a', encoding='utf-8') as fh:\n"
        "    token = bool(os.environ.get('HF_TOKEN'))\n"
        "    fh.write(json.dumps({'argv': sys.argv[1:], 'token': token}) + '\\n')\n"
        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n",
        encoding="utf-8",
    )
    wrapper.chmod(0o755)
    return wrapper, log


def run_action(
    root: Path, inputs: dict[str, str], *, env: dict[str, str] | None = None, until: str | None = None
) -> ActionRun:
    """Run action.yml's steps as a runner would; stop after the step `until`, or at the first failure."""
    unknown = set(inputs) - set(ACTION["inputs"])
    assert not unknown, f"not inputs of action.yml: {unknown}"
    runner_temp, workspace = root / "runner_temp", root / "workspace"
    for directory in (runner_temp, workspace):
        directory.mkdir(parents=True, exist_ok=True)
    summary = root / "step_summary.md"
    summary.touch()
    wrapper, argv_log = python_wrapper(root / "bin")
    given = {"python": str(wrapper), **inputs}
    context = {
        "inputs": {name: str(given.get(name, spec.get("default", ""))) for name, spec in ACTION["inputs"].items()},
        "env": {},
        "steps": {},
    }
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    base_env.update(env or {})
    base_env.update(
        GITHUB_ACTIONS="true",
        GITHUB_REPOSITORY=REPOSITORY,
        GITHUB_ACTION_PATH=str(REPO_ROOT),
        GITHUB_STEP_SUMMARY=str(summary),
        GITHUB_WORKSPACE=str(workspace),
        RUNNER_TEMP=str(runner_temp),
    )
    base_env.pop("RUNNER_TOOL_CACHE", None)
    context["env"] = base_env
    stdout, stderr, returncode = [], [], 0
    for index, step in enumerate(ACTION["runs"]["steps"]):
        assert step.get("shell") == "bash" and "run" in step, step
        if "if" in step and not condition_holds(step["if"], context):
            context["steps"][step["id"]] = {}
            continue
        output_file = runner_temp / f"output_{index}"
        output_file.touch()
        step_env = {**base_env, **{k: substitute(v, context) for k, v in step.get("env", {}).items()}}
        step_env["GITHUB_OUTPUT"] = str(output_file)
        script = runner_temp / f"step_{index}.sh"
        script.write_text(step["run"], encoding="utf-8")
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=workspace,
            env=step_env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        stdout.append(proc.stdout)
        stderr.append(proc.stderr)
        context["steps"][step["id"]] = parse_output_file(output_file)
        returncode = proc.returncode
        if returncode != 0 or step["id"] == until:
            break
    outputs = {name: substitute(spec["value"], context) for name, spec in ACTION["outputs"].items()}
    calls = (
        [json.loads(line) for line in argv_log.read_text(encoding="utf-8").splitlines()] if argv_log.exists() else []
    )
    return ActionRun(
        returncode, outputs, context["steps"], "".join(stdout), "".join(stderr), summary.read_text(),
        [c["argv"] for c in calls], root, [c["token"] for c in calls],
    )  # fmt: skip


def publish_argv(run: ActionRun) -> list[str]:
    calls = [a[2:] for a in run.argv if a[:2] == ["-m", "zhprune_hub"]]
    assert len(calls) == 1, run.argv
    return calls[0]


def assert_token_nowhere(token: str, run: ActionRun, *extra_roots: Path) -> None:
    """The token's value is in no captured text and no file the run left (weights included)."""
    needle = token.encode()
    for name, text in (("stdout", run.stdout), ("stderr", run.stderr), ("summary", run.summary)):
        assert token not in text, f"token leaked into {name}"
    assert token not in json.dumps(run.outputs) + json.dumps(run.steps)
    for root in (run.root, *extra_roots):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                with path.open("rb") as fh:
                    # Weights: only a safetensors header can hold text, and it comes first.
                    data = fh.read(1 << 20) if path.suffix == ".safetensors" else fh.read()
                assert needle not in data, f"token leaked into {path}"


def assert_summary_matches(run: ActionRun, doc: dict) -> None:
    """Each variant has an overview row built from its JSON entry, and its deltas table verbatim."""
    rows = [line for line in run.summary.splitlines() if line.startswith("| ") and not line.startswith("| variant ")]
    overview = [r for r in rows if r.split(" | ")[0] in {f"| {v['name']}" for v in doc["variants"]}]
    assert len(overview) == len(doc["variants"]), run.summary
    for variant, row in zip(doc["variants"], overview, strict=True):
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert cells[0] == variant["name"]
        assert variant["repo_id"] in cells[1] and (variant["repo_url"] or "") in cells[1]
        assert cells[2].startswith(variant["status"])
        expected_delta = "–" if variant["ppl_delta"] is None else f"{variant['ppl_delta']:+.2%}"
        assert cells[3] == expected_delta
        if variant["commit_url"]:
            assert variant["commit_url"] in cells[4] or (variant["pr_url"] or "") in cells[4]
        if variant["deltas_markdown"]:
            assert variant["deltas_markdown"].rstrip("\n") in run.summary


# --- action.yml itself -----------------------------------------------------------------------------------


def test_inputs_reach_scripts_only_through_env() -> None:
    for name, spec in ACTION["inputs"].items():
        assert spec.get("description") and "default" in spec, name
    assert "token" not in " ".join(ACTION["inputs"]).lower()
    for step in ACTION["runs"]["steps"]:
        assert "${{" not in step["run"], f"expression inside run: of step {step['id']}"
        assert "eval " not in step["run"] and "set -x" not in step["run"]
        assert step["run"].lstrip().startswith("set -euo pipefail")
    used = {
        m.group(1).strip()
        for s in ACTION["runs"]["steps"]
        for v in s.get("env", {}).values()
        for m in EXPRESSION.finditer(v)
    }
    assert {f"inputs.{name}" for name in ACTION["inputs"]} <= used
    assert set(ACTION["outputs"]) == {"repo-urls", "commit-urls", "results", "ppl-delta", "matrix"}


# --- scripts/action_summary.py on a handmade document ----------------------------------------------------------

SAMPLE_DELTAS = (
    "| metric | base | pruned | Δ |\n|---|---|---|---|\n| wikitext2 ppl | 13.70 | 15.10 | +10.22% |\n"
    "| piqa acc | 0.650 | 0.620 | -0.030 |\n"
)


def _sample() -> dict:
    ok = {
        "name": "smol-20",
        "repo_id": "tester/smol-20",
        "status": "published",
        "failed_stage": None,
        "error": None,
        "repo_url": "https://hub.example/tester/smol-20",
        "commit_url": "https://hub.example/tester/smol-20/commit/0123456789abcdef0123456789abcdef01234567",
        "pr_url": None,
        "work_dir": "/w/abc",
        "results": "/w/abc/card/zhprune_results.json",
        "card": "/w/abc/card/README.md",
        "ppl_delta": 0.10218978102189781,
        "deltas_markdown": SAMPLE_DELTAS,
    }
    failed = {
        **ok,
        "name": "smol-40",
        "repo_id": "tester/smol-40",
        "status": "failed",
        "failed_stage": "push",
        "error": "Hub said 500 | retry\n::warning::not a command, `code` ```",
        "repo_url": None,
        "commit_url": None,
        "ppl_delta": None,
        "deltas_markdown": "",
    }
    pr = {
        **ok,
        "name": "smol-30",
        "repo_id": "tester/smol-30",
        "ppl_delta": 0.2,
        "pr_url": "https://hub.example/tester/smol-30/discussions/1",
    }
    return {"schema_version": 1, "dry_run": False, "variants": [failed, ok, pr]}


def _summarize(tmp_path: Path, doc: dict | None, exit_code: int, monkeypatch, capsys) -> tuple[int, dict, str, str]:
    results = tmp_path / "publish.json"
    results.write_text("" if doc is None else json.dumps(doc), encoding="utf-8")
    out, summary = tmp_path / "out", tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code = action_summary.main([str(results), "--exit-code", str(exit_code)])
    return code, parse_output_file(out), summary.read_text(encoding="utf-8"), capsys.readouterr().out


def test_summary_outputs_and_tables(tmp_path, monkeypatch, capsys) -> None:
    doc = _sample()
    code, outputs, summary, log = _summarize(tmp_path, doc, 1, monkeypatch, capsys)
    assert code == 1
    assert outputs["repo-urls"].splitlines() == [
        "https://hub.example/tester/smol-20",
        "https://hub.example/tester/smol-20",
    ]
    assert outputs["commit-urls"].splitlines() == [doc["variants"][1]["commit_url"], doc["variants"][2]["pr_url"]]
    assert outputs["ppl-delta"] == repr(0.10218978102189781)  # the first variant that has one, in plan order
    assert outputs["results"] == str((tmp_path / "publish.json").resolve())
    run = ActionRun(1, outputs, {}, log, "", summary, [], tmp_path, [])
    assert_summary_matches(run, doc)
    assert "| smol-40 | tester/smol-40 | failed (push) | – | – |" in summary
    assert "[pull request](https://hub.example/tester/smol-30/discussions/1)" in summary
    assert "````text\nHub said 500 | retry\n::warning::not a command, `code` ```\n````" in summary
    # One annotation per failure, on one line, so the error text cannot start a workflow command of its own.
    errors = [line for line in log.splitlines() if line.startswith("::error")]
    assert errors == [
        "::error title=zhprune-hub%3A smol-40::variant smol-40 (tester/smol-40) failed at stage push: "
        "Hub said 500 | retry%0A::warning::not a command, `code` ```"
    ]
    assert not any(line.startswith("::warning") for line in log.splitlines())
    assert "variant smol-20 (tester/smol-20): published, perplexity +10.22% https://hub.example/" in log


def test_summary_when_publish_printed_nothing(tmp_path, monkeypatch, capsys) -> None:
    code, outputs, summary, log = _summarize(tmp_path, None, 2, monkeypatch, capsys)
    assert code == 1
    assert outputs == {"repo-urls": "", "commit-urls": "", "results": "", "ppl-delta": ""}
    assert "exited with status 2 before printing its results" in summary
    assert log.startswith("::error title=zhprune-hub publish::")


def test_summary_of_a_clean_dry_run(tmp_path, monkeypatch, capsys) -> None:
    doc = _sample()
    doc["dry_run"] = True
    doc["variants"] = [{**doc["variants"][1], "status": "dry-run", "repo_url": None, "commit_url": None}]
    code, outputs, summary, _ = _summarize(tmp_path, doc, 0, monkeypatch, capsys)
    assert code == 0
    assert outputs["repo-urls"] == outputs["commit-urls"] == ""
    assert summary.startswith("## zhprune-hub publish (dry run: nothing pushed)\n")
    assert SAMPLE_DELTAS.rstrip("\n") in summary


# --- the action's steps, run locally ------------------------------------------------------------------------


def _stand_in_venv(venv: Path, *, key: str) -> None:
    """A ready virtual environment whose python runs this interpreter (a script, not a symlink: a symlink to a
    virtualenv's python loses that virtualenv's packages once it lives outside it)."""
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n', encoding="utf-8")
    python.chmod(0o755)
    (venv / ".zhprune-hub-ready").write_text(key + "\n", encoding="utf-8")


def test_setup_reuses_a_matching_virtual_environment(tmp_path) -> None:
    """Without the `python` input the action uses its venv keyed by what is installed, per repository."""
    bin_dir = tmp_path / "path"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    key = action_env.install_key(REPO_ROOT)
    scope = REPOSITORY.replace("/", "_")
    venv = tmp_path / "hf-home" / "zhprune-hub" / scope / "venvs" / key
    _stand_in_venv(venv, key=key)
    run = run_action(
        tmp_path,
        {"python": "", "hf-home": str(tmp_path / "hf-home")},
        env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HF_TOKEN": "hf_secret_value_for_this_test"},
        until="setup",
    )
    assert run.returncode == 0, run.log
    assert run.steps["setup"]["python"] == str(venv / "bin" / "python")
    assert run.steps["setup"]["work-dir"] == str(tmp_path / "hf-home" / "zhprune-hub" / scope / "work" / key)
    assert f"Reusing the virtual environment {venv} (install key {key})." in run.log


def test_the_install_key_follows_the_installed_files_not_the_version(tmp_path) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "zhprune_hub" / "templates").mkdir(parents=True)
    (checkout / "zhprune_hub" / "__init__.py").write_text('__version__ = "0.1.0"\n')
    (checkout / "zhprune_hub" / "templates" / "card.md.j2").write_text("{{ x }}\n")
    (checkout / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (checkout / "constraints.txt").write_text("torch==2.13.0\n")
    first = action_env.install_key(checkout)
    (checkout / "zhprune_hub" / "__pycache__").mkdir()
    (checkout / "zhprune_hub" / "__pycache__" / "x.pyc").write_bytes(b"compiled")
    assert action_env.install_key(checkout) == first  # byte code is not what is installed
    keys = {first}
    for rel, text in (
        ("zhprune_hub/templates/card.md.j2", "{{ y }}\n"),  # same __version__, different code
        ("zhprune_hub/new_module.py", "x = 1\n"),
        ("constraints.txt", "torch==2.12.0\n"),
        ("pyproject.toml", "[project]\nname = 'y'\n"),
    ):
        (checkout / rel).write_text(text)
        keys.add(action_env.install_key(checkout))
    assert len(keys) == 5
    assert action_env.installed_matches(REPO_ROOT)  # this interpreter imports the checkout itself
    assert not action_env.installed_matches(checkout)


def test_only_the_publish_step_holds_the_token(tmp_path) -> None:
    token = "hf_secret_value_for_this_test"
    run = run_action(tmp_path, {"base-model": "x", "dry-run": "yes"}, env={"HF_TOKEN": token}, until="setup")
    assert run.returncode == 0, run.log
    setup_calls = run.token_seen
    assert setup_calls and not any(setup_calls)  # the setup step ran Python, and never with the token
    assert [call[-2] for call in run.argv] == ["key", "matches"]


def test_inputs_with_shell_metacharacters_stay_literal(tmp_path) -> None:
    canary = tmp_path / "pwned"
    hostile = {
        "base-model": f'"; touch {canary}1 #',
        "repo-id": f"tester/x$(touch {canary}2)",
        "calibration": f"`touch {canary}3`",
        "revision": f"main'; touch {canary}4; '",
        "extra-args": f'--commit-message "$(touch {canary}5)" --seed 0',
    }
    run = run_action(tmp_path, {**hostile, "dry-run": "true"})
    argv = publish_argv(run)
    assert argv[argv.index("--") + 1 :] == [hostile["base-model"]]
    assert argv[argv.index("--repo-id") + 1] == hostile["repo-id"]
    assert argv[argv.index("--calibration") + 1] == hostile["calibration"]
    assert argv[argv.index("--revision") + 1] == hostile["revision"]
    assert argv[argv.index("--commit-message") + 1] == f"$(touch {canary}5)"
    assert "--dry-run" in argv and "--json" in argv
    assert run.returncode == 1  # the tool rejected the values; the shell ran none of them
    assert not list(tmp_path.glob("pwned*"))


def test_bad_boolean_input_fails_before_publishing(tmp_path) -> None:
    run = run_action(tmp_path, {"base-model": "x", "dry-run": "yes"})
    assert run.returncode == 1
    assert "::error::input dry-run must be true or false, got: yes" in run.stdout
    assert not [a for a in run.argv if a[:2] == ["-m", "zhprune_hub"]]


def test_action_publishes_a_tiny_model(tmp_path, hub_server, shared_data) -> None:
    base = make_tiny_checkpoint("llama", tmp_path / "base")
    repo = "tester/tiny-action"
    env = {
        "HF_TOKEN": hub_server.token,
        "HF_HUB_DISABLE_XET": "1",
        "ZHPRUNE_DATA_DIR": str(shared_data),
    }
    inputs = {
        **TINY_INPUTS,
        "base-model": str(base),
        "repo-id": repo,
        "ratio": "0.25",
        "hf-endpoint": hub_server.endpoint,
        "hf-home": str(tmp_path / "hf-home"),
    }
    started = time.perf_counter()
    run = run_action(tmp_path / "run", inputs, env=env)
    seconds = time.perf_counter() - started
    assert run.returncode == 0, run.log
    doc = run.results()
    [variant] = doc["variants"]
    assert variant["status"] == "published", variant
    head = hub_server.head(repo)
    assert run.outputs["commit-urls"] == variant["commit_url"] and variant["commit_url"].endswith(head)
    assert run.outputs["repo-urls"] == variant["repo_url"]
    assert float(run.outputs["ppl-delta"]) == pytest.approx(variant["ppl_delta"])
    assert_summary_matches(run, doc)
    argv = publish_argv(run)
    assert argv[-2:] == ["--", str(base)]
    for flag, value in (("--ratio", "0.25"), ("--ppl", "wikitext2"), ("--tasks", "piqa"), ("--limit", "8")):
        assert argv[argv.index(flag) + 1] == value
    assert_token_nowhere(hub_server.token, run, tmp_path / "hf-home")
    # Of every Python the action ran (install check, argument split, publish, summary), only publish held the token.
    assert [held for held in run.token_seen] == [call[:2] == ["-m", "zhprune_hub"] for call in run.argv]
    for name, data in hub_server.files(repo).items():
        assert hub_server.token.encode() not in data, name
    print(f"tiny action run: {seconds:.1f} s")


def test_action_plan_keeps_publishing_after_a_failed_variant(tmp_path, hub_server, shared_data) -> None:
    """Two variants; the first push fails: the log names variant and stage, the second still publishes,
    and a rerun resumes the first at its push."""
    base = make_tiny_checkpoint("llama", tmp_path / "base")
    plan = {
        "defaults": {
            "model": str(base),
            "calibration": "c4",
            "num_samples": 8,
            "seq_len": 64,
            "ppl": ["wikitext2"],
            "max_tokens": 512,
            "ppl_seq_len": 128,
            "tasks": ["piqa"],
            "limit": 8,
        },
        "variants": [
            {"name": "a", "ratio": 0.2, "repo_id": "tester/tiny-a"},
            {"name": "b", "ratio": 0.3, "repo_id": "tester/tiny-b"},
        ],
    }
    (tmp_path / "zhprune.yaml").write_text(yaml.safe_dump(plan), encoding="utf-8")
    env = {"HF_TOKEN": hub_server.token, "HF_HUB_DISABLE_XET": "1", "ZHPRUNE_DATA_DIR": str(shared_data)}
    inputs = {
        "config": str(tmp_path / "zhprune.yaml"),
        "hf-endpoint": hub_server.endpoint,
        "hf-home": str(tmp_path / "hf-home"),
    }
    hub_server.fail_next_commit = 500
    first = run_action(tmp_path / "first", inputs, env=env)
    assert first.returncode == 1
    a, b = first.results()["variants"]
    assert (a["status"], a["failed_stage"], b["status"]) == ("failed", "push", "published"), first.results()
    assert "::error title=zhprune-hub%3A a::variant a (tester/tiny-a) failed at stage push: " in first.stdout
    assert first.outputs["repo-urls"] == b["repo_url"]
    assert_summary_matches(first, first.results())
    assert "README.md" not in hub_server.files("tester/tiny-a") and "README.md" in hub_server.files("tester/tiny-b")

    second = run_action(tmp_path / "second", inputs, env=env)
    assert second.returncode == 0, second.log
    a, b = second.results()["variants"]
    assert (a["status"], b["status"]) == ("published", "unchanged")
    assert a["commit_url"].endswith(hub_server.head("tester/tiny-a"))
    assert_token_nowhere(hub_server.token, second, tmp_path / "hf-home")


@pytest.mark.slow
def test_action_publishes_smollm2(tmp_path, hub_server, shared_data, smollm2_dir) -> None:
    repo = "tester/smollm2-135m-pruned-action"
    env = {"HF_TOKEN": hub_server.token, "HF_HUB_DISABLE_XET": "1", "ZHPRUNE_DATA_DIR": str(shared_data)}
    inputs = {
        "base-model": str(smollm2_dir),
        "repo-id": repo,
        "ratio": "0.1",
        "calibration": "c4",
        "ppl-datasets": "wikitext2",
        "zeroshot-tasks": "piqa",
        "limit": "20",
        "extra-args": "--num-samples 8 --seq-len 64 --max-tokens 2048",
        "hf-endpoint": hub_server.endpoint,
        "hf-home": str(tmp_path / "hf-home"),
    }
    started = time.perf_counter()
    run = run_action(tmp_path / "run", inputs, env=env)
    seconds = time.perf_counter() - started
    assert run.returncode == 0, run.log
    doc = run.results()
    [variant] = doc["variants"]
    assert variant["status"] == "published" and variant["commit_url"].endswith(hub_server.head(repo))
    assert 0 < float(run.outputs["ppl-delta"]) < 10  # 8 calibration windows cost perplexity; no collapse
    assert_summary_matches(run, doc)
    assert_token_nowhere(hub_server.token, run, tmp_path / "hf-home")
    if out := os.environ.get("ZHPRUNE_ACTION_SUMMARY_OUT"):  # to refresh the example in docs/github-action.md
        Path(out).write_text(run.summary, encoding="utf-8")
    stages = {
        p.parent.name: json.loads(p.read_text())["seconds"] for p in Path(variant["work_dir"]).glob("*/stage.json")
    }
    print(f"SmolLM2 action run: {seconds:.1f} s; stages: {stages}")


# --- the plan commands (the jobs of .github/workflows/publish-matrix.yml) -------------------------------------


def test_action_plan_matrix_outputs_the_pinned_matrix(tmp_path, hub_server) -> None:
    hub_server.create_repo("tester/base")
    plan = {
        "defaults": {"model": "tester/base", "repo_id": "tester/base-{name}"},
        "variants": [{"name": "a", "ratio": 0.1}, {"name": "b", "ratio": 0.2}],
    }
    (tmp_path / "zhprune.yaml").write_text(yaml.safe_dump(plan), encoding="utf-8")
    inputs = {"command": "plan-matrix", "config": str(tmp_path / "zhprune.yaml"), "hf-endpoint": hub_server.endpoint}
    run = run_action(tmp_path / "run", inputs, env={"HF_TOKEN": hub_server.token})
    assert run.returncode == 0, run.log
    matrix = json.loads(run.outputs["matrix"])
    head = hub_server.head("tester/base")
    assert [(e["id"], e["repo_id"], e["model_revision"]) for e in matrix["include"]] == [
        ("a", "tester/base-a", head),
        ("b", "tester/base-b", head),
    ]
    assert run.outputs["results"] == "" and run.steps["publish"] == {}  # the publish step did not run
    assert run.token_seen == [c[:2] == ["-m", "zhprune_hub"] for c in run.argv]
    assert_token_nowhere(hub_server.token, run)


def test_action_aggregate_adds_the_table_to_the_job_summary(tmp_path) -> None:
    plan = {"defaults": {"model": "Org/base", "repo_id": "tester/smol-{name}"},
            "variants": [{"name": "smol-20"}, {"name": "smol-30"}, {"name": "smol-40"}]}  # fmt: skip
    (tmp_path / "zhprune.yaml").write_text(yaml.safe_dump(plan), encoding="utf-8")
    metrics = {
        "base": {"model_id": "Org/base", "commit": "c" * 40, "parameters": 1000, "values": {"ppl/wikitext2": 10.0}},
        "pruned": {"parameters": 800, "values": {"ppl/wikitext2": 12.5}},
    }
    ok = {**_sample()["variants"][1], "id": "smol-20", "name": "smol-20", "repo_id": "tester/smol-smol-20",
          "metrics": metrics}  # fmt: skip
    failed = {**_sample()["variants"][0], "id": "smol-40", "name": "smol-40", "repo_id": "tester/smol-smol-40"}
    results = tmp_path / "artifacts"
    for entry in (ok, failed):  # smol-30's job left nothing
        (results / f"publish-{entry['id']}").mkdir(parents=True)
        doc = {"schema_version": 1, "dry_run": False, "variants": [entry]}
        (results / f"publish-{entry['id']}" / "publish.json").write_text(json.dumps(doc), encoding="utf-8")
    inputs = {"command": "aggregate", "config": str(tmp_path / "zhprune.yaml"), "results-dir": str(results)}
    run = run_action(tmp_path / "run", inputs)
    assert run.returncode == 1, run.log  # two variants did not publish
    assert "| **base** | `Org/base` @ `cccccccc` | — | 1,000 | 10.000 |" in run.summary
    assert "| published | 800 (-20.0%) | 12.500 (+25.0%) |" in run.summary
    assert "| smol-30 | tester/smol-smol-30 | no result |" in run.summary
    assert "### 2 of 3 variants did not publish" in run.summary and "failed at `push`: Hub said 500" in run.summary


def test_an_unknown_command_is_one_error(tmp_path) -> None:
    run = run_action(tmp_path, {"command": "deploy", "config": "zhprune.yaml"})
    assert run.returncode == 1
    assert "::error::input command must be publish, plan-matrix, evaluate-base or aggregate, got: deploy" in run.stdout
