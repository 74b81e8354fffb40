"""Continual-learning metrics from an accuracy matrix (Lopez-Paz & Ranzato 2017; Chaudhry et al. 2018).

Notation: T tasks 0..T-1; R[i][j] = accuracy on task j after training task i (None where not
measured); b[j] = accuracy on task j of the model before Task 0 (after pretraining).

- Average accuracy  ACC = 1/T * sum_j R[T-1][j]
- Backward transfer BWT = 1/(T-1) * sum_{j<T-1} (R[T-1][j] - R[j][j])        (negative = forgetting)
- Forward transfer  FWT = 1/(T-1) * sum_{j>=1} (R[j-1][j] - b[j])            (task j before it is trained)
- Forgetting        F   = 1/(T-1) * sum_{j<T-1} max_{j<=l<=T-2} R[l][j] - R[T-1][j]
BWT, FWT and F need T >= 2 and are None otherwise.
"""
from __future__ import annotations

Matrix = list[list[float | None]]


def _need(value, what: str):
    if value is None:
        raise ValueError(f"accuracy matrix is missing {what}; evaluate every seen task after each task.")
    return value


def average_accuracy(R: Matrix) -> float:
    """ACC after the last task. Usage: `average_accuracy([[0.9, None], [0.2, 0.95]])` -> 0.575."""
    T = len(R)
    return sum(_need(R[T - 1][j], f"R[{T - 1}][{j}]") for j in range(T)) / T


def backward_transfer(R: Matrix) -> float | None:
    """BWT: mean change on old tasks between just after learning them and the end."""
    T = len(R)
    if T < 2:
        return None
    return sum(_need(R[T - 1][j], f"R[{T - 1}][{j}]") - _need(R[j][j], f"R[{j}][{j}]") for j in range(T - 1)) / (T - 1)


def forward_transfer(R: Matrix, baseline: list[float | None]) -> float | None:
    """FWT: mean accuracy on task j just before training it, minus the pre-Task-0 model's accuracy on it."""
    T = len(R)
    if T < 2:
        return None
    return sum(
        _need(R[j - 1][j], f"R[{j - 1}][{j}]") - _need(baseline[j], f"baseline[{j}]") for j in range(1, T)
    ) / (T - 1)


def forgetting(R: Matrix) -> float | None:
    """Average forgetting: best accuracy ever reached on an old task (after learning it) minus its final accuracy."""
    T = len(R)
    if T < 2:
        return None
    total = 0.0
    for j in range(T - 1):
        best = max(_need(R[l][j], f"R[{l}][{j}]") for l in range(j, T - 1))
        total += best - _need(R[T - 1][j], f"R[{T - 1}][{j}]")
    return total / (T - 1)


def accuracy_matrices(rows: list[dict], num_tasks: int) -> tuple[Matrix, Matrix]:
    """R[i][j] (exact match) and RF[i][j] (first token) on task j after training task i, from per-stage evals."""
    R = [[None] * num_tasks for _ in range(num_tasks)]
    RF = [[None] * num_tasks for _ in range(num_tasks)]
    for i, row in enumerate(rows):
        for j, r in row.items():
            R[i][int(j)] = r["exact_match"]
            RF[i][int(j)] = r["first_token"]
    return R, RF


def all_metrics(R: Matrix, baseline: list[float | None] | None = None) -> dict:
    """Every metric above in one dict (FWT only when a baseline is given)."""
    return {
        "average_accuracy": average_accuracy(R),
        "backward_transfer": backward_transfer(R),
        "forward_transfer": forward_transfer(R, baseline) if baseline is not None else None,
        "forgetting": forgetting(R),
    }


DEFINITIONS_MD = """\
- R[i][j]: exact match on task j after training task i; b[j]: on task j before Task 0 (after pretraining).
- Average accuracy ACC = (1/T) sum_j R[T-1][j].
- Backward transfer BWT = 1/(T-1) sum_{j<T-1} (R[T-1][j] - R[j][j]) (Lopez-Paz & Ranzato 2017; negative = forgetting).
- Forward transfer FWT = 1/(T-1) sum_{j>=1} (R[j-1][j] - b[j]) (Lopez-Paz & Ranzato 2017).
- Forgetting F = 1/(T-1) sum_{j<T-1} (max_{j<=l<=T-2} R[l][j] - R[T-1][j]) (Chaudhry et al. 2018).
"""


def _correct(check: dict, rows: int) -> int:
    """Right validation rows of one budget check; checks recorded before counts were kept have only the mean,
    which is right rows / rows up to float32 rounding (one attribute group per person)."""
    return check["correct"] if "correct" in check else round(check["exact_match"] * rows)


def _first_at(history: list[dict], rows: int, level_rows: int) -> dict | None:
    """The first check of a budget curve with at least `level_rows` of its `rows` right (counts, not floats)."""
    return next((h for h in history if _correct(h, rows) >= level_rows), None)


def matched_retention(arms: dict, reference: str) -> dict:
    """Task-0 accuracy of each arm vs the reference when a later task reaches a common validation level.

    For arm a and later task t, with curves of checks (step, validation exact match on task t's training
    people, Task-0 test exact match) from the budget callback: level = min(best of a, best of the
    reference) on task t; each side's Task-0 accuracy is read at its first check at or above that level.
    Returns {t: {arm: {level, step, task0, reference_step, reference_task0, ratio}}} (ratio = task0 /
    reference_task0). Usage: `matched_retention(results["arms"], "seq")["1"]["freeze2"]["ratio"]`.
    """
    ref = arms[reference]["budget"]
    out: dict = {}
    for t in range(1, len(ref)):
        if not ref[t] or "task0" not in ref[t]["history"][0]:
            continue
        row = {}
        for name, arm in arms.items():
            mine = (arm.get("budget") or [None] * len(ref))[t]
            if name == reference or not mine:
                continue
            n = ref[t]["validation_rows"]  # the same validation people for every arm (validation_split)
            level_rows = min(max(_correct(h, n) for h in mine["history"]), max(_correct(h, n) for h in ref[t]["history"]))
            a, r = _first_at(mine["history"], n, level_rows), _first_at(ref[t]["history"], n, level_rows)
            row[name] = {"level": level_rows / n, "level_rows": level_rows, "step": a["step"], "task0": a["task0"], "reference_step": r["step"],
                         "reference_task0": r["task0"], "ratio": a["task0"] / r["task0"] if r["task0"] else None}
        out[str(t)] = row
    return out


def _mean_spread(values: list) -> dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "min": None, "max": None, "n": 0}
    return {"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def seed_summary(runs: list[dict]) -> dict:
    """Per arm, over seeds: budget (epochs per later task), later-task accuracy, final Task-0, matched retention.

    `runs` are results dicts of the same config under different seeds. Usage: `seed_summary([r0, r1, r2])`.
    """
    out: dict = {}
    for name in runs[0]["arms"]:
        per: dict[str, list] = {k: [] for k in ("epochs", "later_acc", "final_task0", "matched1_task0",
                                                "matched1_ratio", "matchedL_task0", "matchedL_ratio")}
        for res in runs:
            arm = res["arms"][name]
            R, T = arm["accuracy_matrix"], res["num_tasks"]
            bud = arm.get("budget") or []
            eps = [b["epochs"] for b in bud[1:] if b]
            per["epochs"].append(sum(eps) / len(eps) if eps else None)
            per["later_acc"].append(sum(R[t][t] for t in range(1, T)) / (T - 1))
            per["final_task0"].append(R[-1][0])
            for tag, t in (("1", 1), ("L", T - 1)):
                m = (res.get("matched_retention") or {}).get(str(t), {}).get(name)
                per[f"matched{tag}_task0"].append((m or {}).get("task0"))
                per[f"matched{tag}_ratio"].append((m or {}).get("ratio"))
        out[name] = {k: _mean_spread(v) for k, v in per.items()}
    return out
