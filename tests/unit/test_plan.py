"""The publish plan: YAML validation messages, merging, repo-id templates, plan hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from zhprune_hub.errors import PlanError
from zhprune_hub.plan import load_plan, plan_from_dict, plan_from_flags, resolve_variants

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "zhprune.yaml"


def _plan(**defaults):
    return {"owner": "me", "defaults": {"model": "Qwen/Qwen2.5-0.5B-Instruct", **defaults}}


def test_example_plan_gives_two_repos_with_language_in_the_name():
    variants = resolve_variants(load_plan(EXAMPLE))

    assert [v.name for v in variants] == ["zh", "en"]
    assert [v.repo_id for v in variants] == [
        "your-hf-name/Qwen2.5-0.5B-Instruct-pruned-20-zh",
        "your-hf-name/Qwen2.5-0.5B-Instruct-pruned-20-en",
    ]
    assert variants[0].prune.calibration == "wikitext_zh" and variants[1].prune.calibration == "c4"
    assert variants[0].plan_hash() != variants[1].plan_hash()


def test_variant_overrides_defaults_and_cli_overrides_both():
    plan = plan_from_dict(
        {**_plan(repo_id="{owner}/{model}-{ratio}", ratio=0.2, tasks="piqa,boolq"), "variants": [{"ratio": 0.3}, {}]}
    )
    variants = resolve_variants(plan)
    assert [v.repo_id for v in variants] == ["me/Qwen2.5-0.5B-Instruct-0.3", "me/Qwen2.5-0.5B-Instruct-0.2"]
    assert variants[0].evaluate.tasks == ["piqa", "boolq"]

    limited = resolve_variants(plan, overrides={"limit": 20})
    assert {v.evaluate.limit for v in limited} == {20}


def test_plan_hash_ignores_device_and_push_but_not_pruning():
    one = resolve_variants(plan_from_flags({"model": "m/x", "repo_id": "me/a"}))[0]
    other_device = resolve_variants(
        plan_from_flags({"model": "m/x", "repo_id": "me/b", "device": "cpu", "private": True})
    )[0]
    other_ratio = resolve_variants(plan_from_flags({"model": "m/x", "repo_id": "me/a", "ratio": 0.3}))[0]
    assert one.plan_hash() == other_device.plan_hash() != other_ratio.plan_hash()


def test_every_bad_field_is_named_by_its_path_in_one_sentence(tmp_path):
    path = tmp_path / "zhprune.yaml"
    path.write_text("defaults:\n  ratio: 1.5\n  metod: taylor\nvariants:\n  - seq_len: many\n")

    with pytest.raises(PlanError) as info:
        load_plan(path)

    message = str(info.value)
    assert message.startswith(f"{path} has 3 invalid fields: ")
    assert "defaults.ratio: input should be less than 1 (got 1.5)" in message
    assert "defaults.metod is not a known field (did you mean 'method'?)" in message
    assert "variants[0].seq_len: input should be a valid integer" in message
    assert "\n" not in message and message.endswith("fix them and run again.")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("defaults: [1, 2", "is not valid YAML at line"),
        ("- a\n- b\n", "must be a mapping"),
        ("defaults:\n  method: prune-everything\n", "defaults.method: input should be 'obs'"),
    ],
)
def test_yaml_problems(tmp_path, text, expected):
    path = tmp_path / "zhprune.yaml"
    path.write_text(text)
    with pytest.raises(PlanError, match=expected):
        load_plan(path)


def test_missing_plan_file():
    with pytest.raises(PlanError, match="does not exist"):
        load_plan(Path("/nonexistent/zhprune.yaml"))


@pytest.mark.parametrize(
    ("template", "owner", "expected"),
    [
        ("{owner}/{model}-{nope}", "me", r"unknown placeholder \{nope\}"),
        ("{owner}/{model}", None, r"uses \{owner\} but the plan sets no `owner`"),
        ("just-a-name", "me", "is not of the form OWNER/NAME"),
    ],
)
def test_bad_repo_id_templates(template, owner, expected):
    plan = plan_from_dict({"owner": owner, "defaults": {"model": "a/b", "repo_id": template}})
    with pytest.raises(PlanError, match=expected):
        resolve_variants(plan)


def test_two_variants_on_one_repo_are_refused():
    plan = plan_from_dict({**_plan(repo_id="me/same"), "variants": [{"name": "a"}, {"name": "b", "ratio": 0.3}]})
    with pytest.raises(PlanError, match="both publish to 'me/same'"):
        resolve_variants(plan)


def test_flags_errors_name_the_flag_and_tau_none_is_accepted():
    with pytest.raises(PlanError, match=r"--ratio: input should be less than 1 \(got 2\)"):
        plan_from_flags({"model": "a/b", "repo_id": "me/x", "ratio": 2})
    variant = resolve_variants(plan_from_flags({"model": "a/b", "repo_id": "me/x", "tau": "None", "ppl": "none"}))[0]
    assert variant.prune.tau is None and variant.evaluate.ppl == []


def test_missing_model_or_repo_id():
    with pytest.raises(PlanError, match="has no model"):
        resolve_variants(plan_from_flags({"repo_id": "me/x"}))
    with pytest.raises(PlanError, match="has no repo id"):
        resolve_variants(plan_from_flags({"model": "a/b"}))


def test_reproduce_command_names_every_non_default_option():
    variant = resolve_variants(
        plan_from_flags({"model": "a/b", "repo_id": "me/x", "calibration": "c4", "limit": 20, "create_pr": True})
    )[0]
    assert variant.command() == (
        "zhprune-hub publish a/b --repo-id me/x --ratio 0.2 --method obs --calibration c4 --limit 20 --create-pr"
    )


def test_cli_reports_a_bad_plan_in_one_sentence(tmp_path, monkeypatch, capsys):
    from zhprune_hub.cli import main

    path = tmp_path / "zhprune.yaml"
    path.write_text("defaults:\n  model: a/b\n  repo_id: me/x\nvariants:\n  - ratio: 1.5\n")
    monkeypatch.setattr("sys.argv", ["zhprune-hub", "publish", "--config", str(path), "--dry-run"])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert f"Error: {path} has an invalid field: variants[0].ratio: input should be less than 1 (got 1.5)" in err


def test_variant_ids_are_stable_slugs_and_select_one():
    plan = plan_from_dict(
        {"defaults": {"model": "a/b", "repo_id": "me/x-{name}"},
         "variants": [{"name": "R30 Uniform", "ratio": 0.3}, {"repo_id": "me/Plain.Name", "ratio": 0.1}]}
    )  # fmt: skip
    variants = resolve_variants(plan)
    assert [v.id for v in variants] == ["r30-uniform", "plain.name"]  # from the name, else the repo name
    reordered = plan.model_copy(update={"variants": list(reversed(plan.variants))})
    assert [v.id for v in resolve_variants(reordered)] == ["plain.name", "r30-uniform"]  # not from positions
    from zhprune_hub.plan import select_variant

    assert select_variant(variants, "plain.name").prune.ratio == 0.1
    with pytest.raises(PlanError, match=r"has no variant with id 'r30'; its variants are: r30-uniform, plain\.name\."):
        select_variant(variants, "r30")


def test_two_variants_with_one_id_are_refused():
    plan = plan_from_dict(
        {"defaults": {"model": "a/b", "repo_id": "me/x-{percent}"},
         "variants": [{"name": "Fast", "ratio": 0.1}, {"name": "fast", "ratio": 0.2}]}
    )  # fmt: skip
    with pytest.raises(PlanError, match="have the same id 'fast'; give each variant a distinct `name`"):
        resolve_variants(plan)


def test_the_example_plan_names_a_collection():
    assert load_plan(EXAMPLE).collection == "Pruned Qwen2.5-0.5B"


def test_export_field_of_a_variant():
    plan = plan_from_dict(
        {
            **_plan(repo_id="{owner}/{model}-{name}", layout="uniform"),
            "variants": [{"name": "ov", "export": "int8"}, {}],
        }
    )
    exported, plain = resolve_variants(plan)
    assert exported.deploy.export == "int8" and plain.deploy.export is None
    assert exported.deploy.export_max_ppl_increase == 0.10
    assert "--export int8" in exported.command() and "--export" not in plain.command()
    with pytest.raises(PlanError, match=r"variants\[0\]\.export"):
        resolve_variants(plan_from_dict({**_plan(repo_id="me/x"), "variants": [{"export": "int3"}]}))


def test_export_of_a_global_layout_is_refused_before_pruning(tmp_path):
    from zhprune_hub.preflight import publish_preflight

    plan = plan_from_dict({**_plan(repo_id="me/x", layout="global", export="int8")})
    with pytest.raises(PlanError, match="export: int8 needs layout: uniform"):
        publish_preflight(resolve_variants(plan), work_dir=tmp_path / "work")
