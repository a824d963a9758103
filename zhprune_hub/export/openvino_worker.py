"""OpenVINO worker: run BY the export environment's python, never imported by zhprune-hub itself.

The export environment holds optimum-intel, OpenVINO, NNCF, transformers < 5.6 and torch, but not
zhprune-hub (whose transformers it cannot share), so this file imports only the standard library
and those packages. It reads one request (JSON file), writes one result (JSON file) and exits 0,
or writes {"ok": false, "error_type", "error"} and exits 1. It never decides whether an export is
good enough: it measures, and the caller compares with the PyTorch model.

    python -I openvino_worker.py REQUEST.json RESULT.json

Actions:
    export   optimum-intel's exporter (fp16) or its export with NNCF weight compression (int8, int4)
             into `output`, then reload the saved folder and `evaluate` it.
    evaluate logits of `probe_ids` (saved as .npy) and the summed NLL of every window in `windows`.
    speed    prefill and greedy-decode tokens/s at batch 1 with the stateful KV cache.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

VERSIONS = ("optimum-intel", "optimum", "openvino", "nncf", "transformers", "torch")
#: Weight formats, as optimum-cli's --weight-format names them.
WEIGHTS = ("fp16", "int8", "int4")


def _ov_config(request: dict[str, Any]) -> dict[str, str]:
    """Runtime properties: the inference precision is pinned so a check measures the weights alone
    (OpenVINO would otherwise pick bf16 on CPUs that have it)."""
    config = {"INFERENCE_PRECISION_HINT": request.get("inference_precision", "f32")}
    if request.get("threads"):
        config["INFERENCE_NUM_THREADS"] = str(request["threads"])
    return config


def _weight_config(weights: str, group_size: int | None) -> Any:
    """NNCF weight compression, as `optimum-cli export openvino --weight-format int8|int4` sets it up."""
    from optimum.intel import OVWeightQuantizationConfig

    if weights == "int8":
        return OVWeightQuantizationConfig(bits=8, sym=False)
    # "adjust": a pruned width (e.g. 1,015 MLP channels) rarely divides by 128; such a tensor gets the
    # largest group size that divides it (>= 32), else int8
    return OVWeightQuantizationConfig(
        bits=4, sym=False, ratio=1.0, group_size=group_size or 128, group_size_fallback="adjust"
    )


def export(request: dict[str, Any]) -> dict[str, Any]:
    """fp16: `main_export` as optimum-cli runs it; int8/int4: `OVModelForCausalLM.from_pretrained(export=True,
    quantization_config=...)`, optimum-intel's public route to an NNCF-compressed model, then saved."""
    weights = request["weights"]
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, not {weights!r}")
    started = time.perf_counter()
    if weights == "fp16":
        from optimum.exporters.openvino import main_export
        from optimum.intel import OVConfig

        main_export(
            request["checkpoint"],
            output=request["output"],
            task="text-generation-with-past",
            ov_config=OVConfig(dtype="fp16"),
            stateful=True,
            convert_tokenizer=False,
            local_files_only=True,
        )
    else:
        from optimum.intel import OVModelForCausalLM
        from transformers import AutoTokenizer

        model = OVModelForCausalLM.from_pretrained(
            request["checkpoint"],
            export=True,
            compile=False,
            local_files_only=True,
            quantization_config=_weight_config(weights, request.get("group_size")),
        )
        model.save_pretrained(request["output"])
        AutoTokenizer.from_pretrained(request["checkpoint"]).save_pretrained(request["output"])
        del model
        _drop_checkpoint_path(Path(request["output"]), request["checkpoint"])
    seconds = time.perf_counter() - started
    result = evaluate({**request, "model": request["output"]})
    result["export_s"] = seconds
    return result


def _drop_checkpoint_path(output: Path, checkpoint: str) -> None:
    """optimum-intel records the source directory as the quantization config's tokenizer (used only by
    data-aware compression); a published export must not name a path of the machine that built it."""
    path = output / "openvino_config.json"
    if not path.is_file():
        return
    doc = json.loads(path.read_text(encoding="utf-8"))
    quantization = doc.get("quantization_config")
    if isinstance(quantization, dict) and str(quantization.get("tokenizer") or "").rstrip("/") == checkpoint.rstrip(
        "/"
    ):
        quantization["tokenizer"] = None
        path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def _load(request: dict[str, Any]) -> Any:
    from optimum.intel import OVModelForCausalLM

    return OVModelForCausalLM.from_pretrained(request["model"], ov_config=_ov_config(request), local_files_only=True)


def evaluate(request: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch
    import torch.nn.functional as F

    started = time.perf_counter()
    model = _load(request)
    load_s = time.perf_counter() - started
    result: dict[str, Any] = {"load_s": load_s}
    if request.get("probe_ids"):
        ids = torch.tensor([request["probe_ids"]], dtype=torch.long)
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        np.save(request["probe_logits"], np.asarray(logits[0], dtype=np.float32))
        result["probe_logits"] = request["probe_logits"]
    sums = []
    started = time.perf_counter()
    for window in request.get("windows") or []:
        ids = torch.tensor([window], dtype=torch.long)
        # past_key_values=None resets the stateful cache: every window starts from nothing
        logits = torch.as_tensor(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits)
        sums.append(float(F.cross_entropy(logits[0, :-1].float(), ids[0, 1:], reduction="sum")))
    result["window_nll"] = sums
    result["windows_s"] = time.perf_counter() - started
    return result


def speed(request: dict[str, Any]) -> dict[str, Any]:
    """Best-of-N prefill and decode timings, after one warm-up, the protocol of benchmarks/speed.py."""
    import torch

    model = _load(request)
    prompt = torch.tensor([request["prompt_ids"]], dtype=torch.long)
    steps = int(request["decode_tokens"])

    def once() -> tuple[float, float]:
        mask = torch.ones_like(prompt)
        started = time.perf_counter()
        out = model(input_ids=prompt, attention_mask=mask)
        prefill = time.perf_counter() - started
        cache, token = out.past_key_values, torch.as_tensor(out.logits)[:, -1:].argmax(-1)
        started = time.perf_counter()
        for _ in range(steps):
            mask = torch.cat([mask, torch.ones((1, 1), dtype=mask.dtype)], dim=1)
            out = model(input_ids=token, attention_mask=mask, past_key_values=cache)
            cache, token = out.past_key_values, torch.as_tensor(out.logits)[:, -1:].argmax(-1)
        return prefill, time.perf_counter() - started

    once()
    timings = [once() for _ in range(int(request.get("repeats", 3)))]
    prefill, decode = min(t[0] for t in timings), min(t[1] for t in timings)
    return {
        "prefill_tokens": int(prompt.shape[1]),
        "prefill_tokens_per_s": prompt.shape[1] / prefill,
        "decode_tokens": steps,
        "decode_tokens_per_s": steps / decode,
    }


ACTIONS = {"export": export, "evaluate": evaluate, "speed": speed}


def _versions() -> dict[str, str]:
    found = {}
    for name in VERSIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


def main(argv: list[str]) -> int:
    request_path, result_path = Path(argv[1]), Path(argv[2])
    request = json.loads(request_path.read_text(encoding="utf-8"))
    try:
        result = {"ok": True, **ACTIONS[request["action"]](request)}
        code = 0
    except Exception as exc:  # reported to the caller, which turns it into one sentence
        traceback.print_exc()
        lines = str(exc).strip().splitlines()
        result = {"ok": False, "error_type": type(exc).__name__, "error": lines[0] if lines else repr(exc)}
        code = 1
    result["versions"] = _versions()
    result_path.write_text(json.dumps(result), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
