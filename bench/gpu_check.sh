#!/usr/bin/env bash
# The one-call GPU check: builds an SD 1.5-shaped random pipeline on the GPU and measures the
# inversion step (with and without torch.compile), the LoRA phase, diffusers' textual-inversion
# example's step, generation, a sweep step and the bare UNet floor; then the same for an
# SDXL-shaped one at 1024 px (step, LoRA phase, generation, peak memory against 24 GB).
# Writes bench/gpu_results{,_sdxl}.{json,md}; see bench/gpu_check.py for the sections.
#
#   bash bench/gpu_check.sh                       # one GPU, under 9 minutes
#   bash bench/gpu_check.sh --device cpu --tiny   # check the script on a CPU with the tiny models
set -uo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python}"
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then python=.venv/bin/python; fi
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Results are written after every section, so each part's limit keeps whatever finished.
timeout --signal=INT 250 "$python" bench/gpu_check.py --family sd "$@"; sd=$?
timeout --signal=INT 290 "$python" bench/gpu_check.py --family sdxl "$@"; sdxl=$?
exit $(( sd > sdxl ? sd : sdxl ))
