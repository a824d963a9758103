#!/usr/bin/env bash
# Quick start: install into .venv (CPU torch pinned), fetch the real SmolLM2-135M, and run the whole publish
# pipeline on it offline without pushing (prune, verify, evaluate base and pruned, render the card).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${ZHPRUNE_VENV:-.venv}"
bash scripts/install.sh "$venv"
# shellcheck disable=SC1091
source "$venv/bin/activate"

models="${ZHPRUNE_MODELS_DIR:-$HOME/.cache/zhprune-hub/models}"
export ZHPRUNE_DATA_DIR="${ZHPRUNE_DATA_DIR:-$(cd .. && pwd)/shared/data}"

# The default method, layout and repair; 128 calibration windows instead of the default 512, so the
# demo takes minutes (README, "Pruning": what more windows buy).
zhprune-hub publish "$models/smollm2-135m" \
    --repo-id "${ZHPRUNE_QUICKSTART_REPO:-your-name/SmolLM2-135M-pruned-0.2}" \
    --dry-run \
    --ratio 0.2 \
    --calibration auto --num-samples 128 --seq-len 128 \
    --ppl wikitext2,ptb --ppl-seq-len 512 --max-tokens 4096 \
    --tasks piqa,arc_easy --limit 50 \
    --work-dir .zhprune/quickstart
echo "Run the tests in the same environment: source $venv/bin/activate && python -m pytest -q"
