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
