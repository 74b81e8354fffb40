"""GPU-suite step: the run_clm.py pattern (model built on the CPU, handed to FastFreezeTrainer with default arguments) runs the kernel set of the training device.

On a GPU, Trainer.__init__ moves the model to CUDA; fastfreeze must then choose and run the Triton
kernels (before issue 24 it chose torch ops, having looked at the CPU weights). Checks: the freeze
report names the kernel set and device; the csrc_triton ops were really called in training (counted
by wrapping them); the losses equal the seed snippet + Trainer on the same init (fp32; rtol 1e-4
covers the Triton kernels' reduction order, a wrong loss is O(1)). In the CPU rehearsal the training
device is the CPU, so the expected set is torch and no Triton op may run. Writes OUT/placement.json.

Usage: python -m benchmarks.gpu.placement_check --out DIR [--rehearse]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import torch

RTOL = 1e-4
OPS = ("rms_norm", "swiglu", "linear_cross_entropy")


def _model():
    import transformers

    cfg = transformers.LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=1024, tie_word_embeddings=False)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg)  # fp32, on the CPU, as run_clm.py loads it


def _train(arm: str, steps: int):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments, default_data_collator

    from fastfreeze import FastFreezeTrainer, FreezeConfig

    model = _model()
    g = torch.Generator().manual_seed(1)
    rows = [{"input_ids": ids, "attention_mask": [1] * 64, "labels": ids}
            for ids in torch.randint(1, 1024, (8, 64), generator=g).tolist()]
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=2,
                             logging_steps=1, save_strategy="no", report_to=[], seed=0, disable_tqdm=True)
    kw = dict(model=model, args=args, train_dataset=Dataset.from_list(rows), data_collator=default_data_collator)
    if arm == "seed":
        for p in [*model.model.embed_tokens.parameters(), *model.model.layers[:2].parameters()]:
            p.requires_grad = False
        trainer = Trainer(**kw)
    else:
        trainer = FastFreezeTrainer(**kw, freeze_config=FreezeConfig(num_frozen_layers=2))
    trainer.train()
    return trainer, [row["loss"] for row in trainer.state.log_history if "loss" in row]


def check(steps: int = 3) -> dict:
    import csrc_triton

    calls = dict.fromkeys(OPS, 0)
    for name in OPS:
        original = getattr(csrc_triton, name)

        def counted(*a, _name=name, _fn=original, **kw):
            calls[_name] += 1
            return _fn(*a, **kw)

        setattr(csrc_triton, name, counted)
    ff, ff_losses = _train("ff", steps)
    _, seed_losses = _train("seed", steps)
    device = ff.args.device
    expected = "triton" if device.type == "cuda" else "torch"
    report = ff.freeze_report
    ran = sum(calls.values())
    close = len(ff_losses) == len(seed_losses) and all(abs(a - b) <= RTOL * abs(b) for a, b in zip(ff_losses, seed_losses))
    ok = report.kernel_set == expected and report.device.startswith(device.type) and close and (
        ran > 0 if expected == "triton" else ran == 0)
    return {"ok": ok, "training_device": str(device), "expected_kernel_set": expected, "kernel_set": report.kernel_set,
            "report_device": report.device, "triton_calls": calls, "losses_ff": ff_losses, "losses_seed": seed_losses,
            "losses_close": close, "rtol": RTOL}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--rehearse", action="store_true", help="CPU: the expected kernel set is torch")
    a = ap.parse_args(argv)
    if not a.rehearse and not torch.cuda.is_available():
        print("gpu_placement_check: no CUDA device (use --rehearse on CPU)", file=sys.stderr)
        return 2
    res = check()
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "placement.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res))
    print(f"placement check: {'PASS' if res['ok'] else 'FAIL'} (kernel set {res['kernel_set']} on "
          f"{res['report_device']}, expected {res['expected_kernel_set']}; Triton calls {res['triton_calls']})")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
