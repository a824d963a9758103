"""The benchmarks' --task-limit: one task's item limit overrides --limit, and the protocol text says so."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("benchmarks_common", REPO_ROOT / "benchmarks" / "common.py")
assert spec and spec.loader
common = importlib.util.module_from_spec(spec)
spec.loader.exec_module(common)


def test_task_limit_overrides_limit_for_named_tasks_only():
    args = common.normalise(
        common.base_parser("t", out="o.json", markdown="o.md").parse_args(
            ["--tasks", "xcopa_zh", "cmmlu", "piqa", "--limit", "200", "--task-limit", "cmmlu=10", "xcopa_zh=none"]
        )
    )
    assert common.task_limits(args) == {"xcopa_zh": None, "cmmlu": 10, "piqa": 200}
    protocol = {"limit": 200, "limits": common.task_limits(args)}
    assert common._limit_overrides(protocol) == " except xcopa_zh all, cmmlu 10"


def test_task_limit_without_a_number_is_refused():
    with pytest.raises(SystemExit, match="TASK=N"):
        common.parse_task_limit("cmmlu")
