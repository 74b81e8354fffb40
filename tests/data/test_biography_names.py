"""Shared name-word pools (BiographyConfig.name_pools): every later person's name words are pretrained, the people are not."""
from __future__ import annotations

import pytest

from fastfreeze.data.biography import BiographyConfig, dataset_config, generate_people, make_biography

# 20 pretrained people cannot use all 30 last names: later people drawn from the whole pools would miss some.
POOLED = dict(num_people_task0_train=10, num_people_task0_test=10, num_tasks=3, people_per_task=30,
              bios_per_person=2, name_pools=[10, 10, 30])


def test_every_name_word_of_every_later_person_occurs_in_the_pretraining_text():
    cfg = BiographyConfig.preset("quick", **POOLED)
    dd = make_biography(cfg)
    bios_words = {w.strip(".,") for text in dd["bios"]["text"] for w in text.split()}
    pretrained_ids = set(dd["bios"]["person_id"])
    later = [p for p in dd["people"] if p["task"] >= 1]
    assert len(later) == 3 * 30
    for p in later:
        assert p["person_id"] not in pretrained_ids  # the paper's rule: later tasks' people are not pretrained
        assert not p["in_bios"]
        missing = [w for w in p["name"].split() if w not in bios_words]
        assert not missing, (p["name"], missing)
    names = list(dd["people"]["name"])
    assert len(set(names)) == len(names)  # full names stay unique
    # Shared: 110 people over at most 10 first names, so each first name is used by many people.
    assert len({n.split()[0] for n in names}) <= 10


def test_default_pools_keep_the_old_config_and_names():
    cfg = BiographyConfig.preset("tiny")
    assert "name_pools" not in cfg.to_dict()  # the stored description of every existing preset is unchanged
    words = [w for p in generate_people(cfg) for w in p.name.split()]
    assert len(set(words)) > 600  # nearly unique words per person without pools (600 people, 1800 words)


def test_name_pools_round_trip_and_refusals():
    cfg = BiographyConfig.preset("quick", **POOLED)
    assert cfg.name_pools == (10, 10, 30)
    assert dataset_config(make_biography(cfg)) == cfg  # through the JSON description (a list) and back
    with pytest.raises(ValueError, match="too few"):
        BiographyConfig.preset("quick", name_pools=[2, 2, 2])
    with pytest.raises(ValueError, match="the pool has"):
        BiographyConfig.preset("quick", name_pools=[100000, 2, 2])
    with pytest.raises(TypeError, match=r"\[first, middle, last\]"):
        BiographyConfig.preset("quick", name_pools=[5, 5])


def test_later_people_fail_clearly_when_pretrained_words_run_out():
    # 2 pretrained people use at most 2 x 2 x 2 word combinations; 20 later people cannot all be new names.
    cfg = BiographyConfig(num_people_task0_train=1, num_people_task0_test=1, num_tasks=1, people_per_task=20,
                          name_pools=[10, 10, 10])
    with pytest.raises(ValueError, match="no unused name is left"):
        generate_people(cfg)
