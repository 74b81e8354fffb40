#!/usr/bin/env bash
# GPU suite: kernel tests on the GPU, kernel benchmarks, bench_train (gpu-1b, gpu-8b-slice if time allows),
# the GPU defaults under bf16, flash-attn varlen with the packed cache, the FSDP check (NCCL), plots, and one PASS/FAIL line per GPU target. At most 8 files under $OUT.
# Usage: bash benchmarks/gpu/suite.sh              (one H100/H200; OUT defaults to benchmarks/results)
#        bash benchmarks/gpu/suite.sh --rehearse   (CPU, toy shapes, kernels interpreted; OUT defaults to a temp dir)
# Budget: the whole run stays under 8 minutes (BUDGET_S, default 470 s): every step runs under a timeout
# cut to what is left, and the 8B slice runs only if at least 100 s remain. Not yet run on a GPU.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REHEARSE=0
[ "${1:-}" = "--rehearse" ] && REHEARSE=1
PY="${PYTHON:-python}"
BUDGET_S="${BUDGET_S:-470}"
if [ "$REHEARSE" = 1 ]; then
    OUT="${OUT:-$(mktemp -d /tmp/gpu_suite_rehearsal.XXXXXX)}"
    export TRITON_INTERPRET=1  # kernels run on CPU tensors through Triton's interpreter
    PRESET_1B=toy; PRESET_8B=toy; KERNEL_TESTS="tests/csrc_triton/test_swiglu.py tests/csrc_triton/test_package.py"
    KERNEL_ARGS="--rehearse"; FSDP_ARGS="--rehearse"; PLACEMENT_ARGS="--rehearse"; TRAIN_EXTRA=(--steps 1,1,1 --threads 1 --memory tracker)
else
    OUT="${OUT:-benchmarks/results}"
    unset TRITON_INTERPRET  # real GPU kernels
    PRESET_1B=gpu-1b; PRESET_8B=gpu-8b-slice; KERNEL_TESTS="tests/csrc_triton tests/test_kernels.py"
    KERNEL_ARGS="--budget-s 80"; FSDP_ARGS=""; PLACEMENT_ARGS=""; TRAIN_EXTRA=()
fi
mkdir -p "$OUT"
WORK="$(mktemp -d /tmp/gpu_suite_work.XXXXXX)"
LOG="$OUT/gpu_suite.log"
: >"$LOG"
STATUS=0

log() { echo "[gpu_suite $(date -u +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$LOG"; }
left() { echo $((BUDGET_S - SECONDS)); }
# step NAME CAP_S CMD...: run CMD under min(CAP_S, time left - 20 s), output appended to the log
step() {
    local name="$1" cap="$2"; shift 2
    local t=$(( $(left) - 20 )); [ "$t" -gt "$cap" ] && t="$cap"
    if [ "$t" -lt 10 ]; then
        log "$name: SKIPPED (budget spent)"; echo -e "$name\tskipped\t0" >>"$WORK/steps.tsv"; return
    fi
    log "$name (timeout ${t}s): $*"
    local t0=$SECONDS rc=0
    timeout "$t" "$@" >>"$LOG" 2>&1 || rc=$?
    [ "$rc" = 0 ] || STATUS=1
    log "$name: rc $rc in $((SECONDS - t0))s"
    echo -e "$name\t$rc\t$((SECONDS - t0))" >>"$WORK/steps.tsv"
}

log "mode: $([ "$REHEARSE" = 1 ] && echo 'REHEARSAL on CPU (toy shapes, interpreted kernels)' || echo 'GPU run')"
log "device: $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA")')"
log "versions: $("$PY" -c 'import torch, triton, transformers; print("torch", torch.__version__, "triton", triton.__version__, "transformers", transformers.__version__)')"
log "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown); work dir $WORK; outputs in $OUT"

step "kernel tests" 100 "$PY" -m pytest $KERNEL_TESTS -q -p no:cacheprovider
step "bench_kernels" 110 "$PY" -m benchmarks.kernels --out "$WORK/kernels" $KERNEL_ARGS
# Only the target arms, no k sweep, so every arm of a group fits in GPU memory at once (they run interleaved
# in one process): gpu-1b ~30 GB held + one arm's activations. Liger arms join when liger_kernel is installed.
step "bench_train gpu-1b (preset $PRESET_1B)" 150 "$PY" -m benchmarks.train --preset "$PRESET_1B" --out "$WORK/train-1b" \
    --sweep none --targets gpu --arms naive,liger,ff,ff-warm,floor "${TRAIN_EXTRA[@]}"
# FSDP (world size 1): parity with the seed snippet, no grads on frozen weights, cache under FSDP, the NCCL backend.
step "fsdp check" 60 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m benchmarks.gpu.fsdp_check \
    --out "$WORK/fsdp" $FSDP_ARGS
# What the CPU suite cannot check (docs/gpu-suite.md): the defaults a GPU user gets (compiled Triton kernels, the
# fused loss or TRL's fused head) under bf16 autocast, against plain freezing; CUDA-only tests, so a rehearsal
# collects and skips them (the path, not the GPU).
step "gpu defaults bf16" 90 "$PY" -m pytest -q -p no:cacheprovider -rs \
    tests/test_trainer.py::test_bf16_autocast_on_cuda_in_the_gpu_defaults \
    tests/integrations/test_trl.py::test_sft_on_cuda_in_the_gpu_defaults_matches_trl
# flash-attn varlen (padding-free rows) with the per-document packed cache; N/A where flash-attn is not installed.
if "$PY" -c "import flash_attn" 2>/dev/null; then
    step "flash-attn varlen packed cache" 60 "$PY" -m pytest -q -p no:cacheprovider -rs \
        tests/integrations/test_trl.py::test_flash_attention_2_padding_free
else
    log "flash-attn varlen packed cache: SKIPPED (flash-attn not installed)"
    echo -e "flash-attn varlen packed cache\tskipped\t0" >>"$WORK/steps.tsv"
fi
# The run_clm.py pattern: model built on the CPU, FastFreezeTrainer with defaults; the Triton kernels must run.
step "placement check" 60 "$PY" -m benchmarks.gpu.placement_check --out "$WORK/placement" $PLACEMENT_ARGS
if [ "${SKIP_8B_SLICE:-0}" != 1 ] && [ "$(left)" -ge 100 ]; then
    step "bench_train gpu-8b-slice (preset $PRESET_8B)" 150 "$PY" -m benchmarks.train --preset "$PRESET_8B" --out "$WORK/train-8b" \
        --sweep none --ckpt off --targets gpu --arms naive,liger,ff-warm,floor "${TRAIN_EXTRA[@]}"
else
    log "bench_train gpu-8b-slice: SKIPPED (SKIP_8B_SLICE=1 or under 100 s of budget left)"
    echo -e "bench_train gpu-8b-slice (preset $PRESET_8B)\tskipped\t0" >>"$WORK/steps.tsv"
fi
REPORT_ARGS=(--work "$WORK" --out "$OUT" --log "$LOG")
[ "$REHEARSE" = 1 ] && REPORT_ARGS+=(--rehearse)
"$PY" -m benchmarks.gpu.report "${REPORT_ARGS[@]}" || STATUS=1
rm -rf "$WORK"
exit "$STATUS"
