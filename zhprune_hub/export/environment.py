"""Find and check the separate Python environment the OpenVINO export runs in.

optimum-intel needs transformers < 5.6 and huggingface_hub 1.x while zhprune-hub runs transformers
5.24 and huggingface_hub 2.x, so the two cannot share an environment: the export runs as a
subprocess of the interpreter named by $ZHPRUNE_EXPORT_PYTHON (built by
scripts/install_export_env.sh). Every way of getting this wrong ends in one sentence that says
what to install.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from zhprune_hub.errors import ExportError

ENV_VAR = "ZHPRUNE_EXPORT_PYTHON"
INSTALL_HINT = (
    "run `bash scripts/install_export_env.sh ~/.zhprune-export` from the zhprune-hub repository and set "
    f"{ENV_VAR}=~/.zhprune-export/bin/python"
)
#: Modules the worker imports; their versions are recorded with every export.
REQUIRED = ("optimum.intel", "openvino", "nncf", "transformers", "torch")
PROBE_TIMEOUT_S = 300
_PROBE = """
import importlib.metadata as m, json
import optimum.intel, openvino, nncf, transformers, torch
# lazy modules: import what the worker uses, so a broken install fails here and not mid-export
from optimum.intel import OVModelForCausalLM, OVWeightQuantizationConfig
from transformers import PreTrainedModel
names = ("optimum-intel", "optimum", "openvino", "nncf", "transformers", "torch", "huggingface-hub")
print(json.dumps({n: m.version(n) for n in names}))
"""


@dataclass(frozen=True)
class ExportEnvironment:
    """An interpreter that can run the OpenVINO worker, and the versions it holds."""

    python: Path
    versions: dict[str, str]


def export_python(environ: Mapping[str, str] | None = None) -> Path:
    """The interpreter $ZHPRUNE_EXPORT_PYTHON names, checked to be an executable file.

    Raises:
        ExportError: the variable is unset, or names no executable file.
    """
    environ = os.environ if environ is None else environ
    value = environ.get(ENV_VAR, "").strip()
    if not value:
        raise ExportError(f"The OpenVINO export needs its own environment: {INSTALL_HINT}.")
    python = Path(value).expanduser()
    if not python.is_file() or not os.access(python, os.X_OK):
        raise ExportError(f"{ENV_VAR}={value} is not an executable Python interpreter; {INSTALL_HINT}.")
    return python


def check_environment(environ: Mapping[str, str] | None = None) -> ExportEnvironment:
    """Find the export interpreter and prove it imports optimum-intel, OpenVINO and NNCF.

    Raises:
        ExportError: no interpreter, or one that lacks a required package (the message names it).
    """
    python = export_python(environ)
    try:
        done = subprocess.run(
            [str(python), "-I", "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except OSError as exc:
        raise ExportError(f"{ENV_VAR}={python} cannot be run ({exc.strerror or exc}); {INSTALL_HINT}.") from None
    except subprocess.TimeoutExpired:
        raise ExportError(
            f"{ENV_VAR}={python} did not import optimum-intel within {PROBE_TIMEOUT_S} s; check that environment."
        ) from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"exit code {done.returncode}"
        raise ExportError(f"{ENV_VAR}={python} cannot import optimum-intel/OpenVINO/NNCF ({reason}); {INSTALL_HINT}.")
    try:
        versions = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise ExportError(f"{ENV_VAR}={python} did not report its package versions; {INSTALL_HINT}.") from None
    return ExportEnvironment(python=python, versions=versions)
