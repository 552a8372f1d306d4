#!/usr/bin/env bash
# The pack engine's GPU measurements in one run (< 8 minutes on one H100 or H200):
#   PYTHON=python bash scripts/gpu_pack.sh [OUT_DIR]
# Uses the machine's own CUDA torch with this checkout on PYTHONPATH (no install). Writes
# OUT_DIR/{gpu.txt,bench.json,bench.log,smoke.log} and the packed smoke sweep; the figures go to
# docs/benchmarks.md ("Packs on a GPU") with the card's name.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-outputs/gpu-pack}}
py=${PYTHON:-python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
"$py" -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)" \
    | tee -a "$out/gpu.txt"
# 1. The training section: the single engine's img/s, then the pack's step time, img/s and peak
#    memory for N = 1, 3, 6, 12, 24, 48 stacked members (and the loop for N <= 6), the step
#    captured in a CUDA graph for N = 6, 12 (a probe: ms per replay, or why capture failed), the
#    top kernels at N = 12 and the paper protocol extrapolated (same card, same process).
#    Last, Lightning Fabric's host time per step against a plain loop (the engine's choice).
timeout 360 "$py" -m vaesae.bench --accelerator gpu --only training fabric \
    --json "$out/bench.json" 2>&1 | tee "$out/bench.log" || echo "bench failed: see bench.log"
# 2. A packed smoke sweep on the GPU in vmap mode: four runs that must complete and report.
timeout 90 "$py" -m vaesae.train -m experiment=smoke method=topk,l1 seed=0,1 trainer=gpu \
    hydra/launcher=pack hydra.launcher.mode=vmap logger=csv \
    hydra.sweep.dir="$out/smoke-vmap" > "$out/smoke.log" 2>&1 || echo "smoke sweep failed: see smoke.log"
grep -h '"status"' "$out"/smoke-vmap/*/summary.json | sort | uniq -c | tee -a "$out/smoke.log"
