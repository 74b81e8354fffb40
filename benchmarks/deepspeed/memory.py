"""What each rank holds under DeepSpeed ZeRO-1/2/3 for full fine-tuning, the plain freeze and fastfreeze, counted from its live tensors.

`python -m benchmarks.deepspeed [--shape small|1b] [--out benchmarks/results]` launches one
`torchrun --nproc_per_node 2` per (stage, arm) on CPU (gloo, DS_ACCELERATOR=cpu; one launch each, so
no engine outlives its run) and writes `deepspeed_memory_<shape>.{json,md}`. Each rank counts, at the
entry of the second optimizer step (gradients reduced and Adam state present; activations freed), the
bytes of every live tensor storage (gc, each storage once), split into the model's weights (frozen /
trainable; ZeRO-3: each parameter's partition `ds_tensor`), the fp32 master partitions, the Adam
moments and the rest (gradient partitions and buckets). Timings are not measured here.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import subprocess
import sys

import torch

SHAPES = {  # small: the 1B's layout at a size 2 shared cores run in minutes (the table's predictions scale it)
    "small": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=2, vocab_size=32000, tie_word_embeddings=False),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
}
K = {"small": 2, "1b": 8}
ARMS = ("full", "plain", "fastfreeze")


def _storages(tensors) -> dict[int, int]:
    out = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            s = t.untyped_storage()
            out[s.data_ptr()] = s.nbytes()
    return out


def count(trainer) -> dict:
    """This rank's live tensor bytes by what holds them (see the module docstring)."""
    gc.collect()
    live = _storages(o for o in gc.get_objects() if isinstance(o, torch.Tensor))
    model, opt = trainer.model, trainer.model_wrapped.optimizer
    frozen = _storages(getattr(p, "ds_tensor", p.data) for p in model.parameters() if not p.requires_grad)
    trainable = _storages(getattr(p, "ds_tensor", p.data) for p in model.parameters() if p.requires_grad)
    full_data = _storages(p.data for p in model.parameters())  # ZeRO-3: empty between gathers
    master = _storages(getattr(opt, "fp32_partitioned_groups_flat", None) or opt.single_partition_of_fp32_groups)
    moments = _storages(v for st in opt.optimizer.state.values() for v in st.values())
    out, seen = {}, set()
    for name, part in (("weights_frozen", frozen), ("weights_trainable", trainable), ("weights_gathered", full_data),
                       ("fp32_master", master), ("adam_moments", moments)):
        out[name] = sum(n for ptr, n in part.items() if ptr not in seen and ptr in live)
        seen |= set(part)
    rest = sorted((n for ptr, n in live.items() if ptr not in seen), reverse=True)
    out["gradients_and_buckets"] = sum(rest)
    out["largest_other"] = rest[:4]  # the biggest of them (flat gradient partitions, buckets), for the notes
    out["total"] = sum(live.values())
    return out


def _config(stage: int) -> dict:
    """The shipped configs (examples/deepspeed_zero{2,3}.json; ZeRO-1 is the ZeRO-2 file at stage 1),
    with their "auto" buckets, which HF sizes from the hidden size as for a user's run."""
    root = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
    with open(os.path.join(root, f"deepspeed_zero{max(stage, 2)}.json")) as f:
        config = json.load(f)
    config["zero_optimization"]["stage"] = stage
    return config


def worker(stage: int, arm: str, shape: str, out: str) -> None:
    """One rank: build what a user's script builds, train 2 steps, count at the second step's entry."""
    import transformers
    from datasets import Dataset

    from fastfreeze import FastFreezeTrainer, FreezeConfig

    torch.set_num_threads(1)
    args = transformers.TrainingArguments(
        output_dir=os.path.join(out, "run"), max_steps=2, per_device_train_batch_size=1, learning_rate=1e-4,
        save_strategy="no", report_to=[], use_cpu=True, ddp_backend="gloo", deepspeed=_config(stage),
        disable_tqdm=True, dataloader_num_workers=0, seed=0)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**SHAPES[shape], max_position_embeddings=64)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")  # zero.Init under ZeRO-3
    rows = [{"input_ids": list(range(1, 17)), "labels": list(range(1, 17))} for _ in range(4)]
    kw = dict(model=model, args=args, train_dataset=Dataset.from_list(rows))
    k = K[shape]
    if arm == "plain":
        for p in [*model.model.embed_tokens.parameters(), *(q for i in range(k) for q in model.model.layers[i].parameters())]:
            p.requires_grad_(False)
    trainer = (FastFreezeTrainer(**kw, freeze_config=FreezeConfig(num_frozen_layers=k)) if arm == "fastfreeze"
               else transformers.Trainer(**kw))
    counts = {}
    original = None

    def counted_step(*a, **kw_):
        if trainer.state.global_step == 1 and not counts:
            counts.update(count(trainer))
        return original(*a, **kw_)

    class Hook(transformers.TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            nonlocal original
            opt = trainer.model_wrapped.optimizer
            original = opt.step
            opt.step = counted_step

    trainer.add_callback(Hook())
    trainer.train()
    params = list(trainer.model.parameters())
    numel = {"frozen": sum(getattr(p, "ds_numel", p.numel()) for p in params if not p.requires_grad),
             "trainable": sum(getattr(p, "ds_numel", p.numel()) for p in params if p.requires_grad)}
    rank = int(os.environ["RANK"])
    with open(os.path.join(out, f"z{stage}_{arm}.rank{rank}.json"), "w") as f:
        json.dump({"stage": stage, "arm": arm, "rank": rank, "bytes": counts, "numel": numel}, f)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _launch(stage: int, arm: str, shape: str, out: str) -> None:
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "benchmarks.deepspeed.memory", "--worker", str(stage), arm, shape, out]
    proc = subprocess.run(cmd, env=env, cwd=repo, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"z{stage} {arm} failed:\n{proc.stderr[-4000:]}")


GB = 1e9


def table(results: list[dict]) -> list[str]:
    """Markdown rows: per (stage, arm), rank 0's bytes by holder, and the total of both ranks."""
    cols = ("weights_frozen", "weights_trainable", "fp32_master", "adam_moments", "gradients_and_buckets", "total")
    lines = ["| stage | arm | " + " | ".join(f"{c} GB" for c in cols) + " | total vs full |",
             "|---|---|" + "---|" * (len(cols) + 1)]
    full = {r["stage"]: r["bytes"]["total"] for r in results if r["arm"] == "full" and r["rank"] == 0}
    for r in results:
        if r["rank"] != 0:
            continue
        b = r["bytes"]
        lines.append(f"| ZeRO-{r['stage']} | {r['arm']} | " + " | ".join(f"{b[c] / GB:.3f}" for c in cols)
                     + f" | {b['total'] / full[r['stage']]:.3f}x |")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(int(argv[1]), argv[2], argv[3], argv[4])
        return 0
    ap = argparse.ArgumentParser(prog="python -m benchmarks.deepspeed", description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="small")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--work", default="/tmp/ds_memory")
    a = ap.parse_args(argv)
    os.makedirs(a.work, exist_ok=True)
    results = []
    for stage in (1, 2, 3):
        for arm in ARMS:
            _launch(stage, arm, a.shape, a.work)
            for rank in (0, 1):
                with open(os.path.join(a.work, f"z{stage}_{arm}.rank{rank}.json")) as f:
                    results.append(json.load(f))
    import deepspeed
    import transformers

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    head = [f"# DeepSpeed ZeRO memory per rank: shape {a.shape} ({SHAPES[a.shape]}), k={K[a.shape]}, fp32, 2 CPU ranks (gloo)",
            "", f"Command: `python -m benchmarks.deepspeed --shape {a.shape}`. Date (UTC): {stamp}. "
            f"torch {torch.__version__}, transformers {transformers.__version__}, deepspeed {deepspeed.__version__}, "
            f"Python {platform.python_version()}. Load: {os.getloadavg()[0]:.1f} (memory counts do not depend on it).",
            "", "Rank 0's live tensor bytes at the entry of the second optimizer step (benchmarks/deepspeed/memory.py):",
            f"parameters: frozen {results[2]['numel']['frozen']:,} / trainable {results[2]['numel']['trainable']:,} "
            "under a freeze.", ""]
    text = "\n".join(head + table(results)) + "\n"
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, f"deepspeed_memory_{a.shape}.md"), "w") as f:
        f.write(text)
    with open(os.path.join(a.out, f"deepspeed_memory_{a.shape}.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
