"""Accuracy thresholds on integer counts: `correct >= ceil(fraction x n)`, never a float mean against a float.

A float mean can miss its own threshold: 14 of 20 right is 0.69999999 in float32, below 0.7. So every
accuracy threshold of the lab counts rows: the fraction is read as written (its shortest decimal, 0.7 ->
7/10) and the rows needed are rounded up, exactly, with `fractions.Fraction`.

Usage: `reaches(14, 20, 0.7)` is True; `rows_needed(0.7, 20) == 14`; `rows_within(120, 0.02, 150) == 117`.
"""
from __future__ import annotations

import math
from fractions import Fraction


def _exact(fraction: float) -> Fraction:
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"an accuracy threshold is a fraction in [0, 1], got {fraction!r}")
    return Fraction(repr(float(fraction)))


def rows_needed(fraction: float, n: int) -> int:
    """The fewest right rows of `n` that reach `fraction`: ceil(fraction x n). `rows_needed(0.7, 20) == 14`."""
    return math.ceil(_exact(fraction) * n)


def reaches(correct: int, n: int, fraction: float) -> bool:
    """Whether `correct` right rows of `n` reach `fraction`. `reaches(14, 20, 0.7)` is True."""
    return int(correct) >= rows_needed(fraction, n)


def rows_within(reference_correct: int, margin: float, n: int) -> int:
    """The rows that reach a reference's accuracy minus `margin` on the same `n` rows: ceil(ref - margin x n).

    `rows_within(120, 0.02, 150) == 117` (80% minus 2 points is 78% = 117 of 150).
    """
    return max(0, int(reference_correct) - math.floor(_exact(margin) * n))


__all__ = ["reaches", "rows_needed", "rows_within"]
