"""Accuracy thresholds on counts: exact at the boundary (14 of 20 reaches 0.7), where a float32 mean misses it."""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from fastfreeze.lab.continual.thresholds import reaches, rows_needed, rows_within


def _float32_mean(correct: int, n: int) -> float:
    """The mean as evaluate() used to compare it: a float32 mean of per-row bools, as a Python float."""
    return torch.tensor([1.0] * correct + [0.0] * (n - correct)).mean().item()


def test_fourteen_of_twenty_reaches_seventy_percent_where_the_float32_mean_does_not():
    assert rows_needed(0.7, 20) == 14
    assert reaches(14, 20, 0.7) and not reaches(13, 20, 0.7)
    assert _float32_mean(14, 20) < 0.7  # the bug: 0.69999999 < 0.7, so the float compare asked for 15 rows


@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.25, 0.3, 0.5, 0.7, 0.75, 0.9, 0.95, 1.0, 0.0])
def test_reaches_is_the_exact_rational_compare_for_every_count(fraction):
    for n in range(1, 161):
        for correct in range(n + 1):
            assert reaches(correct, n, fraction) == (Fraction(correct, n) >= Fraction(str(fraction))), (correct, n)


def test_the_budget_target_is_the_reference_rows_minus_the_margin_in_rows():
    assert rows_within(120, 0.02, 150) == 117  # 80% - 2 points = 78% = 117 of 150
    assert rows_within(92, 0.02, 96) == 91     # 1.92 rows of margin: one row, not two
    assert rows_within(1, 0.02, 150) == 0
    assert _float32_mean(117, 150) < 120 / 150 - 0.02  # the float compare would have asked for 118


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_a_fraction_outside_zero_one_is_refused(bad):
    with pytest.raises(ValueError, match="fraction in \\[0, 1\\]"):
        rows_needed(bad, 10)
