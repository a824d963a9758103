"""The work directory of `publish`: data changes invalidate the stages that read them, and one run at a time.

Real processes through the installed entry point (`python -m zhprune_hub`), a tiny model, and a copy of
the parts of the data directory the plan reads, so the tests can change them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import make_tiny_checkpoint

REPO = "tester/tiny-locked"
DATA_FILES = ("c4/c4_validation_2k.parquet", "wikitext2/wiki.test.raw", "zeroshot/piqa.jsonl")


def _flags(data_dir: Path, work: Path) -> list[str]:
    return [
        "--calibration", "c4", "--num-samples", "8", "--seq-len", "64", "--ppl", "wikitext2", "--max-tokens",
        "512", "--ppl-seq-len", "128", "--tasks", "piqa", "--limit", "8", "--data-dir", str(data_dir),
        "--work-dir", str(work), "--json",
    ]  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    return {**env, "OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_XET": "1", **extra}


def _publish(base: Path, data: Path, work: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "zhprune_hub", "publish", str(base), "--repo-id", REPO, *_flags(data, work), *extra],
        env=env or _env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.stdout, proc.stderr[-3000:]
    return proc.returncode, json.loads(proc.stdout)["variants"][0]


def _stages(variant: dict) -> dict[str, str]:
    """Which stages ran and which resumed, read back from the markers' finish times."""
    root = Path(variant["work_dir"])
    return {p.parent.name: json.loads(p.read_text())["finished_at"] for p in root.glob("*/stage.json")}


@pytest.fixture
def data_copy(tmp_path, shared_data) -> Path:
    target = tmp_path / "data"
    for rel in DATA_FILES:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(shared_data / rel, target / rel)
    return target


def test_changed_data_reruns_exactly_the_stages_that_read_it(tmp_path, data_copy):
    base = make_tiny_checkpoint("llama", tmp_path / "base")
    work = tmp_path / "work"
    code, first = _publish(base, data_copy, work, "--dry-run")
    assert code == 0 and first["base_evaluation"] == "computed", first["error"]
    done = _stages(first)

    # Evaluation text changes (past the evaluated prefix, so only the file differs): evaluate reruns, prune does not.
    with (data_copy / "wikitext2" / "wiki.test.raw").open("a", encoding="utf-8") as fh:
        fh.write("\n = An appended article = \n\nIt changes the file.\n")
    code, second = _publish(base, data_copy, work, "--dry-run")
    again = _stages(second)
    assert code == 0 and second["base_evaluation"] == "computed"  # the stored base results were stale too
    assert {s for s in again if again[s] != done[s]} == {"evaluate", "export", "card"}

    # Nothing changes: everything resumes, and the base results are reused.
    code, third = _publish(base, data_copy, work, "--dry-run")
    assert code == 0 and _stages(third) == again

    # The calibration file changes: prune and everything after it run again.
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = data_copy / "c4" / "c4_validation_2k.parquet"
    table = pq.read_table(path)
    texts = table.column("text").to_pylist()
    texts[0] = "A different first calibration document. " * 40
    pq.write_table(table.set_column(table.column_names.index("text"), "text", pa.array(texts)), path)
    code, fourth = _publish(base, data_copy, work, "--dry-run")
    changed = _stages(fourth)
    assert code == 0 and {s for s in changed if changed[s] != again[s]} == {
        "prune",
        "verify",
        "evaluate",
        "export",
        "card",
    }
    assert fourth["base_evaluation"] == "reused"  # the base read nothing that changed


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from zhprune_hub.workspace import Workspace
    with Workspace(Path(sys.argv[1])).lock(label="a test"):
        print("locked", flush=True)
        while not Path(sys.argv[2]).exists():
            time.sleep(0.05)
    """
)


def test_a_second_publish_of_the_same_variant_stops_with_one_sentence(tmp_path, data_copy):
    from zhprune_hub.plan import plan_from_flags, resolve_variants

    base = make_tiny_checkpoint("llama", tmp_path / "base")
    work = tmp_path / "work"
    settings = dict(
        model=str(base), repo_id=REPO, calibration="c4", num_samples=8, seq_len=64, ppl="wikitext2", max_tokens=512,
        ppl_seq_len=128, tasks="piqa", limit=8,
    )  # fmt: skip
    root = work / resolve_variants(plan_from_flags(settings))[0].plan_hash()  # the variant's work directory
    release = tmp_path / "release"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root), str(release)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = sorted(p.relative_to(root) for p in root.rglob("*"))
        started = time.perf_counter()
        code, variant = _publish(base, data_copy, work, "--dry-run")
        seconds = time.perf_counter() - started
        after = sorted(p.relative_to(root) for p in root.rglob("*"))
    finally:
        release.touch()
        holder.wait(timeout=30)
    assert code == 1 and variant["status"] == "failed" and variant["failed_stage"] == "lock"
    message = variant["error"]
    assert message.startswith("Another publish of variant 'default' (tester/tiny-locked) is running in ")
    assert f"process {holder.pid} on " in message and "\n" not in message and message.endswith("finished stages.")
    assert variant["work_dir"] == str(root)
    assert after == before == [Path(".lock"), Path("lock.json")]  # nothing was done
    print(f"refused in {seconds:.1f} s")


def test_two_publishes_at_once_do_the_work_once_and_make_one_commit(tmp_path, data_copy, hub_server):
    base = make_tiny_checkpoint("llama", tmp_path / "base")
    work = tmp_path / "work"
    env = _env(HF_TOKEN=hub_server.token, HF_ENDPOINT=hub_server.endpoint)
    command = [sys.executable, "-m", "zhprune_hub", "publish", str(base), "--repo-id", REPO, *_flags(data_copy, work)]
    procs = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    variants = [json.loads(out)["variants"][0] for out, _ in outputs]

    statuses = sorted(v["status"] for v in variants)
    assert statuses in (["failed", "published"], ["published", "unchanged"]), [v["error"] for v in variants]
    loser = next(v for v in variants if v["status"] != "published")
    assert loser["status"] == "unchanged" or loser["failed_stage"] == "lock"
    assert hub_server.commits_made == 1 and len(hub_server.history(REPO)) == 2
    logs = " ".join(" ".join(err.split()) for _, err in outputs)
    assert logs.count("prune ok") == 1, logs[-3000:]  # one process pruned; the other stopped or resumed
    assert not list(work.rglob(".*.partial-*")) and not list(work.rglob(".*.tmp"))
