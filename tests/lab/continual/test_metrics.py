"""Continual-learning metric formulas on hand-made accuracy matrices."""
import pytest

from fastfreeze.lab.continual.metrics import all_metrics, average_accuracy, backward_transfer, forgetting, forward_transfer

# R[i][j]: accuracy on task j after training task i (entries above the first super-diagonal unmeasured).
R3 = [
    [0.9, 0.1, None],
    [0.5, 0.8, 0.2],
    [0.4, 0.6, 0.7],
]
B3 = [0.0, 0.05, 0.1]


def test_average_accuracy():
    assert average_accuracy(R3) == pytest.approx((0.4 + 0.6 + 0.7) / 3)


def test_backward_transfer():
    # ((0.4 - 0.9) + (0.6 - 0.8)) / 2
    assert backward_transfer(R3) == pytest.approx(-0.35)


def test_forward_transfer():
    # ((R[0][1] - b1) + (R[1][2] - b2)) / 2 = ((0.1 - 0.05) + (0.2 - 0.1)) / 2
    assert forward_transfer(R3, B3) == pytest.approx(0.075)


def test_forgetting_uses_best_earlier_accuracy():
    # task 0: max(0.9, 0.5) - 0.4 = 0.5; task 1: max(0.8) - 0.6 = 0.2
    assert forgetting(R3) == pytest.approx(0.35)
    # An old task that *improved* after it was learned: best-so-far is the later value.
    R = [[0.3, None, None], [0.6, 0.9, None], [0.5, 0.9, 0.8]]
    assert forgetting(R) == pytest.approx(((0.6 - 0.5) + (0.9 - 0.9)) / 2)
    assert backward_transfer(R) == pytest.approx(((0.5 - 0.3) + 0.0) / 2)


def test_single_task_has_no_transfer_metrics():
    m = all_metrics([[0.7]], [0.0])
    assert m == {"average_accuracy": pytest.approx(0.7), "backward_transfer": None,
                 "forward_transfer": None, "forgetting": None}


def test_missing_entry_is_a_clear_error():
    with pytest.raises(ValueError, match=r"R\[1\]\[0\]"):
        average_accuracy([[0.9, 0.0], [None, 0.8]])
