#!/usr/bin/env bash
# Install zhprune-hub the way a user does: into a virtual environment, with the CPU torch pin of
# constraints.txt, plus the test extras; then fetch the real test models (sha256-checked).
# Usage: bash scripts/install.sh [--fresh] VENV   (--fresh recreates VENV from nothing, as CI does)
set -euo pipefail
cd "$(dirname "$0")/.."

fresh=()
if [[ "${1:-}" == "--fresh" ]]; then fresh=(--clear); shift; fi
venv="${1:?usage: install.sh [--fresh] VENV}"

export PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -m venv "${fresh[@]}" "$venv"
"$venv/bin/python" -m pip install --quiet -c constraints.txt -e ".[test]"
"$venv/bin/python" scripts/fetch_test_models.py   # both real test models (the tests use them too)
