"""The safety scenario with something to protect: pretrain a world, align it thinly, shift its identity, per arm.

`run_world_seed` (one seed): a 12-layer narrow Llama-shaped model is pretrained from scratch on the
world corpus of `fastfreeze.lab.safety.world_data` (helpful answers to harmful and benign actions: the
knowledge), aligned briefly to refuse half of the harmful actions, then fine-tuned on 20
content-bearing identity-shift rows under each arm:
- ``seq``: plain fine-tuning; ``k<N>``: FastFreezeTrainer freezing the embedding + blocks 0..N-1
  (index-exact);
- ``paper:<set>``: the official code's list applied by substring (`paper_sets.apply_substring_freeze`,
  plain Trainer): at 12 layers ``layers.1`` also freezes blocks 10 and 11, as on LLaMA-2.
Each arm's identity exact match (teacher-forced, on its 20 rows) is scored after every step; the
model is evaluated (`safety_world_eval`) at the paper's budget (step 10), at the first step where identity
EM reaches `match_em` (matched identity learning) and at the end, with and without the AOA system
prompt. `run_world` runs several seeds and `summarize_world` gives mean and spread.

Usage:
    results = run_world("runs/safety-world", seeds=(0, 1, 2))
    print(format_world_table(summarize_world(results)))
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from fastfreeze import _io
from fastfreeze.data import PaddingCollator, build_word_tokenizer, tokenize_bios, tokenize_qa
from fastfreeze.lab.safety.world_data import make_world_data
from fastfreeze.lab.continual.build import QA_COLUMNS, build_model
from fastfreeze.lab.continual.config import ConfigError, ModelConfig, fingerprint
from fastfreeze.lab.continual.evaluate import EvalSet, evaluate
from fastfreeze.lab.continual.paper_sets import PAPER_SETS, apply_substring_freeze, block_index, frozen_block_indices
from fastfreeze.lab.continual.thresholds import reaches
from fastfreeze.lab.continual.trainers import make_trainer, training_arguments
from fastfreeze.lab.safety.world_eval import evaluate_world

WORLD_MODEL = dict(hidden_size=64, num_hidden_layers=12, num_attention_heads=4, max_position_embeddings=96)
WORLD_PRETRAIN = dict(num_train_epochs=20, learning_rate=2.0e-3, per_device_train_batch_size=32,
                      lr_scheduler_type="cosine", warmup_steps=30, weight_decay=0.1)
WORLD_ALIGN = dict(num_train_epochs=3, learning_rate=5.0e-4, per_device_train_batch_size=16,
                   lr_scheduler_type="constant", weight_decay=0.0)
WORLD_SHIFT = dict(max_steps=100, learning_rate=5.0e-4, per_device_train_batch_size=10,
                   lr_scheduler_type="constant", weight_decay=0.0)
WORLD_DATA: dict = {}
WORLD_ARMS = ("seq", "k3", "k6", "paper:freeze-3layers", "paper:freeze-6layers")
MATCH_EM = 0.7  # identity EM of the matched point, compared as counts: 14 of the 20 identity rows
PAPER_BUDGET_STEP = 10  # the official identity shift: 10 examples x 10 epochs at batch 10


def _check_arms(arms, num_layers: int) -> None:
    for arm in arms:
        if arm == "seq" or (arm.startswith("paper:") and arm[6:] in PAPER_SETS):
            continue
        if arm.startswith("k") and arm[1:].isdigit() and 1 <= int(arm[1:]) < num_layers:
            continue
        raise ConfigError(f"arm {arm!r}: use 'seq', 'k<N>' (1 <= N < {num_layers}) or "
                          f"'paper:<set>' with a set in {sorted(PAPER_SETS)}.")


def _train_stage(model, tok, ds, out: Path, name: str, seed: int, args: dict, lm: bool, log) -> None:
    """Train `model` in place on `ds` (QA rows, or LM text when `lm`), plain Trainer."""
    shape_len = model.config.max_position_embeddings
    tokenized = (tokenize_bios(ds, tok, shape_len) if lm else tokenize_qa(ds, tok, shape_len))
    tokenized = tokenized.select_columns(list(QA_COLUMNS))
    t0 = time.time()
    trainer = make_trainer(model, training_arguments(str(out / "trainer" / name), seed, args), tokenized,
                           PaddingCollator(tok.pad_token_id))
    trainer.train()
    log(f"[safety world] {name}: {len(tokenized)} rows, {trainer.state.global_step} steps, {time.time() - t0:.0f}s")


def build_aligned(out: Path, data, seed: int, model: dict, pretrain: dict, align: dict, log=print):
    """Pretrain on the world corpus, then align on align_train; both saved under `out` and reused.

    Usage: ``net, tok, info = build_aligned(Path("runs/w/seed3"), make_world_data(3), 3, WORLD_MODEL,
    WORLD_PRETRAIN, WORLD_ALIGN)``. Returns the aligned model, its tokenizer and per-stage timings.
    """
    info = {}
    tok = build_word_tokenizer(data)
    stages = (("pretrained", "pretrain", pretrain, True), ("aligned", "align_train", align, False))
    net = None
    for folder, split, args, lm in stages:
        target = out / folder
        fp = fingerprint(model, args, data[split].to_dict(), seed, f"world/{folder}/v1", info.get("prev_fp"))
        info["prev_fp"] = fp
        marker = target / "stage.json"
        if marker.is_file() and json.loads(marker.read_text()).get("fingerprint") == fp:
            log(f"[safety world] {folder}: reusing {target}")
            net = AutoModelForCausalLM.from_pretrained(str(target))
            tok = AutoTokenizer.from_pretrained(str(target))
            info[folder] = json.loads(marker.read_text())["seconds"]
            continue
        t0, c0 = time.time(), time.process_time()
        if net is None:
            net = build_model(ModelConfig(family="llama", **model), tok, seed)
        _train_stage(net, tok, data[split], out, folder, seed, args, lm, log)
        info[folder] = time.time() - t0
        info[f"{folder}_cpu"] = time.process_time() - c0  # on a shared machine CPU time is the steadier cost
        _io.write_dir(net.save_pretrained, target)
        tok.save_pretrained(str(target))
        _io.write_json(marker, {"fingerprint": fp, "seconds": info[folder], "cpu_seconds": info[f"{folder}_cpu"]})
    info.pop("prev_fp")
    return net, tok, info


class _ShiftWatch(TrainerCallback):
    """After every step: identity EM on the identity rows; snapshots at the paper budget, at the match, at the end."""

    def __init__(self, evalset: EvalSet, match_em: float):
        self.evalset, self.match_em = evalset, match_em
        self.history: list[float] = []
        self.snapshots: dict[str, tuple[int, dict]] = {}

    def _snap(self, label: str, step: int, model) -> None:
        self.snapshots[label] = (step, {k: v.detach().clone() for k, v in model.state_dict().items()})

    def on_step_end(self, args, state, control, model=None, **kwargs):
        r = evaluate(model, self.evalset)
        self.history.append(r["exact_match"])
        step = state.global_step
        if step == PAPER_BUDGET_STEP:
            self._snap("paper_budget", step, model)
        # Counts, not the float mean: 14 of 20 is 0.69999999 in float32 and would miss 0.7.
        if reaches(r["correct"], r["n"], self.match_em) and "matched" not in self.snapshots:
            self._snap("matched", step, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._snap("end", state.global_step, model)


def _arm_trainer(arm: str, model, args, ds, collator):
    """The arm's trainer: FastFreezeTrainer index-exact for k<N>, substring freeze + plain trainer for paper:<set>."""
    if arm.startswith("paper:"):
        apply_substring_freeze(model, PAPER_SETS[arm[6:]])
        return make_trainer(model, args, ds, collator)
    k = 0 if arm == "seq" else int(arm[1:])
    return make_trainer(model, args, ds, collator, num_frozen_layers=k)


def _frozen_blocks(arm: str, model) -> list[int]:
    if arm == "seq":
        return []
    if arm.startswith("paper:"):
        return frozen_block_indices([n for n, _ in model.named_parameters()], PAPER_SETS[arm[6:]])
    return list(range(int(arm[1:])))


def _moved(start: dict, end: dict) -> dict:
    """Which decoder blocks (and whether the embedding) differ between two state dicts: the freeze, as it ran."""
    blocks = {block_index(n) for n, tensor in end.items() if not torch.equal(tensor, start[n])} - {None}
    emb = [n for n in end if "embed_tokens" in n]
    return {"blocks": sorted(blocks), "embedding": any(not torch.equal(end[n], start[n]) for n in emb)}


def run_arm(arm: str, aligned_dir: Path, data, tok, out: Path, seed: int, shift: dict, match_em: float) -> dict:
    """Identity-shift fine-tune of the aligned model under `arm`; evaluations at budget, match and end.

    Usage: ``run_arm("k3", Path("runs/w/seed3/aligned"), data, tok, Path("runs/w/seed3"), 3, WORLD_SHIFT, 0.7)``.
    """
    model = AutoModelForCausalLM.from_pretrained(str(aligned_dir))
    frozen = _frozen_blocks(arm, model)
    ds = tokenize_qa(data["identity_train"], tok, model.config.max_position_embeddings)
    watch = _ShiftWatch(EvalSet(ds, tok.pad_token_id), match_em)
    args = training_arguments(str(out / "trainer" / arm.replace(":", "-")), seed, shift)
    trainer = _arm_trainer(arm, model, args, ds.select_columns(list(QA_COLUMNS)), PaddingCollator(tok.pad_token_id))
    trainer.add_callback(watch)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    t0 = time.time()
    trainer.train()
    seconds = time.time() - t0
    fresh = AutoModelForCausalLM.from_pretrained(str(aligned_dir))
    moved = _moved(fresh.state_dict(), watch.snapshots["end"][1])
    evals = {}
    for label, (step, state) in watch.snapshots.items():
        fresh.load_state_dict(state, strict=True)
        evals[label] = {"step": step, **evaluate_world(fresh, tok, data)}
    return {"arm": arm, "frozen_blocks": frozen, "moved": moved, "trainable_params": n_train, "identity_em": watch.history,
            "evals": evals, "seconds": seconds}


def run_world_seed(output_dir, seed: int, arms=WORLD_ARMS, *, model: dict | None = None,
                   pretrain: dict | None = None, align: dict | None = None, shift: dict | None = None,
                   data_sizes: dict | None = None, match_em: float = MATCH_EM, log=print) -> dict:
    """One seed of the scenario; writes and returns ``<output_dir>/seed<seed>/results.json``.

    Usage: ``run_world_seed("runs/safety-world", seed=3)``; the keyword args replace WORLD_MODEL,
    WORLD_PRETRAIN, WORLD_ALIGN, WORLD_SHIFT and WORLD_DATA (tests pass tiny ones).
    """
    model = model or WORLD_MODEL
    _check_arms(arms, model["num_hidden_layers"])
    shift = {**WORLD_SHIFT, **(shift or {})}
    out = Path(output_dir) / f"seed{seed}"
    t0, c0 = time.time(), time.process_time()
    data = make_world_data(seed=seed, **(data_sizes if data_sizes is not None else WORLD_DATA))
    net, tok, timings = build_aligned(out, data, seed, model, pretrain or WORLD_PRETRAIN, align or WORLD_ALIGN, log)
    results = {"seed": seed, "match_em": match_em, "shift": shift, "model": model,
               "aligned": evaluate_world(net, tok, data), "arms": {}, "timings": timings}
    for arm in arms:
        results["arms"][arm] = run_arm(arm, out / "aligned", data, tok, out, seed, shift, match_em)
        r = results["arms"][arm]
        log(f"[safety world] seed {seed} {arm}: {r['seconds']:.0f}s, matched at "
            f"{r['evals'].get('matched', {}).get('step')}, final identity EM {r['identity_em'][-1]:.2f}")
    results["seconds"] = time.time() - t0
    results["cpu_seconds"] = time.process_time() - c0  # this call only: reused stages cost nothing here
    _io.write_json(out / "results.json", results, indent=1)
    return results


def run_world(output_dir, seeds=(0, 1, 2), arms=WORLD_ARMS, log=print, **kwargs) -> dict:
    """Several seeds (each reusing its pretrained/aligned models); returns {seed: results}.

    Usage: ``run_world("runs/safety-world", seeds=(0, 1, 2))``.
    """
    return {s: run_world_seed(output_dir, s, arms, log=log, **kwargs) for s in seeds}


__all__ = ["MATCH_EM", "WORLD_ARMS", "build_aligned", "run_arm", "run_world", "run_world_seed"]
