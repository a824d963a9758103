#!/usr/bin/env bash
# Build the separate environment that `zhprune-hub export` runs optimum-intel (OpenVINO + NNCF) in.
# optimum-intel 2.2.0 needs transformers<5.6 and huggingface_hub 1.x, which cannot share an environment
# with zhprune-hub's own transformers 5.24 / huggingface_hub 2.x (see the README), so the export runs
# as a subprocess of this environment's python.
# Usage: bash scripts/install_export_env.sh [--fresh] DIR
#        then: export ZHPRUNE_EXPORT_PYTHON=DIR/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."

fresh=()
if [[ "${1:-}" == "--fresh" ]]; then fresh=(--clear); shift; fi
env_dir="${1:?usage: install_export_env.sh [--fresh] DIR}"

export PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -m venv "${fresh[@]}" "$env_dir"
# torch first and alone, so pip takes the CPU wheel; the constraints then hold it (and everything else)
# at the versions the export was tested with: an unpinned resolve upgrades torch through torchvision
# and downloads a multi-GB CUDA build.
"$env_dir/bin/python" -m pip install --quiet -c constraints-export.txt torch
"$env_dir/bin/python" -m pip install --quiet -c constraints-export.txt "optimum-intel[openvino]" optimum transformers nncf
# optimum-intel requires torchvision, but only its vision-language models import it, and the torchvision
# wheels on PyPI are CUDA builds: beside the CPU torch they fail to load ("operator torchvision::nms does
# not exist"), and transformers then cannot import PreTrainedModel at all. Without torchvision,
# transformers simply skips its vision helpers.
"$env_dir/bin/python" -m pip uninstall --quiet --yes torchvision
"$env_dir/bin/python" -c "import optimum.intel, openvino, nncf; print('export environment ready:', '$env_dir/bin/python')"
echo "set ZHPRUNE_EXPORT_PYTHON=$env_dir/bin/python"
