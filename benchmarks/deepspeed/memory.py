"""What each rank holds under DeepSpeed ZeRO-1/2/3 for full fine-tuning, the plain freeze and fastfreeze, counted from its live tensors.

`python -m benchmarks.deepspeed [--shape small|1b] [--arms full,plain,fastfreeze] [--stages 1,2,3]
[--out benchmarks/results]` launches one `torchrun --nproc_per_node 2` per (stage, arm) on CPU (gloo,
DS_ACCELERATOR=cpu; one launch each, so no engine outlives its run, and a machine needs room for one
launch only) and writes `deepspeed_memory_<shape>.{json,md}` (a subset of arms or stages: the names get
`_<arms>_z<stages>`, so a partial run never overwrites the whole table). Beside each measured total the
table prints the per-element prediction (`predicted`) that docs/placement.md scales to 1B/8B/70B. Each rank counts, at the
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
RANKS = 2


def predicted_bytes(stage: int, frozen: int, trainable: int, ranks: int = RANKS) -> int:
    """Per rank, fp32, from element counts (what the small shape measured, per element): the weights, whole
    under ZeRO-1/2 and a 1/N partition under ZeRO-3; for trainable elements only, a 1/N share of the fp32
    master (4 B), Adam's two moments (8 B) and the gradient partition (4 B). Excluded: activations, buckets,
    and under ZeRO-1/2 the one parameter straddling the partition boundary (its whole gradient)."""
    weights = 4 * (frozen + trainable) // (ranks if stage == 3 else 1)
    return weights + 16 * trainable // ranks


def table(results: list[dict]) -> list[str]:
    """Markdown rows: per (stage, arm), rank 0's bytes by holder, the prediction from its element counts
    (when recorded), and the total against full fine-tuning of the same stage (when that arm ran)."""
    cols = ("weights_frozen", "weights_trainable", "fp32_master", "adam_moments", "gradients_and_buckets", "total")
    lines = ["| stage | arm | " + " | ".join(f"{c} GB" for c in cols) + " | predicted GB | total vs full |",
             "|---|---|" + "---|" * (len(cols) + 2)]
    full = {r["stage"]: r["bytes"]["total"] for r in results if r["arm"] == "full" and r["rank"] == 0}
    for r in results:
        if r["rank"] != 0:
            continue
        b, n, stage = r["bytes"], r.get("numel"), r["stage"]
        predicted = f"{predicted_bytes(stage, n['frozen'], n['trainable']) / GB:.3f}" if n else "n/a"
        versus = f"{b['total'] / full[stage]:.3f}x" if stage in full else "n/a (full not run)"
        lines.append(f"| ZeRO-{stage} | {r['arm']} | " + " | ".join(f"{b[c] / GB:.3f}" for c in cols)
                     + f" | {predicted} | {versus} |")
    return lines


def _subset(text: str, allowed: tuple, what: str) -> tuple:
    chosen = tuple(x.strip() for x in text.split(",") if x.strip())
    unknown = [x for x in chosen if x not in allowed]
    if unknown or not chosen:
        raise SystemExit(f"--{what}: choose from {','.join(allowed)} (comma-separated), got {text!r}")
    return tuple(x for x in allowed if x in chosen)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(int(argv[1]), argv[2], argv[3], argv[4])
        return 0
    ap = argparse.ArgumentParser(prog="python -m benchmarks.deepspeed", description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="small")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--arms", default=",".join(ARMS),
                    help="comma-separated subset of full,plain,fastfreeze (at 1B fp32 the two freeze arms need "
                         "~15-20 GB of RAM for 2 ranks, full fine-tuning ~28-33 GB: docs/placement.md)")
    ap.add_argument("--stages", default="1,2,3", help="comma-separated subset of the ZeRO stages 1,2,3")
    ap.add_argument("--work", default="/tmp/ds_memory")
    a = ap.parse_args(argv)
    arms, stages = _subset(a.arms, ARMS, "arms"), _subset(a.stages, ("1", "2", "3"), "stages")
    os.makedirs(a.work, exist_ok=True)
    results = []
    for stage in map(int, stages):
        for arm in arms:
            _launch(stage, arm, a.shape, a.work)
            for rank in (0, 1):
                with open(os.path.join(a.work, f"z{stage}_{arm}.rank{rank}.json")) as f:
                    results.append(json.load(f))
    import deepspeed
    import transformers

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    whole = (arms, stages) == (ARMS, ("1", "2", "3"))
    options = "" if whole else f" --arms {','.join(arms)} --stages {','.join(stages)}"
    name = f"deepspeed_memory_{a.shape}" + ("" if whole else f"_{'-'.join(arms)}_z{''.join(stages)}")
    freeze = next((r for r in results if r["arm"] != "full"), results[0])
    head = [f"# DeepSpeed ZeRO memory per rank: shape {a.shape} ({SHAPES[a.shape]}), k={K[a.shape]}, fp32, 2 CPU ranks (gloo)",
            "", f"Command: `python -m benchmarks.deepspeed --shape {a.shape}{options}`. Date (UTC): {stamp}. "
            f"torch {torch.__version__}, transformers {transformers.__version__}, deepspeed {deepspeed.__version__}, "
            f"Python {platform.python_version()}. Load: {os.getloadavg()[0]:.1f} (memory counts do not depend on it).",
            "", "Rank 0's live tensor bytes at the entry of the second optimizer step (benchmarks/deepspeed/memory.py):",
            f"parameters: frozen {freeze['numel']['frozen']:,} / trainable {freeze['numel']['trainable']:,} "
            f"{'under a freeze' if freeze['arm'] != 'full' else '(full fine-tuning)'}.", ""]
    text = "\n".join(head + table(results)) + "\n"
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, f"{name}.md"), "w") as f:
        f.write(text)
    with open(os.path.join(a.out, f"{name}.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
