"""Every case of tests/reliability_cases.py through the installed `zhprune-hub` console script.

Each case runs in a sandbox directory of its own (its working directory), with a private HF_HOME
and no token unless the case sets one. Checked for every case: the exit code; no traceback; for a
known error exactly one `Error: ...` line, one sentence that contains the expected fragment (click's
usage message for usage errors); and that the sandbox holds exactly what it held before, byte for
byte, apart from the paths the case may write: nothing lost, nothing left behind.

The cases run two at a time (single-threaded torch each) in a session-wide pool, so the whole table
costs a couple of minutes on two cores.
"""

from __future__ import annotations

import concurrent.futures
import glob
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.reliability_cases import CASES, Case, Resources, build
from tests.tiny_models import TEXT, make_tiny_checkpoint, make_tiny_gguf

ENTRY_POINT = Path(sys.executable).with_name("zhprune-hub")
WORKERS = int(os.environ.get("ZHPRUNE_RELIABILITY_WORKERS", "2"))
TIMEOUT_S = 240
#: Variables a case must not inherit from the machine running the tests.
SCRUBBED = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_ENDPOINT",
    "HF_HUB_OFFLINE",
    "ZHPRUNE_DATA_DIR",
    "ZHPRUNE_EXPORT_PYTHON",
    "COLUMNS",
)


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    before: dict[str, tuple]
    after: dict[str, tuple]
    sandbox: Path
    hf_home: Path
    note: str = ""


# --- session resources --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def resources(tmp_path_factory: pytest.TempPathFactory) -> Resources:
    """The tiny checkpoint, its pruned output, two GGUF files and a results file, built in-process once."""
    from zhprune_hub.evaluate import evaluate_models
    from zhprune_hub.pruning import PruneConfig, prune_model
    from zhprune_hub.results import save_results

    root = tmp_path_factory.mktemp("reliability")
    model = make_tiny_checkpoint("llama", root / "model")
    text = root / "corpus.txt"
    text.write_text("\n\n".join([TEXT] * 20))
    quiet = lambda *_: None  # noqa: E731
    pruned = prune_model(PruneConfig(model=str(model), output=root / "pruned", method="magnitude"), log=quiet).output
    gguf_dir = root / "gguf"
    gguf_dir.mkdir()
    make_tiny_gguf(model, gguf_dir / "tiny.F32.gguf")
    make_tiny_gguf(model, gguf_dir / "tiny.F16.gguf", dtype="float16")
    config = PruneConfig(
        model=str(gguf_dir),
        output=root / "gguf_pruned",
        method="magnitude",
        layout="uniform",
        gguf_file="tiny.F32.gguf",
    )
    gguf_pruned = prune_model(config, log=quiet).output
    results = evaluate_models(
        [str(model), str(pruned)], ppl=[str(text)], tasks=[], seq_len=64, max_tokens=256, quiet=True
    )
    return Resources(
        model=model,
        pruned=pruned,
        gguf_dir=gguf_dir,
        gguf_pruned=gguf_pruned,
        results=save_results(results, root / "results.json"),
        text=text,
    )


@pytest.fixture(scope="session")
def hub(resources: Resources, tmp_path_factory: pytest.TempPathFactory):
    """One local Hub server for the session, holding the tiny model and a repository of two GGUF files."""
    from hubserver import running_hub_server
    from huggingface_hub import HfApi

    with running_hub_server(tmp_path_factory.mktemp("reliability_hub")) as server:
        api = HfApi(endpoint=server.endpoint, token=server.token)
        for repo, folder in (("tester/tiny", resources.model), ("tester/tiny-gguf", resources.gguf_dir)):
            api.create_repo(repo)
            api.upload_folder(folder_path=str(folder), repo_id=repo, commit_message="fixture")
        yield server


# --- running one case -------------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root`: kind, size, mode and content digest (what 'nothing lost' compares)."""
    entries: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        info = path.lstat()
        if path.is_symlink():
            entries[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            entries[rel] = ("dir", info.st_mode & 0o777)
        else:
            entries[rel] = ("file", info.st_size, info.st_mode & 0o777, hashlib.sha1(path.read_bytes()).hexdigest())
    return entries


def _env(case: Case, hf_home: Path, hub_server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env.update(
        HF_HOME=str(hf_home),
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_DATASETS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        OMP_WAIT_POLICY="PASSIVE",
        TOKENIZERS_PARALLELISM="false",
        PYTHONDONTWRITEBYTECODE="1",
    )
    for key, value in case.env.items():
        if hub_server is not None:
            value = value.replace("{hub}", hub_server.endpoint).replace("{token}", hub_server.token)
        env[key] = value
    return env


def _run(case: Case, sandbox: Path, env: dict[str, str], *, send: str | None) -> tuple[int, str, str]:
    """Run the command; with `send`, deliver that signal as soon as `case.watch` matches in the sandbox."""
    process = subprocess.Popen(
        [str(ENTRY_POINT), *case.args], cwd=sandbox, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    sent = threading.Event()
    if send is not None:

        def watch() -> None:
            pattern = str(sandbox / case.watch)
            while process.poll() is None:
                if glob.glob(pattern):
                    process.send_signal(getattr(signal, f"SIG{send}"))
                    sent.set()
                    return
                time.sleep(0.0002)

        threading.Thread(target=watch, daemon=True).start()
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        return -1, stdout, stderr + f"\n[test] timed out after {TIMEOUT_S} s"
    if send is not None and not sent.is_set():
        stderr += f"\n[test] the run ended before {case.watch} appeared, so SIG{send} was never sent"
    return process.returncode, stdout, stderr


def run_case(case: Case, root: Path, resources: Resources, hub_server) -> Outcome:
    sandbox, hf_home = root / case.id / "sandbox", root / case.id / "hf_home"
    sandbox.mkdir(parents=True)
    hf_home.mkdir()
    build(case, sandbox, resources)
    env = _env(case, hf_home, hub_server)
    before = snapshot(sandbox)
    note = ""
    if case.signal == "KILL":
        code, stdout, stderr = _run(case, sandbox, env, send="KILL")
        leftovers = glob.glob(str(sandbox / ".out.partial-*"))
        note = f"killed with {code}; staging left: {[Path(p).name for p in leftovers]}"
        code, stdout, stderr = _run(case, sandbox, env, send=None)
    else:
        code, stdout, stderr = _run(case, sandbox, env, send=case.signal)
    return Outcome(code, stdout, stderr, before, snapshot(sandbox), sandbox, hf_home, note)


# --- the pool: every selected case starts at once, two at a time ---------------------------------------------------


class CaseRunner:
    def __init__(self, request: pytest.FixtureRequest, root: Path) -> None:
        self.request, self.root = request, root
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS)
        self.futures: dict[str, concurrent.futures.Future[Outcome]] = {}
        self.lock = threading.Lock()

    def _selected(self) -> list[Case]:
        wanted = {
            item.callspec.params["case"].id
            for item in self.request.session.items
            if getattr(item, "originalname", None) == "test_bad_input" and hasattr(item, "callspec")
        }
        chosen = [case for case in CASES if case.id in wanted and not _skip_reason(case)]
        # The slow ones (a model loads) first, so the pool ends evenly.
        return sorted(chosen, key=lambda c: not (c.code == 0 or c.signal or c.check))

    def result(self, case: Case) -> Outcome:
        with self.lock:
            if not self.futures:
                resources = self.request.getfixturevalue("resources")
                needs_hub = any(c.hub for c in self._selected())
                hub_server = self.request.getfixturevalue("hub") if needs_hub else None
                for chosen in self._selected():
                    server = hub_server if chosen.hub else None
                    self.futures[chosen.id] = self.pool.submit(run_case, chosen, self.root, resources, server)
            if case.id not in self.futures:  # selected by a second, narrower run in the same session
                resources = self.request.getfixturevalue("resources")
                server = self.request.getfixturevalue("hub") if case.hub else None
                self.futures[case.id] = self.pool.submit(run_case, case, self.root, resources, server)
        return self.futures[case.id].result()


@pytest.fixture(scope="session")
def runner(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    if not ENTRY_POINT.exists():
        pytest.skip(f"the zhprune-hub console script is not installed beside {sys.executable}; pip install -e .")
    pool = CaseRunner(request, tmp_path_factory.mktemp("cases"))
    yield pool
    pool.pool.shutdown(wait=True, cancel_futures=True)
    for path in tmp_path_factory.getbasetemp().rglob("ro"):
        path.chmod(0o755)  # let pytest clean the read-only sandboxes up


def _skip_reason(case: Case) -> str | None:
    if case.needs_non_root and hasattr(os, "geteuid") and os.geteuid() == 0:
        return "root ignores permission bits"
    if "/sys/" in " ".join(case.args) and not Path("/sys").is_dir():
        return "no /sys on this system"
    return None


# --- checks ------------------------------------------------------------------------------------------------------------


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─┃━]", " ", text)).strip().lower()


def _within(rel: str, prefixes: tuple[str, ...]) -> bool:
    return any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in prefixes)


def check_reclaimed(case: Case, outcome: Outcome, hub_server) -> None:
    assert "staging left: ['.out.partial-" in outcome.note, f"SIGKILL left no staging directory: {outcome.note}"
    assert not glob.glob(str(outcome.sandbox / ".out.partial-*")), "the rerun did not remove the dead staging"
    marker = json.loads((outcome.sandbox / "out" / ".zhprune-output").read_text())
    assert marker["state"] == "complete"


def check_bfloat16_output(case: Case, outcome: Outcome, hub_server) -> None:
    from safetensors import safe_open

    assert json.loads((outcome.sandbox / "out" / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(str(outcome.sandbox / "out" / "model.safetensors"), framework="pt") as handle:
        name = next(iter(handle.keys()))
        assert str(handle.get_slice(name).get_dtype()) == "BF16"


def check_one_gguf_downloaded(case: Case, outcome: Outcome, hub_server) -> None:
    downloaded = sorted(p.name for p in outcome.hf_home.rglob("*.gguf"))
    assert downloaded == ["tiny.F32.gguf"], downloaded


def check_marker_not_on_hub(case: Case, outcome: Outcome, hub_server) -> None:
    files = hub_server.files("tester/pushed")
    assert "model.safetensors" in files and ".zhprune-output" not in files, sorted(files)


EXTRA_CHECKS = {
    "reclaimed": check_reclaimed,
    "bfloat16_output": check_bfloat16_output,
    "one_gguf_downloaded": check_one_gguf_downloaded,
    "marker_not_on_hub": check_marker_not_on_hub,
}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, runner: CaseRunner) -> None:
    reason = _skip_reason(case)
    if reason:
        pytest.skip(reason)
    outcome = runner.result(case)
    both = outcome.stdout + outcome.stderr
    context = f"exit {outcome.code}\n--- stdout\n{outcome.stdout[-2000:]}\n--- stderr\n{outcome.stderr[-3000:]}"
    assert "Traceback" not in both, context
    assert "[test]" not in outcome.stderr, context
    assert outcome.code == case.code, context
    if case.usage:  # click's message (with or without the usage line, as click decides), never "Error: ..."
        assert not [line for line in outcome.stderr.splitlines() if line.startswith("Error: ")], context
        assert _normalise(case.says) in _normalise(both), context
    elif case.code in (0,):
        assert _normalise(case.says) in _normalise(both), context
    else:
        errors = [line for line in outcome.stderr.splitlines() if line.startswith("Error: ")]
        if case.code >= 128:  # a signal: one line saying what happened, instead of an error
            errors = [line for line in outcome.stderr.splitlines() if line.startswith("Interrupted")]
        assert len(errors) == 1, context
        assert errors[0].rstrip().endswith("."), f"not one sentence: {errors[0]!r}"
        assert _normalise(case.says) in _normalise(errors[0]), context
    # Nothing lost, nothing left behind: the sandbox is as it was, apart from what the case may write.
    before = {k: v for k, v in outcome.before.items() if not _within(k, case.writes)}
    after = {k: v for k, v in outcome.after.items() if not _within(k, case.writes)}
    lost = sorted(set(before) - set(after))
    left = sorted(set(after) - set(before))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (lost or left or changed), f"lost {lost}, left behind {left}, changed {changed}\n{context}"
    if case.code == 0:
        for path in case.writes:
            assert (outcome.sandbox / path).exists(), f"{path} was not written\n{context}"
    if case.check:
        EXTRA_CHECKS[case.check](case, outcome, runner.request.getfixturevalue("hub") if case.hub else None)


def test_case_ids_are_unique_and_cover_every_command() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 100
    from zhprune_hub.cli import app

    commands = {info.name or info.callback.__name__ for info in app.registered_commands}
    covered = {case.command for case in CASES}
    assert commands <= covered, f"commands without a reliability case: {commands - covered}"


def test_unwritable_results_are_kept_elsewhere(tmp_path: Path) -> None:
    """When the results file cannot be written at the end after all, the results go to a temp file."""
    from zhprune_hub.outputs import keep_elsewhere, write_atomically

    blocked = tmp_path / "afile"
    blocked.write_text("x")
    with pytest.raises(OSError) as info:
        write_atomically(blocked / "results.json", '{"schema_version": 1}\n')
    error = keep_elsewhere(blocked / "results.json", '{"schema_version": 1}\n', error=info.value, flag="--json")
    kept = Path(re.search(r"kept in (\S+) instead", str(error)).group(1))
    try:
        assert kept.read_text() == '{"schema_version": 1}\n' and str(blocked / "results.json") in str(error)
    finally:
        kept.unlink()
