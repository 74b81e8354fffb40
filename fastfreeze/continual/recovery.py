"""Recovery test: is a forgotten task's accuracy spurious? Fine-tune briefly on part of its TRAIN people, score its TEST people.

The test people (Task 0's B) are never trained on in QA form; if a short fine-tune on *other*
people (half of A) brings their accuracy back, the knowledge was still in the model and only
the task alignment was broken (the paper's "spurious forgetting").

The runner performs the test as a stage of a run (`recovery:` in the config); on a finished run,
`fastfreeze recover RUN_DIR` (fastfreeze.cli.recover).
"""
from __future__ import annotations

import torch


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
