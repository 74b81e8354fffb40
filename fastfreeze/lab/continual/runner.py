"""The continual-learning runner: pretrain, then tasks 0..T-1 per strategy arm, evaluating after each; resumable.

Stages (each checkpointed with save_pretrained, recorded atomically in `state.json`):
  pretrain -> baseline eval -> trunk/task0 [-> trunk/task1 ...] -> {arm}/task{t} -> {arm}/recovery
  [-> {arm}/recovery_curve, {arm}/recovery_few: from checkpoints saved during recovery.curve_task]
Arms share every leading task that they train exactly like SEQ (the "trunk"), so SEQ and
Freeze(k, from_task=1) pretrain and learn Task 0 once and branch at Task 1. Each stage starts
from the previous stage's checkpoint on disk, so a resumed run equals an uninterrupted one.

CLI: `fastfreeze continual CONFIG.yaml [--output-dir DIR]` (fastfreeze.lab.continual.cli).
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch
import yaml
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM

from fastfreeze import _io
from fastfreeze.lab.continual import build, shipped
from fastfreeze.lab.continual.config import ConfigError, ContinualConfig, StrategyConfig, fingerprint, strategy_dict
from fastfreeze.lab.continual.diagnostics import WindowSnapshots
from fastfreeze.lab.continual.early_stop import budget_callback, early_stopper, final_correct
from fastfreeze.lab.continual.paper_sets import apply_substring_freeze, freeze_record
from fastfreeze.lab.continual.evaluate import DenseEvalCallback, EvalSet, evaluate, generate_exact_match
from fastfreeze.lab.continual.metrics import accuracy_matrices, all_metrics, matched_retention
from fastfreeze.lab.continual.recovery import SaveAtSteps, arm_recovery, curve_on_for, curve_spec, curve_steps_of, recovery_subset
from fastfreeze.lab.continual.report import write_outputs
from fastfreeze.lab.continual.safety_eval import SafetyEvaluator
from fastfreeze.lab.continual.trainers import EWCPenalty, diagonal_fisher, make_trainer, training_arguments

STATE_FILE = "state.json"
FISHER_FILE = "ewc_fisher.pt"


class StopRun(Exception):
    """Raised after the stage named by `stop_after` (used to simulate an interrupted run)."""


class Runner:
    """Runs one config. Usage: `results = Runner(ContinualConfig.from_yaml(path)).run()`."""

    def __init__(self, cfg: ContinualConfig, log=print):
        cfg.validate()
        self.cfg = cfg
        self.log = log
        self.out = Path(cfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        state_path = self.out / STATE_FILE
        self.state = json.loads(state_path.read_text()) if state_path.exists() else {"stages": {}}
        self.stop_after: str | None = None
        self.ran: list[str] = []  # stages executed (not skipped) in this call
        self._safety_eval = None  # SafetyEvaluator, built on first use (loads the prompt files once)
        # Standard recoveries (half of the old task's people) by source checkpoint: the curve's end point is the
        # arm's own recovery, the few-example table's last row is a curve point, and step 0 is the same Task-0
        # checkpoint for every arm; each is deterministic, so it is trained once and its record reused.
        self._recovered: dict[str, dict] = {}
        # Convergence budget: task -> (the reference arm's final validation exact match, its steps), set as it runs.
        self.budget_targets: dict[int, tuple[int, int]] = {}  # task -> (reference's right rows, its steps)

    # ---------------------------------------------------------------- plumbing
    def _ckpt(self, key: str) -> Path:
        return self.out / "checkpoints" / key

    def _stage(self, key: str, fp: str, fn, checkpoint: bool = True) -> dict:
        """Run `fn() -> record` unless a finished stage with the same fingerprint is on disk."""
        done = self.state["stages"].get(key)
        if done and done["fingerprint"] == fp and (not checkpoint or (self._ckpt(key) / "config.json").exists()):
            self.log(f"[continual] {key}: done already, skipped")
            return done["record"]
        self.log(f"[continual] {key}: running")
        t0 = time.time()
        record = fn()
        record["seconds"] = round(time.time() - t0, 2)
        self.state["stages"][key] = {"fingerprint": fp, "record": record}
        _io.write_json(self.out / STATE_FILE, self.state, indent=2, default=str)
        self.ran.append(key)
        self.log(f"[continual] {key}: finished in {record['seconds']:.1f}s")
        if self.stop_after == key:
            raise StopRun(key)
        return record

    def _load(self, key: str):
        model = AutoModelForCausalLM.from_pretrained(str(self._ckpt(key)))
        return model.to(self.device)

    def _save(self, model, key: str) -> None:
        _io.write_dir(model.save_pretrained, self._ckpt(key))

    def _args(self, key: str, kwargs: dict):
        return training_arguments(str(self.out / "trainer" / key), self.cfg.seed, kwargs)

    def _safety(self, key: str, fp: str) -> dict | None:
        """Refusal-proxy rates of checkpoint `key` (its own stage, so changing only `safety:` reruns only this)."""
        if not self.cfg.safety.enabled:
            return None
        if self._safety_eval is None:
            self._safety_eval = SafetyEvaluator(self.cfg.safety)
        records = self.out / "safety" / (key.replace("/", "__") + ".json")
        return self._stage(
            f"{key}/safety", fingerprint(fp, self.cfg.safety),
            lambda: self._safety_eval.run(self._load(key), self.data.tokenizer, records), checkpoint=False,
        )

    def _eval_tasks(self, model, upto: int) -> dict:
        bs = self.cfg.evaluation.batch_size
        return {str(j): evaluate(model, self.evalsets[j], bs) for j in range(min(upto, self.cfg.num_tasks - 1) + 1)}

    # ---------------------------------------------------------------- run
    def run(self, stop_after: str | None = None) -> dict:
        """Run every unfinished stage, then write results.json, report.md and plots. Returns the results."""
        self.stop_after = stop_after
        cfg = self.cfg
        pre_fp = self.pretrain()[0]
        base_fp = fingerprint(pre_fp, cfg.num_tasks)
        baseline = self._stage("baseline", base_fp, lambda: {"evals": self._eval_tasks(self._load("pretrain"), cfg.num_tasks)},
                               checkpoint=False)
        before = self._safety("pretrain", pre_fp)

        arms = {}
        for strat in cfg.strategies:
            arms[strat.arm] = self._run_arm(strat, pre_fp)
            if before is not None:
                arms[strat.arm]["safety"] = [before] + arms[strat.arm]["safety"]
        results = self._results(baseline, arms)
        write_outputs(results, self.out)
        return results

    def pretrain(self) -> tuple[str, dict]:
        """Prepare the data and run (or reuse) the pretrain stage: (its fingerprint, its record)."""
        pre_fp = self.prepare()
        return pre_fp, self._stage("pretrain", pre_fp, lambda: self._pretrain(pre_fp))

    def prepare(self) -> str:
        """Build the data, tokenizer and evaluation sets; returns the pretrain stage's fingerprint."""
        cfg = self.cfg
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        _io.write_text(self.out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        self.data = build.prepare(cfg)
        tok = self.data.tokenizer
        self.evalsets = [EvalSet(ds, tok.pad_token_id) for ds in self.data.test]
        fp0 = fingerprint(cfg.data, cfg.seed, cfg.model, len(tok), *build.source_stats(cfg))
        return fingerprint(fp0, cfg.pretrain)

    def pretrain_recipe(self, fp: str, fresh_model=None) -> dict:
        """What the pretrained weights follow from (fastfreeze.lab.continual.shipped.recipe_of); after `prepare()`."""
        if fresh_model is None:
            fresh_model = build.build_model(self.cfg.model, self.data.tokenizer, self.cfg.seed)
        return shipped.recipe_of(fp, fresh_model, self.data.trainable(self.data.bios))

    def _pretrain(self, fp: str) -> dict:
        cfg = self.cfg
        model = build.build_model(cfg.model, self.data.tokenizer, cfg.seed).to(self.device)
        self._check_layers(model)
        record: dict = {"parameters": sum(p.numel() for p in model.parameters())}
        if cfg.pretrain.enabled and cfg.model.path is None:
            record["recipe"] = self.pretrain_recipe(fp, model)
            folder = shipped.find_shipped(record["recipe"]) if cfg.pretrain.shipped else None
            if folder is not None:
                self.log(f"[continual] pretrain: the shipped checkpoint {folder.name!r} has this run's recipe; copied")
                record.update(shipped.shipped_record(folder))
                _io.write_dir(lambda d: shipped.copy_weights(folder, d), self._ckpt("pretrain"))
                return record
            if cfg.pretrain.shipped:
                self.log("[continual] pretrain: no shipped checkpoint has this run's recipe; pretraining")
        if cfg.pretrain.enabled:
            trainer = make_trainer(
                model, self._args("pretrain", cfg.pretrain.training), self.data.trainable(self.data.bios),
                self.data.collator,
            )
            out = trainer.train()
            record.update(train_loss=out.training_loss, steps=out.global_step)
        self._save(model, "pretrain")
        return record

    def _check_layers(self, model) -> None:
        n = build.num_layers_of(model)
        try:
            self.cfg.validate(num_layers=n)
        except ConfigError as e:
            raise ConfigError(f"{e} (model has {n} layers)") from None

    def _run_arm(self, strat: StrategyConfig, pre_fp: str) -> dict:
        cfg = self.cfg
        prev_key, prev_fp = "pretrain", pre_fp
        rows, stage_keys, dense, orth, safety, fp_of = [], [], None, None, [], {}
        shared = True
        for t in range(cfg.num_tasks):
            shared = shared and not strat.differs_from_seq_at(t)
            key = f"trunk/task{t}" if shared else f"{strat.arm}/task{t}"
            orth_on = self._orth_on(strat, t, shared)
            curve_on = curve_on_for(cfg, strat, t, shared)
            fp = fingerprint(
                prev_fp, cfg.training, cfg.evaluation, t,
                None if shared else _behaviour(strat, t),
                [cfg.orthogonality.boundary_step, cfg.orthogonality.energy] if orth_on else None,
                *([curve_spec(cfg.recovery)] if curve_on else []),
                *([self._budget_part(strat, t, shared)] if cfg.budget is not None else []),
            )
            rec = self._stage(key, fp, lambda: self._train_task(strat, t, prev_key, key, shared, orth_on, curve_on))
            rows.append(rec["evals"])
            stage_keys.append(key)
            if cfg.budget is not None and shared and t >= 1 and strat.arm == cfg.budget_config.reference:
                self.budget_targets[t] = (final_correct(rec["budget"]), rec["budget"]["steps"])
            fp_of[t] = fp
            safety.append(self._safety(key, fp))
            dense = rec.get("dense") or dense
            orth = rec.get("orthogonality") or orth
            prev_key, prev_fp = key, fp
        recovery = None
        rc = cfg.recovery
        if rc.enabled and (rc.arms is None or strat.arm in rc.arms):
            rfp = fingerprint(prev_fp, rc)
            recovery = self._stage(f"{strat.arm}/recovery", rfp, lambda: self._recover(prev_key, f"{strat.arm}/recovery"))
        curve, few = arm_recovery(self, strat, stage_keys, fp_of)
        return {"strategy": strat, "rows": rows, "stages": stage_keys, "dense": dense, "orthogonality": orth,
                "recovery": recovery, "recovery_curve": curve, "recovery_few": few, "safety": safety}

    def _budget_part(self, strat: StrategyConfig, t: int, shared: bool):
        """The budget's fingerprint part of a stage: its role and, when budgeted, the reference's target."""
        if t < 1 or (shared and strat.arm != self.cfg.budget_config.reference):
            return None
        return [self.cfg.budget, "reference" if shared else self.budget_targets[t]]

    def _orth_on(self, strat: StrategyConfig, t: int, shared: bool) -> bool:
        o = self.cfg.orthogonality
        if not o.enabled or t != o.task:
            return False
        if shared:  # a trunk stage serves every SEQ-like arm; measure it if any of them asked
            return o.arms is None or any(
                s.arm in o.arms and not s.differs_from_seq_at(t) for s in self.cfg.strategies
            )
        return o.arms is None or strat.arm in o.arms

    def _task_callbacks(self, strat, t, key, freeze, shared, orth_on, curve_on) -> tuple[dict, dict]:
        """The stage's callbacks by role (None where off) and the TrainingArguments the budget changes."""
        cfg, ev = self.cfg, self.cfg.evaluation
        cbs = {"dense": None, "snaps": None, "saver": None}
        if t == ev.dense_task and t >= 1:
            dense_set = EvalSet(self.data.test[0], self.data.tokenizer.pad_token_id, ev.dense_max_examples, cfg.seed)
            cbs["dense"] = DenseEvalCallback(dense_set, ev.dense_every, ev.dense_until, ev.batch_size)
        if orth_on:
            cbs["snaps"] = WindowSnapshots(cfg.orthogonality.boundary_step)
        if curve_on:
            cbs["saver"] = SaveAtSteps(lambda total: curve_steps_of(cfg.recovery, total),
                                       lambda step: self._ckpt(f"{key}-step{step}"))
        cbs["stopper"] = early_stopper(self, strat, t, freeze)
        cbs["budget"], budget_kwargs = budget_callback(self, strat, t, shared)
        return cbs, budget_kwargs

    def _train_task(self, strat, t, prev_key, key, shared, orth_on, curve_on=False) -> dict:
        cfg, ev = self.cfg, self.cfg.evaluation
        model = self._load(prev_key)
        freeze = strat.name == "freeze" and not shared and t >= strat.from_task
        paper_frozen = None
        if strat.name == "paper_freeze" and not shared and t >= strat.from_task:
            # The official code's rule, plain requires_grad=False; the Trainer below is then a plain Trainer.
            paper_frozen = apply_substring_freeze(model, strat.patterns)
        ewc = fisher_cum = None
        if strat.name == "ewc" and not shared and t >= 1:
            fisher_cum = self._ewc_fisher(model, strat, t, prev_key)
            anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
            ewc = EWCPenalty(model, fisher_cum, anchor, strat.ewc_lambda)
        cbs, budget_kwargs = self._task_callbacks(strat, t, key, freeze, shared, orth_on, curve_on)
        train_ds = self.data.train_set(t, strat.replay_fraction if strat.name == "replay" else 0.0, cfg.seed)
        trainer = make_trainer(
            model, self._args(key, {**cfg.training, **budget_kwargs}), train_ds, self.data.collator,
            callbacks=[cb for cb in cbs.values() if cb is not None], num_frozen_layers=strat.num_frozen_layers if freeze else 0,
            freeze=freeze, freeze_embeddings=strat.freeze_embeddings, cache=strat.cache, ewc=ewc,
        )
        out = trainer.train()
        record = {"task": t, "train_loss": out.training_loss, "steps": out.global_step,
                  "frozen_layers": strat.num_frozen_layers if freeze else 0, "evals": self._eval_tasks(model, t + 1)}
        if cbs["dense"]:
            record["dense"] = {"task": 0, "every": ev.dense_every, "history": cbs["dense"].history}
        if cbs["snaps"]:
            record["orthogonality"] = cbs["snaps"].result(cfg.orthogonality.energy)
        if cbs["saver"]:
            record["curve_checkpoints"] = {"total": out.global_step, "saved": cbs["saver"].saved}
        for name, role in (("early_stop", "stopper"), ("budget", "budget")):
            if cbs[role]:
                record[name] = cbs[role].record()
        if paper_frozen is not None:
            record["paper_freeze"] = freeze_record(paper_frozen, strat.patterns)
        if ev.generate_check_examples > 0:
            record["generate_check"] = self._generate_check(model, t)
        self._save(model, key)
        if fisher_cum is not None:
            torch.save(fisher_cum, self._ckpt(key) / FISHER_FILE)
        return record

    def _ewc_fisher(self, model, strat, t, prev_key) -> dict:
        """Cumulative diagonal Fisher: the previous stage's (if any) + task t-1's at the current weights."""
        prev = self._ckpt(prev_key) / FISHER_FILE
        cum = torch.load(prev) if prev.exists() else {}
        loader = DataLoader(
            self.data.trainable(self.data.train[t - 1]),
            batch_size=self.cfg.training.get("per_device_train_batch_size", 8),
            collate_fn=self.data.collator,
        )
        new = diagonal_fisher(model, loader, strat.ewc_fisher_batches)
        return {n: new[n] + cum.get(n, 0) for n in new}

    def _generate_check(self, model, t: int) -> dict:
        tok = self.data.tokenizer
        es = EvalSet(self.data.test[t], tok.pad_token_id, self.cfg.evaluation.generate_check_examples, self.cfg.seed)
        gen = generate_exact_match(model, es, tok.eos_token_id, tok.pad_token_id).float().mean().item()
        tf = evaluate(model, es)
        em_rows = tf["n"]
        return {"examples": em_rows, "generate_exact_match": gen, "teacher_forced_exact_match": tf["exact_match"]}

    def _recover(self, from_key: str, key: str, subset=None, extra: dict | None = None, save: bool = True) -> dict:
        """Fine-tune briefly on `fraction` of an old task's TRAIN people (or `subset`); score its TEST people.

        `from_key` is a checkpoint key (a folder under checkpoints/) or a path to a save_pretrained folder.
        """
        cfg, rc = self.cfg, self.cfg.recovery
        path = Path(from_key) if Path(from_key).is_absolute() else self._ckpt(from_key)
        memo = str(path.resolve()) if subset is None and extra is None else None
        if memo in self._recovered and not save:
            return {**self._recovered[memo], "from": from_key}
        model = AutoModelForCausalLM.from_pretrained(str(path)).to(self.device)
        before = evaluate(model, self.evalsets[rc.task], cfg.evaluation.batch_size)
        if subset is None:
            subset = recovery_subset(self.data.train[rc.task], rc.fraction, cfg.seed)
        kwargs = {**cfg.training, **rc.training, **(extra or {})}
        trainer = make_trainer(model, self._args(key, kwargs), self.data.trainable(subset), self.data.collator)
        out = trainer.train()
        after = self._eval_tasks(model, cfg.num_tasks - 1)
        if save:
            self._save(model, key)
        record = {"task": rc.task, "from": from_key, "train_examples": len(subset), "steps": out.global_step,
                  "before": before, "after": after}
        if memo is not None:
            self._recovered[memo] = record
        return record

    # ---------------------------------------------------------------- results
    def _results(self, baseline: dict, arms: dict) -> dict:
        cfg = self.cfg
        T = cfg.num_tasks
        b = [baseline["evals"][str(j)]["exact_match"] for j in range(T)]
        out_arms = {}
        for name, a in arms.items():
            R, RF = accuracy_matrices(a["rows"], T)
            per_stage = lambda field, a=a: [self.state["stages"][k]["record"].get(field) for k in a["stages"]]  # noqa: E731
            out_arms[name] = {
                "strategy": strategy_dict(a["strategy"]),
                "stages": a["stages"],
                "accuracy_matrix": R,
                "first_token_matrix": RF,
                "per_attribute_final": a["rows"][-1],
                "metrics": all_metrics(R, b),
                "dense": a["dense"],
                "orthogonality": a["orthogonality"],
                "recovery": a["recovery"],
                "recovery_curve": a["recovery_curve"],
                "recovery_few": a["recovery_few"],
                "early_stop": per_stage("early_stop"),
            }
            if cfg.budget is not None:
                out_arms[name]["budget"] = per_stage("budget")
                out_arms[name]["paper_freeze"] = per_stage("paper_freeze")
            if cfg.safety.enabled:  # [before Task 0, after Task 0, ...]
                out_arms[name]["safety"] = a["safety"]
        stages = self.state["stages"]
        extra = {}
        if cfg.budget is not None:
            extra["matched_retention"] = matched_retention(out_arms, cfg.budget_config.reference)
        return {**extra,
            "config": cfg.to_dict(),
            "num_tasks": T,
            "baseline": b,
            "pretrain": stages.get("pretrain", {}).get("record"),
            "arms": out_arms,
            "timings_s": {k: v["record"].get("seconds") for k, v in stages.items()},
            "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, "
            f"device={self.device}, torch {torch.__version__}".replace("  ", " "),
        }


def _behaviour(strat: StrategyConfig, t: int) -> dict:
    """What decides how an arm trains task t (its fingerprint part)."""
    d = strategy_dict(strat)
    d["active"] = strat.differs_from_seq_at(t)
    return d


def run_continual(cfg: ContinualConfig, stop_after: str | None = None, log=print) -> dict:
    """Run (or resume) `cfg`. Usage: `results = run_continual(ContinualConfig.from_yaml("run.yaml"))`."""
    return Runner(cfg, log=log).run(stop_after=stop_after)
