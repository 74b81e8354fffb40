#!/usr/bin/env bash
# GPU suite: kernel tests on the GPU (no interpreter), then kernel benchmarks; everything under $OUT.
# Usage: bash benchmarks/gpu_suite.sh            (OUT defaults to benchmarks/results)
# Budget: < 8 minutes on one H100 (tests ~1-2 min incl. Triton compiles, bench_kernels < 3 min).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
unset TRITON_INTERPRET  # real GPU kernels, not the CPU interpreter
PY="${PYTHON:-python}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
STATUS=0

log() { echo "[gpu_suite $(date -u +%H:%M:%S)] $*" | tee -a "$OUT/gpu_suite_${STAMP}.log"; }

log "device: $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA")')"
log "versions: $("$PY" -c 'import torch, triton, transformers; print("torch", torch.__version__, "triton", triton.__version__, "transformers", transformers.__version__)')"
log "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"

# ---- 1. kernel tests on the GPU -------------------------------------------------------------
log "kernel tests -> $OUT/kernel_tests_${STAMP}.xml"
if timeout 300 "$PY" -m pytest tests/kernels -q -p no:cacheprovider \
        --junitxml="$OUT/kernel_tests_${STAMP}.xml" >"$OUT/kernel_tests_${STAMP}.log" 2>&1; then
    log "kernel tests passed: $(tail -n 1 "$OUT/kernel_tests_${STAMP}.log")"
else
    STATUS=1  # keep going: benchmark numbers are still worth having, the exit code reports the failure
    log "kernel tests FAILED (see kernel_tests_${STAMP}.log): $(tail -n 1 "$OUT/kernel_tests_${STAMP}.log")"
fi

# ---- 2. kernel benchmarks -------------------------------------------------------------------
log "bench_kernels -> $OUT"
if timeout 240 "$PY" benchmarks/bench_kernels.py --out "$OUT" 2>&1 | tee "$OUT/bench_kernels_${STAMP}.log"; then
    log "bench_kernels done"
else
    STATUS=1
    log "bench_kernels FAILED (see bench_kernels_${STAMP}.log)"
fi

# ---- 3. extension point: later steps (e.g. benchmarks/bench_train.py) go here ------------------
# Keep the total under 8 minutes on one H100; write outputs under "$OUT" and set STATUS=1 on failure, e.g.:
#   if [ -f benchmarks/bench_train.py ]; then
#       timeout 120 "$PY" benchmarks/bench_train.py --out "$OUT" 2>&1 | tee "$OUT/bench_train_${STAMP}.log" || STATUS=1
#   fi

# bench_train (end-to-end arms, see benchmarks/bench_train.py). Only the target arms, no k sweep, so every
# arm of a group fits in GPU memory at once (they run interleaved in one process): gpu-1b ~30 GB held +
# one arm's activations; gpu-8b-slice ~45 GB held. Liger arms are added when liger_kernel is installed.
log "bench_train gpu-1b -> $OUT"
if timeout 240 "$PY" benchmarks/bench_train.py --preset gpu-1b --out "$OUT" --sweep none \
        --arms naive,liger,ff,ff-warm,floor 2>&1 | tee "$OUT/bench_train_gpu-1b_${STAMP}.log"; then
    log "bench_train gpu-1b done"
else
    STATUS=1
    log "bench_train gpu-1b FAILED (see bench_train_gpu-1b_${STAMP}.log)"
fi
# FSDP (world size 1): parity with the seed snippet, no grads on frozen weights, cache under FSDP.
log "fsdp check -> $OUT"
if timeout 120 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 benchmarks/gpu_fsdp_check.py --out "$OUT" \
        2>&1 | tee "$OUT/gpu_fsdp_check_${STAMP}.log"; then
    log "fsdp check done"
else
    STATUS=1
    log "fsdp check FAILED (see gpu_fsdp_check_${STAMP}.log)"
fi
# The 8B slice only if the 8-minute budget still has room for its 150 s cap.
RUN_8B=0; if [ "${SKIP_8B_SLICE:-0}" != 1 ] && [ "$SECONDS" -lt 310 ]; then RUN_8B=1; fi
if [ "$RUN_8B" = 1 ]; then
    log "bench_train gpu-8b-slice -> $OUT"
    if timeout 150 "$PY" benchmarks/bench_train.py --preset gpu-8b-slice --out "$OUT" --sweep none --ckpt off \
            --arms naive,liger,ff-warm,floor 2>&1 | tee "$OUT/bench_train_gpu-8b-slice_${STAMP}.log"; then
        log "bench_train gpu-8b-slice done"
    else
        STATUS=1
        log "bench_train gpu-8b-slice FAILED (see bench_train_gpu-8b-slice_${STAMP}.log)"
    fi
fi
[ "$RUN_8B" = 1 ] || log "gpu-8b-slice skipped (SKIP_8B_SLICE=1, or the 8-minute budget had no room)"
"$PY" benchmarks/plot.py "$OUT"/bench_train_gpu-*.json || log "plot.py failed (results JSON still in $OUT)"

log "done (status $STATUS); outputs in $OUT"
exit "$STATUS"
