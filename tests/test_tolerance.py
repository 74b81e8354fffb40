"""fastfreeze.tolerance: the install-time checks' one rule (relative to the reference's peak, bounded by the dtype)."""
from __future__ import annotations

import pytest
import torch

from fastfreeze.tolerance import rel_diff, tolerance


def test_tolerance_follows_the_dtype():
    assert tolerance(torch.float32) == tolerance(torch.float64) == 1e-5
    assert tolerance(torch.bfloat16) == tolerance(torch.float16) == 2e-2


def test_rel_diff_is_relative_to_the_reference_peak():
    ref = torch.tensor([[4.0, -8.0], [1.0, 2.0]])
    assert rel_diff(ref.clone(), ref) == 0.0
    got = ref.clone()
    got[1, 0] += 2 ** -8  # exact in float32; over max|ref| = 8, not over |ref[1, 0]| = 1
    assert rel_diff(got, ref) == 2 ** -11
    assert rel_diff(torch.zeros(0), torch.zeros(0)) == 0.0
    assert rel_diff(torch.tensor([1e-13]), torch.tensor([0.0])) == pytest.approx(1e-13 / 1e-12)  # an all-zero reference


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_value_on_either_side_is_never_within_tolerance(bad):
    """NaN would compare as "not above" any bound; inf on both sides would subtract to NaN."""
    ref = torch.tensor([1.0, 2.0])
    broken = torch.tensor([1.0, bad])
    assert rel_diff(broken, ref) == float("inf")
    assert rel_diff(ref, broken) == float("inf")
    assert rel_diff(broken, broken.clone()) == float("inf")
