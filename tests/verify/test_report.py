"""fastfreeze.verify.report: tolerances follow the dtype and the step count; the loss rule."""
from __future__ import annotations

import math

import pytest

from fastfreeze.verify import Tolerances, VerifyError
from fastfreeze.verify.report import loss_ok


def test_tolerances_follow_dtype_and_steps():
    assert Tolerances.for_dtype("fp32", 8).loss_rtol == 1e-5  # floor: the parity suite's fp32 tolerance
    bf16 = Tolerances.for_dtype("bf16", 8)
    assert bf16.loss_rtol == pytest.approx(4 * 2 ** -8 * math.sqrt(8))
    assert Tolerances.for_dtype("fp16", 8).loss_rtol < bf16.loss_rtol < Tolerances.for_dtype("bf16", 32).loss_rtol
    with pytest.raises(VerifyError, match="choose one of"):
        Tolerances.for_dtype("int8", 8)


def test_loss_rule_is_relative_and_needs_finite_losses():
    assert loss_ok(2.0, 2.0 + 1e-6, 1e-5) and not loss_ok(2.0, 2.001, 1e-5)
    assert not loss_ok(float("nan"), float("nan"), 1.0) and not loss_ok(1.0, math.inf, 1.0)

