#!/usr/bin/env bash
# The pack engine's GPU measurements in one run (< 8 minutes on one H100 or H200):
#   PYTHON=python bash scripts/gpu_pack.sh [OUT_DIR]
# Uses the machine's own CUDA torch with this checkout on PYTHONPATH (no install). Writes
# OUT_DIR/{gpu.txt,bench.json,bench.log,smoke.log,captured.log} and the packed smoke sweeps;
# the figures go to docs/benchmarks.md ("Packs on a GPU") with the card's name. The timeouts sum
# to 8.5 minutes.
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
#    top kernels at N = 12, the 6-member step beside a thread that measures epoch ends, six
#    members' epoch ends at the paper's evaluation size in place and overlapped, and the paper
#    protocol extrapolated (same card, same process).
#    Last, Lightning Fabric's host time per step against a plain loop (the engine's choice).
timeout 300 "$py" -m vaesae.bench --accelerator gpu --only training fabric \
    --json "$out/bench.json" 2>&1 | tee "$out/bench.log" || echo "bench failed: see bench.log"
# 2. A packed smoke sweep on the GPU in vmap mode: four runs that must complete and report.
timeout 60 "$py" -m vaesae.train -m experiment=smoke method=topk,l1 seed=0,1 trainer=gpu \
    hydra/launcher=pack hydra.launcher.mode=vmap logger=csv \
    hydra.sweep.dir="$out/smoke-vmap" > "$out/smoke.log" 2>&1 || echo "smoke sweep failed: see smoke.log"
grep -h '"status"' "$out"/smoke-vmap/*/summary.json | sort | uniq -c | tee -a "$out/smoke.log"
# 3. The captured step with the epoch ends overlapped (the engine's fastest path): the same sweep
#    replayed from CUDA graphs while a worker thread measures, its epoch means against the eager
#    sweep's (a failed capture says so in captured.log), and the GPU test that holds a captured
#    epoch to the eager one.
timeout 60 "$py" -m vaesae.train -m experiment=smoke method=topk,l1 seed=0,1 trainer=gpu \
    hydra/launcher=pack hydra.launcher.mode=vmap hydra.launcher.capture=true \
    hydra.launcher.overlap=true logger=csv \
    hydra.sweep.dir="$out/smoke-captured" > "$out/captured.log" 2>&1 || echo "captured sweep failed: see captured.log"
grep -c "capture of the stacked step failed" "$out/captured.log" | sed 's/^/failed captures: /' | tee -a "$out/captured.log"
"$py" - "$out" <<'PY' | tee -a "$out/captured.log"
import csv, glob, os, sys
out = sys.argv[1]
for eager in sorted(glob.glob(f"{out}/smoke-vmap/*/metrics.csv")):
    run = os.path.basename(os.path.dirname(eager))
    captured = f"{out}/smoke-captured/{run}/metrics.csv"
    if not os.path.exists(captured):
        print(run, "no captured run"); continue
    a, b = list(csv.DictReader(open(eager))), list(csv.DictReader(open(captured)))
    worst = max(abs(float(y[k]) - float(x[k])) / max(abs(float(x[k])), 1e-9)
                for x, y in zip(a, b) for k in ("train/recon", "sparsity/l0", "eval/recon"))
    print(run, "epochs", len(a), len(b), "largest relative difference", f"{worst:.2e}")
PY
timeout 90 "$py" -m pytest -q -p no:cacheprovider tests/test_pack.py -k captured 2>&1 | tail -3 | tee -a "$out/captured.log"
