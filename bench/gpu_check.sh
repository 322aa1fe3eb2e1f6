#!/usr/bin/env bash
# The one-call GPU check: builds the SD 1.5-shaped random pipeline on the GPU and measures the
# inversion step (with and without torch.compile), diffusers' textual-inversion example's step,
# generation, a sweep step and the bare UNet floor. Writes bench/gpu_results.json and
# bench/gpu_results.md; see bench/gpu_check.py for the sections.
#
#   bash bench/gpu_check.sh                       # one GPU, under 8 minutes
#   bash bench/gpu_check.sh --device cpu --tiny   # check the script on a CPU with the tiny model
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python}"
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then python=.venv/bin/python; fi
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Results are written after every section, so the 8-minute limit keeps whatever finished.
exec timeout --signal=INT 470 "$python" bench/gpu_check.py "$@"
