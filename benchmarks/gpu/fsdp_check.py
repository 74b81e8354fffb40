"""GPU check: FastFreezeTrainer under FSDP (world size 1) trains like the seed snippet + plain Trainer, keeps no
gradients for frozen weights, and serves the prefix cache; plus flash_attention_2 when flash-attn is installed.

Usage (one GPU):  torchrun --standalone --nproc_per_node 1 -m benchmarks.gpu.fsdp_check --out benchmarks/results
Rehearsal (CPU):  torchrun --standalone --nproc_per_node 1 -m benchmarks.gpu.fsdp_check --rehearse --out /tmp/r
Writes gpu_fsdp_check_<stamp>.json under --out; exit status 1 if any check failed. On a GPU the FSDP checks
also require FSDP to be really on (Trainer.is_fsdp_enabled and DTensor parameters): a Trainer that silently
falls back to DDP fails them. The CPU rehearsal runs the same code with use_cpu=True, where transformers
does not enable FSDP; it records that instead of failing.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback

import torch

import transformers
from datasets import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from fastfreeze import FastFreezeTrainer, FreezeConfig, _io
from fastfreeze._hf_compat import set_attn_implementation
from fastfreeze.data import PaddingCollator
from fastfreeze.integrations.distributed import fsdp_config

K, STEPS, ROWS, VOCAB = 2, 8, 32, 512
RTOL = 1e-4  # fp32 on GPU with TF32 off; FSDP (world size 1) reorders nothing, cuBLAS may pick other kernels
REHEARSE = False  # set by --rehearse: CPU, use_cpu=True


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def fsdp_active(trainer) -> bool:
    """FSDP really wraps the model: Trainer says so and parameters are DTensors (FSDP2) or flat (FSDP1)."""
    if not getattr(trainer, "is_fsdp_enabled", False):
        return False
    wrapped = getattr(trainer, "model_wrapped", trainer.model)
    return type(wrapped).__name__ != "DistributedDataParallel"


def has_accelerator() -> bool:
    """A device FSDP1 can run on (CUDA, or another accelerator torch knows)."""
    acc = getattr(torch, "accelerator", None)
    if acc is not None and hasattr(acc, "is_available"):
        return bool(acc.is_available())
    return torch.cuda.is_available()


def make_model(attn="sdpa", dtype=torch.float32):
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=256, max_position_embeddings=128,
                                   tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)  # transformers 5.x takes no attn_implementation= here
    set_attn_implementation(model, attn)
    return model.to(dtype)


def rows():
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(ROWS):
        ids = torch.randint(1, VOCAB, (int(torch.randint(8, 33, (1,), generator=g)),), generator=g).tolist()
        out.append({"input_ids": ids, "labels": ids})
    return out


class Probe(TrainerCallback):
    """Before each optimizer step: are frozen weights free of gradients, do trainable ones have them?"""

    def __init__(self):
        self.frozen_with_grad, self.trainable_without_grad, self.losses = set(), set(), []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        for n, p in model.named_parameters():
            if not p.requires_grad and p.grad is not None:
                self.frozen_with_grad.add(n)
            if p.requires_grad and p.grad is None:
                self.trainable_without_grad.add(n)

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


def run(arm, out, fsdp_version=None, cache=None, attn="sdpa", dtype=torch.float32):
    model = make_model(attn, dtype)
    kw = dict(output_dir=out, max_steps=STEPS, per_device_train_batch_size=8, learning_rate=1e-3, logging_steps=1,
              save_strategy="no", report_to=[], seed=0, data_seed=0, disable_tqdm=True, bf16=dtype == torch.bfloat16,
              use_cpu=REHEARSE)
    if fsdp_version:
        kw.update(fsdp="full_shard auto_wrap", fsdp_config=fsdp_config(model, version=fsdp_version))
    args = TrainingArguments(**kw)
    probe = Probe()
    # Every batch padded to 32, the longest row: the same shapes in both arms and on every step.
    data = dict(train_dataset=Dataset.from_list(rows()), data_collator=PaddingCollator(0, pad_to=32), callbacks=[probe])
    if arm == "ref":
        for p in list(model.model.embed_tokens.parameters()) + [p for l in model.model.layers[:K] for p in l.parameters()]:
            p.requires_grad = False
        trainer = Trainer(model=model, args=args, **data)
    else:
        trainer = FastFreezeTrainer(model=model, args=args, freeze_config=FreezeConfig(num_frozen_layers=K, cache=cache),
                                    **data)
    start = time.perf_counter()
    trainer.train()
    _sync()
    res = {"losses": probe.losses, "seconds": time.perf_counter() - start,
           "frozen_with_grad": sorted(probe.frozen_with_grad), "trainable_without_grad": sorted(probe.trainable_without_grad),
           "peak_mem_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
           "fsdp_active": fsdp_active(trainer) if fsdp_version else None}
    if arm == "ff":
        res["prefix_calls"] = trainer.prefix.prefix_calls
        if cache:
            s = trainer.cache_summary()
            res["cache"] = {"hits": s.hits, "misses": s.misses, "entries": s.entries}
    return res


def _write(report: dict, out_dir: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = os.path.join(out_dir, f"gpu_fsdp_check_{stamp}.json")
    _io.write_json(path, report, indent=2)
    return path


def close(a, b, rtol):
    return len(a) == len(b) > 0 and all(abs(x - y) <= rtol * abs(y) for x, y in zip(a, b, strict=True))


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--rehearse", action="store_true", help="CPU rehearsal of the same checks (FSDP not enabled there)")
    return ap.parse_args()


def _start(rehearse: bool) -> dict:
    """Set the run's sizes and precision; the empty report."""
    global REHEARSE, ROWS, STEPS
    REHEARSE = rehearse
    if REHEARSE:  # half the data and steps: still two epochs, the second one from the cache
        ROWS, STEPS = 16, 4
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU rehearsal",
            "rehearsal": REHEARSE, "torch": torch.__version__, "transformers": transformers.__version__, "checks": {}}


def _skip(report: dict, name: str, detail: str, why: str) -> None:
    report["checks"][name] = {"ok": None, "detail": detail}
    print(f"[gpu_fsdp_check] {name}: SKIPPED ({why})", flush=True)


def _nccl() -> tuple[bool, str]:
    """The process group the Trainer ran (torchrun + accelerate on CUDA) is NCCL, not gloo."""
    backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else None
    return backend == "nccl", f"process group backend: {backend}"


def main() -> int:
    cli = _parse_args()
    report, out_dir, tmp = _start(cli.rehearse), cli.out, tempfile.mkdtemp()
    os.makedirs(out_dir, exist_ok=True)

    def check(name, fn):
        try:
            ok, detail = fn()
        except Exception:  # a crash is a failed check with its traceback, the other checks still run
            ok, detail = False, traceback.format_exc()[-3000:]
        report["checks"][name] = {"ok": None if ok is None else bool(ok), "detail": detail}
        state = "SKIPPED" if ok is None else ("OK" if ok else "FAILED")
        print(f"[gpu_fsdp_check] {name}: {state}", flush=True)

    ref = run("ref", os.path.join(tmp, "ref"))
    report["reference"] = ref
    for version in (2, 1):
        if version == 1 and not has_accelerator():
            # Decided from the machine, not from how accelerate fails: FSDP1 has no CPU route in any
            # accelerate release (its plugin wants an accelerator device; 1.15 and 1.16 refuse it differently).
            _skip(report, "fsdp1_parity_and_no_frozen_grads", "needs an accelerator: FSDP1 is not run on CPU "
                  "(accelerate's FSDP1 plugin requires one)", "no accelerator")
            continue

        def fsdp_parity(version=version):
            ff = run("ff", os.path.join(tmp, f"fsdp{version}"), fsdp_version=version)
            ok = close(ff["losses"], ref["losses"], RTOL) and not ff["frozen_with_grad"] and not ff["trainable_without_grad"]
            return ok and (REHEARSE or ff["fsdp_active"]), ff
        check(f"fsdp{version}_parity_and_no_frozen_grads", fsdp_parity)

    def fsdp_cache():  # 32 rows / batch 8 = 4 steps per epoch; 8 steps = 2 epochs, the 2nd from the cache
        ff = run("ff", os.path.join(tmp, "fsdp2-cache"), fsdp_version=2, cache="memory")
        ok = (close(ff["losses"], ref["losses"], RTOL) and ff["prefix_calls"] == ROWS // 8
              and ff["cache"]["hits"] >= ROWS)
        return ok and (REHEARSE or ff["fsdp_active"]), ff
    check("fsdp2_memory_cache", fsdp_cache)

    if has_accelerator():
        check("nccl_backend", _nccl)
    else:
        _skip(report, "nccl_backend", "CPU rehearsal: gloo (NCCL needs CUDA)", "no accelerator")

    try:
        import flash_attn  # noqa: F401
        has_flash = True
    except ImportError:
        has_flash = False
    if has_flash:
        def flash():
            a = run("ff", os.path.join(tmp, "fa2"), attn="flash_attention_2", dtype=torch.bfloat16)
            b = run("ff", os.path.join(tmp, "sdpa-bf16"), attn="sdpa", dtype=torch.bfloat16)
            return close(a["losses"], b["losses"], 2e-2), {"flash_attention_2": a, "sdpa": b}
        check("flash_attention_2_vs_sdpa_bf16", flash)
    else:
        _skip(report, "flash_attention_2_vs_sdpa_bf16", "flash-attn not installed: skipped", "flash-attn not installed")

    path = _write(report, out_dir)
    failed = [n for n, c in report["checks"].items() if c["ok"] is False]
    print(f"[gpu_fsdp_check] wrote {path}; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
