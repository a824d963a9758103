"""The publish plan: one or more variants of (model, prune options, evaluation, target repo).

A plan comes from `publish` flags or from a zhprune.yaml with `defaults` and `variants`; both
validate into the same frozen objects. Each variant resolves to a repo id (a template such as
`{owner}/{model}-pruned-{percent}-{lang}`) and a hash of everything that decides its outputs,
which keys its work directory so that a rerun resumes instead of pruning again.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator
from pydantic_core import PydanticCustomError

from zhprune_hub import __version__
from zhprune_hub.errors import PlanError
from zhprune_hub.pruning import PruneConfig

#: PruneConfig fields a plan does not set: the output lives in the work directory, and `revision`
#: (of the base model) is `model_revision` in a plan, because `revision` there is the target branch.
_NOT_IN_PLAN = {"model", "output", "overwrite", "revision"}
#: Fields that change where or how fast a stage runs, not what it produces: left out of the hash.
_NOT_HASHED = {"device", "data_dir", "batch_size", "eval_batch_size", "max_shard_size"}
DEFAULT_TASKS = ["auto"]
REPO_TEMPLATE_KEYS = ("owner", "model", "name", "ratio", "percent", "calib", "lang", "method", "layout")

_Frozen = ConfigDict(frozen=True, extra="forbid")


def _tau_none(value: Any) -> Any:
    """`--tau None` (or auto) on the command line or in YAML means the adaptive threshold."""
    if isinstance(value, str) and value.strip().lower() in {"none", "auto", ""}:
        return None
    return value


def _tau_validator() -> Any:
    return field_validator("tau", mode="before")(lambda cls, v: _tau_none(v))


#: The prune options of a plan: PruneConfig's own fields (same types, bounds and defaults).
PruneSettings = create_model(
    "PruneSettings",
    __config__=_Frozen,
    __validators__={"_tau": _tau_validator()},
    **{name: (f.annotation, f) for name, f in PruneConfig.model_fields.items() if name not in _NOT_IN_PLAN},
)


class EvalSettings(BaseModel):
    """How base and pruned models are evaluated (the same protocol for both)."""

    model_config = _Frozen

    ppl: list[str] | None = Field(
        default=None,
        description="Perplexity corpora; null = wikitext2, ptb (+ c4_zh for zh-competent models); [] = none.",
    )
    tasks: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TASKS),
        description="Zero-shot tasks; [auto] = those of the model's measured languages; [] = none.",
    )
    limit: int | None = Field(default=None, ge=1, description="Items per zero-shot task; null = full splits.")
    include_path: Path | None = Field(
        default=None, description="Folder of the user's own lm-eval task YAMLs (lm-eval's include path)."
    )
    ppl_seq_len: int = Field(default=2048, ge=2, description="Perplexity window in tokens.")
    max_tokens: int | None = Field(default=None, ge=2, description="Evaluate only this many leading tokens.")
    eval_batch_size: int | Literal["auto"] = Field(default="auto", description="Windows/requests per forward.")

    @field_validator("ppl", "tasks", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _comma_list(value)


class PushSettings(BaseModel):
    """Where and how the result is pushed."""

    model_config = _Frozen

    private: bool = Field(default=False, description="Create the repository as private.")
    create_pr: bool = Field(default=False, description="Open a pull request instead of committing to the branch.")
    revision: str | None = Field(default=None, description="Target branch (created from main when missing).")
    commit_message: str | None = Field(default=None, description="Commit title; a default names model and ratio.")


class ExportSettings(BaseModel):
    """A deployable copy published beside the weights, as `zhprune-hub export` writes it."""

    model_config = _Frozen

    export: Literal["fp16", "int8", "int4"] | None = Field(
        default=None,
        description="Also publish an OpenVINO export with these weights in openvino/ (runs in the environment "
        "named by $ZHPRUNE_EXPORT_PYTHON); null = none.",
    )
    export_max_ppl_increase: float = Field(
        default=0.10, ge=0, description="Largest relative perplexity increase the export may show (0.10 = 10%)."
    )


_SETTINGS_FIELDS: dict[str, Any] = {
    "model": (str | None, Field(default=None, description="Hub id, checkpoint directory or GGUF directory.")),
    "model_revision": (str | None, Field(default=None, description="Branch, tag or commit of a Hub model.")),
    "repo_id": (
        str | None,
        Field(default=None, description="OWNER/NAME, or a template with {" + "}, {".join(REPO_TEMPLATE_KEYS) + "}."),
    ),
}
for _model in (PruneSettings, EvalSettings, PushSettings, ExportSettings):
    _SETTINGS_FIELDS.update({name: (f.annotation, f) for name, f in _model.model_fields.items()})


def _comma_list(value: Any) -> Any:
    """`a,b` -> [a, b] and `none` -> [] for list options given as one string (command line, YAML)."""
    if isinstance(value, str):
        return [] if value.strip().lower() in {"", "none"} else [v.strip() for v in value.split(",") if v.strip()]
    return value


#: Every option a plan's `defaults` (and the command line) may set, flat.
Settings = create_model(
    "Settings",
    __config__=_Frozen,
    __validators__={
        "_lists": field_validator("ppl", "tasks", mode="before")(lambda cls, v: _comma_list(v)),
        "_tau": _tau_validator(),
    },
    **_SETTINGS_FIELDS,
)


class VariantSpec(Settings):  # type: ignore[misc, valid-type]
    """One entry of `variants`: a name plus any option that differs from `defaults`."""

    name: str | None = Field(default=None, description="Short label, used in output and the {name} placeholder.")


class PublishPlan(BaseModel):
    """A zhprune.yaml: an owner for repo-id templates, shared defaults, and the variants to publish."""

    model_config = _Frozen

    owner: str | None = Field(default=None, description="Hub user or organisation for the {owner} placeholder.")
    collection: str | None = Field(
        default=None,
        min_length=1,
        max_length=59,
        description="Title of a Hub collection (in the owner's namespace) that `plan aggregate` keeps listing "
        "the published variants.",
    )
    defaults: Settings = Field(default_factory=Settings)  # type: ignore[valid-type]
    variants: list[VariantSpec] = Field(default_factory=list)  # type: ignore[valid-type]

    @field_validator("variants")
    @classmethod
    def _variants_listed(cls, value: list[Any]) -> list[Any]:
        if not value:  # an explicit empty list would publish nothing (or only `defaults`) by surprise
            raise PydanticCustomError(
                "empty_variants",
                "the list is empty; list at least one variant, or leave `variants` out to publish `defaults` alone",
            )
        return value


class Variant(BaseModel):
    """A fully resolved variant: everything the stage runner needs."""

    model_config = _Frozen

    id: str = Field(description="Stable id: the slug of the variant's name, else of its repo name.")
    name: str
    repo_id: str
    model: str
    model_revision: str | None = None
    prune: PruneSettings  # type: ignore[valid-type]
    evaluate: EvalSettings
    push: PushSettings
    deploy: ExportSettings = Field(default_factory=ExportSettings)

    def prune_config(self, output: Path, *, model: str | None = None, revision: str | None = None) -> PruneConfig:
        values = self.prune.model_dump()
        return PruneConfig(
            model=model or self.model, output=output, overwrite=True, revision=revision or self.model_revision, **values
        )

    def plan_hash(self) -> str:
        """16 hex digits over what decides the pruned weights and the evaluation results."""
        doc = {
            "tool": __version__,
            "model": self.model,
            "model_revision": self.model_revision,
            "prune": self.prune.model_dump(mode="json", exclude=_NOT_HASHED),
            "evaluate": self.evaluate.model_dump(mode="json", exclude=_NOT_HASHED),
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    def command(self) -> str:
        """The `zhprune-hub publish` command line that reproduces this variant."""
        parts = ["zhprune-hub publish", _quote(self.model), "--repo-id", self.repo_id]
        if self.model_revision:
            parts += ["--model-revision", _quote(self.model_revision)]
        defaults = PruneSettings()
        for name, value in self.prune.model_dump().items():
            if name in {"device", "data_dir"} or (value == getattr(defaults, name) and name not in {"ratio", "method"}):
                continue
            flag = name.replace("_", "-")
            if isinstance(value, bool):
                parts.append(f"--{flag}" if value else f"--no-{flag}")
            else:
                parts += [f"--{flag}", _quote("None" if value is None else str(value))]
        ev = self.evaluate
        parts += ["--ppl", ",".join(ev.ppl) if ev.ppl is not None else "default"] if ev.ppl is not None else []
        parts += ["--tasks", ",".join(ev.tasks) or "none"] if ev.tasks != DEFAULT_TASKS else []
        for flag, value, default in (
            ("--limit", ev.limit, None),
            ("--ppl-seq-len", ev.ppl_seq_len, 2048),
            ("--max-tokens", ev.max_tokens, None),
        ):
            if value != default:
                parts += [flag, str(value)]
        if self.deploy.export:
            parts += ["--export", self.deploy.export]
            if self.deploy.export_max_ppl_increase != ExportSettings().export_max_ppl_increase:
                parts += ["--export-max-ppl-increase", str(self.deploy.export_max_ppl_increase)]
        if self.push.private:
            parts.append("--private")
        if self.push.create_pr:
            parts.append("--create-pr")
        if self.push.revision:
            parts += ["--revision", self.push.revision]
        return " ".join(parts)


def _quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


# --- building plans ----------------------------------------------------------------------------------


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _explain(error: dict[str, Any], *, flags: bool) -> str:
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith(("function-", "literal["))))
    path = _field_path(loc) or "value"
    if flags:
        path = "--" + path.split(".")[-1].replace("_", "-")
    if error["type"] == "extra_forbidden":
        import difflib

        known = [*_SETTINGS_FIELDS, "name", "owner", "defaults", "variants"]
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        return f"{path} is not a known field" + (f" (did you mean {close[0]!r}?)" if close else "")
    return f"{path}: {error['msg'][0].lower()}{error['msg'][1:]} (got {error.get('input')!r})"


def validation_message(exc: ValidationError, *, where: str, flags: bool = False) -> str:
    """One sentence naming every bad field of a ValidationError by its path."""
    clauses = []
    for error in exc.errors():
        clause = _explain(error, flags=flags)
        if clause not in clauses:
            clauses.append(clause)
    noun = "an invalid field" if len(clauses) == 1 else f"{len(clauses)} invalid fields"
    return f"{where} has {noun}: {'; '.join(clauses)}; fix {'it' if len(clauses) == 1 else 'them'} and run again."


def load_plan(path: Path) -> PublishPlan:
    """Read and validate a zhprune.yaml.

    Raises:
        PlanError: missing file, YAML syntax error, or invalid fields (each quoted by its path).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlanError(f"Plan file {str(path)!r} does not exist; pass an existing zhprune.yaml.") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise PlanError(f"Plan file {str(path)!r} cannot be read ({reason}); pass a UTF-8 zhprune.yaml file.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise PlanError(f"Plan file {str(path)!r} is not valid YAML{where}; fix the syntax and run again.") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PlanError(f"Plan file {str(path)!r} must be a mapping with `defaults` and `variants`.")
    return plan_from_dict(data, where=str(path))


def plan_from_dict(data: dict[str, Any], *, where: str = "the plan") -> PublishPlan:
    try:
        return PublishPlan.model_validate(data)
    except ValidationError as exc:
        raise PlanError(validation_message(exc, where=where)) from None


def plan_from_flags(values: dict[str, Any]) -> PublishPlan:
    """A one-variant plan from `publish` flags (names as in Settings)."""
    try:
        return PublishPlan(defaults=Settings(**values))
    except ValidationError as exc:
        raise PlanError(validation_message(exc, where="The command line", flags=True)) from None


def _split(values: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k in model.model_fields}


def resolve_variants(
    plan: PublishPlan, *, overrides: dict[str, Any] | None = None, where: str = "the plan"
) -> list[Variant]:
    """Merge defaults, each variant and command-line overrides (in that order) into Variants.

    Raises:
        PlanError: no model, no repo id, a bad template, or duplicate repo ids.
    """
    specs = plan.variants or [VariantSpec()]
    base = plan.defaults.model_dump(exclude_unset=True)
    variants: list[Variant] = []
    for index, spec in enumerate(specs):
        label = f"variants[{index}]" if plan.variants else "defaults"
        values = {**base, **spec.model_dump(exclude_unset=True), **(overrides or {})}
        name = values.pop("name", None) or (f"variant-{index + 1}" if plan.variants else "default")
        model = values.pop("model", None)
        model_revision = values.pop("model_revision", None)
        template = values.pop("repo_id", None)
        if not model:
            raise PlanError(f"{where}: {label} has no model; pass MODEL or set `model` in defaults or the variant.")
        if not template:
            raise PlanError(f"{where}: {label} has no repo id; pass --repo-id OWNER/NAME or set `repo_id` in the plan.")
        try:
            prune = PruneSettings(**_split(values, PruneSettings))
            evaluate = EvalSettings(**_split(values, EvalSettings))
            push = PushSettings(**_split(values, PushSettings))
            deploy = ExportSettings(**_split(values, ExportSettings))
        except ValidationError as exc:
            raise PlanError(validation_message(exc, where=f"{where} ({label})")) from None
        if evaluate.ppl == [] and not evaluate.tasks:  # found now, not at the card after the whole prune
            raise PlanError(
                f"{where} ({label}) evaluates nothing (ppl and tasks are both none), but the model card needs at "
                "least one metric; name a perplexity corpus (--ppl) or a zero-shot task (--tasks)."
            )
        repo_id = render_repo_id(template, owner=plan.owner, model=model, name=name, prune=prune, label=label)
        variant_id = _slug(spec.name if spec.name else repo_id.split("/")[-1]).lower()
        variants.append(
            Variant(
                id=variant_id if plan.variants else "default",
                name=name,
                repo_id=repo_id,
                model=model,
                model_revision=model_revision,
                prune=prune,
                evaluate=evaluate,
                push=push,
                deploy=deploy,
            )
        )
    ids: dict[str, str] = {}
    for variant in variants:
        if variant.id in ids:
            raise PlanError(
                f"{where}: variants {ids[variant.id]!r} and {variant.name!r} have the same id {variant.id!r}; "
                "give each variant a distinct `name`."
            )
        ids[variant.id] = variant.name
    seen: dict[str, str] = {}
    for variant in variants:
        if variant.repo_id in seen and not (variant.push.revision or variant.push.create_pr):
            raise PlanError(
                f"{where}: variants {seen[variant.repo_id]!r} and {variant.name!r} both publish to "
                f"{variant.repo_id!r}; give each its own repo id (e.g. add {{lang}} or {{percent}} to the template)."
            )
        seen[variant.repo_id] = variant.name
    return variants


def select_variant(variants: list[Variant], variant_id: str, *, where: str = "the plan") -> Variant:
    """The variant with this id (`plan matrix` prints the ids).

    Raises:
        PlanError: no variant has that id; the message lists the ids there are.
    """
    for variant in variants:
        if variant.id == variant_id:
            return variant
    known = ", ".join(v.id for v in variants)
    raise PlanError(f"{where} has no variant with id {variant_id!r}; its variants are: {known}.")


def _slug(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-.") or "x"


def render_repo_id(
    template: str, *, owner: str | None, model: str, name: str, prune: Any, label: str = "defaults"
) -> str:
    """Fill a repo-id template and check the result is OWNER/NAME.

    Raises:
        PlanError: unknown placeholder, {owner} without an owner, or an invalid result.
    """
    from zhprune_hub.data.language import spec_language

    base_name = Path(model.rstrip("/")).name
    fields = {
        "owner": owner,
        "model": _slug(base_name),
        "name": _slug(name),
        "ratio": f"{prune.ratio:g}",
        "percent": f"{round(prune.ratio * 100):d}",
        "calib": _slug(prune.calibration.replace(",", "+").replace(":", "")),
        "lang": spec_language(prune.calibration, prune.language).replace("+", "-"),
        "method": prune.method,
        "layout": prune.layout,
    }
    try:
        repo_id = template.format_map(fields)
    except KeyError as exc:
        raise PlanError(
            f"{label}.repo_id {template!r} uses unknown placeholder {{{exc.args[0]}}}; "
            f"use {', '.join('{' + k + '}' for k in REPO_TEMPLATE_KEYS)}."
        ) from None
    except (ValueError, IndexError):
        raise PlanError(
            f"{label}.repo_id {template!r} is not a valid template; write placeholders as {{name}}."
        ) from None
    if "{owner}" in template and not owner:
        raise PlanError(f"{label}.repo_id {template!r} uses {{owner}} but the plan sets no `owner`; add `owner: NAME`.")
    from zhprune_hub.preflight import check_repo_id

    return check_repo_id(repo_id, what="Repo id", where=f" (from {label}.repo_id)")
