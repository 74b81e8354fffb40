"""Recovery test: is a forgotten task's accuracy spurious? Fine-tune briefly on part of its TRAIN people, score its TEST people.

The test people (Task 0's B) are never trained on in QA form; if a short fine-tune on *other*
people (half of A) brings their accuracy back, the knowledge was still in the model and only
the task alignment was broken (the paper's "spurious forgetting").

The runner performs the test as a stage of a run (`recovery:` in the config); on a finished run,
`fastfreeze recover RUN_DIR` (fastfreeze.lab.continual.cli_recover).
"""
from __future__ import annotations

import torch
from transformers import TrainerCallback

from fastfreeze import _io
from fastfreeze.lab.continual.config import fingerprint


def recovery_subset(dataset, fraction: float, seed: int):
    """Rows of a deterministic random `fraction` of the people in `dataset` (all questions of each chosen person).

    Usage: `recovery_subset(task0_train, 0.5, seed=0)`. Selecting by person, not by row, keeps
    each chosen person's six questions together, as in the paper.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction={fraction} must be in (0, 1].")
    people = sorted(set(dataset["person_id"]))
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(people), generator=g).tolist()
    n = max(1, round(fraction * len(people)))
    chosen = {people[i] for i in order[:n]}
    return dataset.filter(lambda pid: pid in chosen, input_columns="person_id")


def example_subset(dataset, n: int, seed: int):
    """`n` QA rows, each from a different person (deterministic). Usage: `example_subset(task0_train, 10, 0)`.

    One question per person, so ten examples are ten people (and mixed attributes), as in the paper's
    few-example recovery; refuses n larger than the number of people.
    """
    people = sorted(set(dataset["person_id"]))
    if not 1 <= n <= len(people):
        raise ValueError(f"few-example recovery: n={n} must be in 1..{len(people)} (one row per person).")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(people), generator=g).tolist()
    chosen = [people[i] for i in order[:n]]
    rows_of: dict = {}
    for i, pid in enumerate(dataset["person_id"]):
        rows_of.setdefault(pid, []).append(i)
    picks = torch.randint(0, 1 << 30, (n,), generator=g).tolist()
    return dataset.select([rows_of[p][r % len(rows_of[p])] for p, r in zip(chosen, picks)])


def curve_points(steps: list, scale: float, total: int) -> list[int]:
    """Sorted distinct checkpoint steps: each int times `scale` (rounded), "end" = `total`; clipped to `total`.

    Usage: `curve_points([0, 10, 150, "end"], 0.5, 120)` -> [0, 5, 75, 120].
    """
    out = {total if s == "end" else min(total, round(s * scale)) for s in steps}
    return sorted(out)


def curve_on_for(cfg, strat, t: int, shared: bool) -> bool:
    """Whether task t's stage (a trunk stage if `shared`) saves the recovery curve's intermediate checkpoints."""
    rc = cfg.recovery
    if not rc.enabled or t != rc.curve_task or (rc.curve_steps is None and rc.few_examples is None):
        return False
    if shared:
        return rc.arms is None or any(s.arm in rc.arms and not s.differs_from_seq_at(t) for s in cfg.strategies)
    return rc.arms is None or strat.arm in rc.arms


def curve_spec(rc) -> list:
    """The part of a recovery config that decides which checkpoints a task stage saves (its fingerprint part)."""
    return [rc.curve_steps or [], rc.step_scale, rc.few_from_step if rc.few_examples else None]


def curve_steps_of(rc, total: int) -> list[int]:
    """The curve's checkpoint steps for a task of `total` optimizer steps (+ the few-example one)."""
    steps = list(rc.curve_steps or [])
    if rc.few_examples:
        steps.append(rc.few_from_step)
    return curve_points(steps, rc.step_scale, total)


class SaveAtSteps(TrainerCallback):
    """Saves the model (save_pretrained, atomically) into `dir_of(step)` after each step of `steps_of(max_steps)`.

    Step 0 and the last step are not saved here: they are the previous and this stage's own checkpoints.
    """

    def __init__(self, steps_of, dir_of):
        self.steps_of, self.dir_of = steps_of, dir_of
        self.steps: set[int] = set()
        self.saved: list[int] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.steps = {s for s in self.steps_of(state.max_steps) if 0 < s < state.max_steps}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps:
            _io.write_dir(model.save_pretrained, self.dir_of(state.global_step))
            self.saved.append(state.global_step)


def checkpoint_of(stage_keys: list[str], task: int, step: int, total: int) -> str:
    """The checkpoint key of `step` of `task`: the previous stage at 0, the task's own at its end."""
    if step == 0:
        return stage_keys[task - 1]
    if step >= total:
        return stage_keys[task]
    return f"{stage_keys[task]}-step{step}"


def _point(r: dict, task: int, curve_task: int) -> dict:
    after = r["after"][str(task)]
    return {"before": r["before"]["exact_match"], "before_first_token": r["before"]["first_token"],
            "after": after["exact_match"], "after_first_token": after["first_token"],
            "curve_task_after": r["after"][str(curve_task)]["exact_match"],
            "train_examples": r["train_examples"], "steps": r["steps"]}


def run_curve(runner, stage_keys: list[str], t: int) -> dict:
    """Recovery from each curve checkpoint of task `t` (the runner's stage `{arm}/recovery_curve`)."""
    rc = runner.cfg.recovery
    total = runner.state["stages"][stage_keys[t]]["record"]["curve_checkpoints"]["total"]
    points = []
    for step in curve_points(rc.curve_steps, rc.step_scale, total):
        src = checkpoint_of(stage_keys, t, step, total)
        r = runner._recover(src, f"{stage_keys[t]}-recovery", save=False)
        points.append({"step": step, "from": src, **_point(r, rc.task, t)})
    return {"task": rc.task, "curve_task": t, "total_steps": total, "requested_steps": rc.curve_steps,
            "step_scale": rc.step_scale, "points": points}


def run_few_examples(runner, stage_keys: list[str], t: int) -> dict:
    """Recovery from the `few_from_step` checkpoint with N examples (N people), then with `fraction` of the people."""
    rc, cfg = runner.cfg.recovery, runner.cfg
    total = runner.state["stages"][stage_keys[t]]["record"]["curve_checkpoints"]["total"]
    step = curve_points([rc.few_from_step], rc.step_scale, total)[0]
    src = checkpoint_of(stage_keys, t, step, total)
    batch = {**cfg.training, **rc.training}.get("per_device_train_batch_size", 8)
    rows = []
    for n in rc.few_examples:
        subset = example_subset(runner.data.train[rc.task], n, cfg.seed)
        extra = {"max_steps": rc.few_max_steps, "per_device_train_batch_size": min(batch, n)}
        r = runner._recover(src, f"{stage_keys[t]}-recovery", subset=subset, extra=extra, save=False)
        rows.append({"examples": n, "people": n, **_point(r, rc.task, t)})
    r = runner._recover(src, f"{stage_keys[t]}-recovery", save=False)
    rows.append({"examples": r["train_examples"], "people": f"{rc.fraction:g} of the training people",
                 **_point(r, rc.task, t)})
    return {"task": rc.task, "curve_task": t, "step": step, "from": src, "rows": rows}


def arm_recovery(runner, strat, stage_keys: list[str], fp_of: dict):
    """(recovery curve, few-example recovery) records of one arm, each its own resumable stage (or None)."""
    rc = runner.cfg.recovery
    t = rc.curve_task
    if not (t < len(stage_keys) and curve_on_for(runner.cfg, strat, t, stage_keys[t].startswith("trunk/"))):
        return None, None
    curve = few = None
    if rc.curve_steps:
        curve = runner._stage(f"{strat.arm}/recovery_curve", fingerprint(fp_of[t], rc),
                              lambda: run_curve(runner, stage_keys, t), checkpoint=False)
    if rc.few_examples:
        few = runner._stage(f"{strat.arm}/recovery_few", fingerprint(fp_of[t], rc),
                            lambda: run_few_examples(runner, stage_keys, t), checkpoint=False)
    return curve, few
