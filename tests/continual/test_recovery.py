"""fastfreeze.continual.recovery: the recovery subset takes whole people, deterministically."""
from __future__ import annotations

import pytest
from datasets import Dataset

from fastfreeze.continual.recovery import recovery_subset


def test_recovery_subset_takes_whole_people():
    ds = Dataset.from_dict({"person_id": [p for p in range(10) for _ in range(6)], "x": list(range(60))})
    sub = recovery_subset(ds, 0.5, seed=0)
    people = set(sub["person_id"])
    assert len(people) == 5 and len(sub) == 30
    assert recovery_subset(ds, 0.5, seed=0)["x"] == sub["x"]  # deterministic


@pytest.mark.parametrize("fraction", [0.0, 1.5])
def test_fraction_out_of_range_is_refused(fraction):
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        recovery_subset(Dataset.from_dict({"person_id": [1, 2]}), fraction, seed=0)
