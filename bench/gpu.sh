#!/usr/bin/env bash
# The GPU rows of docs/benchmarks.md, in one prepared run (< 8 minutes on one CUDA GPU):
#   1. training-step cost CE vs offline KD vs online KD, pointmlp -> pointmlp-elite, 1024 points, batch 32, with
#      CUDA max-allocated memory (bench/step_cost.py)
#   2. kdpc record vs the bare teacher forward, same teacher object and batches, interleaved (bench/record_cost.py)
#   3. the error of bf16 / fp16 recording against fp32 (bench/record_precision.py)
#   4. a store recorded on the GPU verifies against the same teacher replayed on the CPU (kdpc records verify)
#
#   bash bench/gpu.sh                 # on a CUDA machine; tables and logs go to $OUT (default bench-out/gpu)
#   bash bench/gpu.sh --dry-run       # the same steps on the CPU at toy sizes: checks the script (run by the tests)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-bench-out/gpu}
mkdir -p "$OUT"
if [[ "${1:-}" == "--dry-run" ]]; then
  DEV=cpu; STEP=(--num-points 64 --batch-size 4 --samples-per-class 2 --rounds 2 --warmup 1 --threads 1)
  RECORD=(--num-points 64 --samples-per-class 2 --views 2 --rounds 2 --threads 1)
  TEACHER=(--model pointnet-tiny --epochs 1 --batch-size 8 --dataset-opt samples_per_class=2
           --dataset-opt num_raw_points=128 --num-points 64)
  VIEWS=2
else
  DEV=cuda
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'bench/gpu.sh: no CUDA device (use --dry-run on a CPU)')"
  STEP=(--num-points 1024 --batch-size 32 --samples-per-class 8 --rounds 10 --warmup 3)
  RECORD=(--teacher pointmlp --num-points 1024 --samples-per-class 16 --views 4 --batch-size 64 --workers 4 --rounds 5)
  TEACHER=(--model pointmlp --epochs 1 --batch-size 32 --num-points 1024 --dataset-opt samples_per_class=16)
  VIEWS=4
fi
log() { echo "== $*" | tee -a "$OUT/gpu.md"; }
: > "$OUT/gpu.md"

log "1/4 step cost: CE vs offline KD vs online KD ($DEV)"
"$PY" bench/step_cost.py --device "$DEV" --teacher pointmlp --student pointmlp-elite "${STEP[@]}" \
  --workdir "$OUT/step" --out "$OUT" | tee -a "$OUT/gpu.md"

log "2/4 kdpc record vs bare forward ($DEV)"
"$PY" bench/record_cost.py --device "$DEV" "${RECORD[@]}" --workdir "$OUT/record" --out "$OUT" | tee -a "$OUT/gpu.md"

log "3/4 + 4/4: a teacher (1 epoch: its numerics, not its accuracy), recorded on $DEV at fp32, verified on the CPU"
"$PY" -m kdpc train "${TEACHER[@]}" --device "$DEV" --out "$OUT/teacher.pt" > "$OUT/train.log"
"$PY" bench/record_precision.py --device "$DEV" --teacher "$OUT/teacher.pt" --out "$OUT" | tee -a "$OUT/gpu.md"
"$PY" -m kdpc record --teacher "$OUT/teacher.pt" --views "$VIEWS" --device "$DEV" --overwrite \
  --out "$OUT/records-$DEV.zarr" | tail -1 | tee -a "$OUT/gpu.md"
"$PY" -m kdpc records verify "$OUT/records-$DEV.zarr" --teacher "$OUT/teacher.pt" --device cpu --check 256 \
  | tee -a "$OUT/gpu.md"
echo "tables: $OUT/gpu.md"
