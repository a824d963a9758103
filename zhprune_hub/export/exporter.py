"""`zhprune-hub export`: a deployable OpenVINO copy of a pruned checkpoint, checked before it is kept.

optimum-intel's own exporter (`main_export`, what `optimum-cli export openvino` runs) and NNCF's
weight compression do the conversion, in the separate export environment (see environment.py).
The copy is built in a staging directory and only put in place (default CHECKPOINT/openvino)
once its logits and perplexity agree with the PyTorch checkpoint; a failed check leaves the
checkpoint as it was and no export behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from zhprune_hub.errors import ExportError
from zhprune_hub.export.environment import ExportEnvironment
from zhprune_hub.export.verify_export import Agreement

WORKER = Path(__file__).with_name("openvino_worker.py")
RESULT_NAME = "zhprune_export.json"
#: Bytes per stored weight of each format (int4 keeps scales, and embeddings stay int8).
BYTES_PER_WEIGHT = {"fp16": 2.0, "int8": 1.0, "int4": 0.75}
Weights = Literal["fp16", "int8", "int4"]


class ExportConfig(BaseModel):
    """One export: which checkpoint, which format and weights, and how strictly it is checked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    directory: Path = Field(description="Checkpoint to export (uniform layout or a stock HF checkpoint).")
    format: Literal["openvino"] = Field("openvino", description="Deployment format.")
    weights: Weights = Field("int8", description="fp16, or NNCF weight compression to int8 / int4.")
    output: Path | None = Field(None, description="Export directory; default DIRECTORY/openvino.")
    overwrite: bool = Field(False, description="Replace a previous export at the output path.")
    group_size: int | None = Field(None, ge=1, description="int4 group size; default: NNCF's 128.")
    ppl_corpus: str = Field("wikitext2", description="Perplexity text (corpus name or file).")
    ppl_tokens: int = Field(8192, ge=2, description="Leading tokens of the text to evaluate.")
    ppl_seq_len: int = Field(512, ge=2, description="Perplexity window in tokens.")
    max_ppl_increase: float = Field(0.10, ge=0, description="Largest relative perplexity increase accepted.")
    max_logit_diff: float = Field(0.5, gt=0, description="fp16 only: largest absolute logit difference accepted.")
    min_top1: float = Field(0.98, ge=0, le=1, description="fp16 only: smallest top-1 agreement accepted.")
    data_dir: Path | None = Field(None, description="Local data directory.")

    @property
    def target(self) -> Path:
        return (self.output or self.directory / self.format).expanduser().absolute()


@dataclass(frozen=True)
class ExportOutcome:
    output: Path
    record: dict[str, Any]


def run_worker(environment: ExportEnvironment, request: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """Run one worker action in the export environment; its result, or one sentence on failure.

    Raises:
        ExportError: the worker crashed or reported an error.
    """
    request_path, result_path, log_path = scratch / "request.json", scratch / "result.json", scratch / "worker.log"
    request_path.write_text(json.dumps(request), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
    env.pop("PYTHONPATH", None)  # -I ignores it anyway; the worker must never see this project's packages
    with log_path.open("wb") as log:
        code = subprocess.run(
            [str(environment.python), "-I", str(WORKER), str(request_path), str(result_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            check=False,
        ).returncode
    if os.environ.get("ZHPRUNE_DEBUG"):
        print(log_path.read_text(encoding="utf-8", errors="replace"))
    try:
        result = json.loads(result_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise ExportError(
            f"The OpenVINO worker stopped with exit code {code} before reporting ({tail[0].strip()}); rerun with "
            "ZHPRUNE_DEBUG=1 to see its log."
        ) from None
    if not result.get("ok"):
        raise ExportError(
            f"optimum-intel could not {request['action']} {request.get('checkpoint') or request.get('model')} "
            f"({result.get('error_type')}: {result.get('error')}); rerun with ZHPRUNE_DEBUG=1 to see its log."
        )
    return result


def _gate(config: ExportConfig, agreement: Agreement) -> str | None:
    """Why the export may not be kept, or None when it passes."""
    if config.weights == "fp16" and agreement.max_abs_diff > config.max_logit_diff:
        return (
            f"its logits differ from the PyTorch model's by up to {agreement.max_abs_diff:.3g} on the probe text, "
            f"beyond the fp16 bound {config.max_logit_diff:g}"
        )
    if config.weights == "fp16" and agreement.top1_agreement < config.min_top1:
        return f"its top-1 token agrees with the PyTorch model's on only {agreement.top1_agreement:.1%} of the probe"
    if agreement.ppl_increase > config.max_ppl_increase:
        return (
            f"its perplexity {agreement.ppl_exported:.2f} is {agreement.ppl_increase:.1%} above the PyTorch model's "
            f"{agreement.ppl_pytorch:.2f}, beyond the bound of {config.max_ppl_increase:.0%}"
        )
    return None


def export_checkpoint(config: ExportConfig, *, log: Any = print) -> ExportOutcome:
    """Export, check against the PyTorch checkpoint, and put the export in place only if it passes.

    Raises:
        ZhpruneError: preflight (layout, paths, space, environment) or the check failed.
    """
    from zhprune_hub.export.verify_export import compare, reference
    from zhprune_hub.outputs import atomic_directory
    from zhprune_hub.preflight import export_preflight

    environment = export_preflight(config)
    started = time.perf_counter()
    log(f"reference: PyTorch float32 logits and {config.ppl_corpus} perplexity of {config.directory}")
    ref = reference(
        config.directory,
        corpus=config.ppl_corpus,
        max_tokens=config.ppl_tokens,
        seq_len=config.ppl_seq_len,
        data_dir=config.data_dir,
    )
    reference_s = time.perf_counter() - started
    with (
        tempfile.TemporaryDirectory(prefix="zhprune-export-") as scratch_name,
        atomic_directory(config.target, overwrite=config.overwrite) as staging,
    ):
        scratch = Path(scratch_name)
        log(f"export: optimum-intel, {config.weights} weights, in {environment.python}")
        result = run_worker(
            environment,
            {
                "action": "export",
                "checkpoint": str(config.directory.expanduser().resolve()),
                "output": str(staging),
                "weights": config.weights,
                "group_size": config.group_size,
                "probe_ids": ref.probe_ids,
                "probe_logits": str(scratch / "probe_logits.npy"),
                "windows": ref.windows,
                "inference_precision": "f32",
            },
            scratch,
        )
        agreement = compare(ref, exported_logits=Path(result["probe_logits"]), exported_nll=result["window_nll"])
        refusal = _gate(config, agreement)
        if refusal is not None:
            raise ExportError(
                f"The {config.weights} OpenVINO export of {config.directory} was not kept: {refusal} (raise "
                "--max-ppl-increase to accept it, or choose wider weights)."
            )
        record = _record(config, environment, result, agreement, ref.ppl_source, reference_s)
        (staging / RESULT_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return ExportOutcome(output=config.target, record=record)


def _record(
    config: ExportConfig,
    environment: ExportEnvironment,
    result: dict[str, Any],
    agreement: Agreement,
    ppl_source: str,
    reference_s: float,
) -> dict[str, Any]:
    return {
        "format": config.format,
        "weights": config.weights,
        "group_size": config.group_size,
        # names, not local paths: the record is published with the export
        "checkpoint": config.directory.expanduser().resolve().name,
        "exporter": (
            "optimum.exporters.openvino.main_export (task text-generation-with-past, stateful)"
            if config.weights == "fp16"
            else "optimum.intel.OVModelForCausalLM.from_pretrained(export=True, OVWeightQuantizationConfig)"
        ),
        "versions": result.get("versions") or environment.versions,
        "check": {
            **agreement.to_dict(),
            "ppl_corpus": config.ppl_corpus,
            "ppl_source": Path(ppl_source).name if Path(ppl_source).is_absolute() else ppl_source,
            "ppl_max_tokens": config.ppl_tokens,
            "inference_precision": "f32",
            "bounds": {
                "max_ppl_increase": config.max_ppl_increase,
                "max_logit_diff": config.max_logit_diff if config.weights == "fp16" else None,
                "min_top1": config.min_top1 if config.weights == "fp16" else None,
            },
            "passed": True,
        },
        "timings": {
            "reference_s": reference_s,
            "export_s": result.get("export_s"),
            "load_s": result.get("load_s"),
            "windows_s": result.get("windows_s"),
        },
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
