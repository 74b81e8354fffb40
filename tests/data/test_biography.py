"""Tests for the synthetic Biography generator: determinism, formats, splits, errors."""

from __future__ import annotations

import re

import datasets
import pytest

from fastfreeze.data import (
    ATTRIBUTES,
    BiographyConfig,
    company_city,
    dataset_config,
    generate_people,
    make_biography,
)
from fastfreeze.data import biography_pools as pools

MONTHS = "|".join(pools.MONTHS)
CITY_RE = re.compile(r"^[A-Z][A-Za-z\- ]*[a-z], [A-Z]{2}$")
DATE_RE = re.compile(rf"^({MONTHS}) ([1-9]|1[0-9]|2[0-8]), (19[0-9]{{2}}|20[0-9]{{2}})$")
QA_SPLITS = ("task0_train", "task0_test", "task1_train", "task1_test", "task2_train", "task2_test")


def _col(ds: datasets.Dataset, name: str) -> list:
    """A column as a plain list (newer datasets return a lazy Column object)."""
    return list(ds[name])


@pytest.fixture(scope="module")
def config() -> BiographyConfig:
    # quick preset with 2 later tasks, so "each later task" checks see more than one.
    return BiographyConfig.preset("quick", num_tasks=2)


@pytest.fixture(scope="module")
def dd(config) -> datasets.DatasetDict:
    return make_biography(config)


def _as_dicts(dd: datasets.DatasetDict) -> dict[str, dict]:
    return {k: v.to_dict() for k, v in dd.items()}


def test_split_names_and_columns(dd, config):
    assert set(dd) == {"bios", "people", *QA_SPLITS}
    assert dd["bios"].column_names == ["text", "person_id"]
    for split in QA_SPLITS:
        assert dd[split].column_names == ["prompt", "answer", "attribute", "person_id", "task"]
    assert len(dd["bios"]) == (config.num_people_task0_train + config.num_people_task0_test) * config.bios_per_person
    assert len(dd["task0_train"]) == 6 * config.num_people_task0_train
    assert len(dd["task0_test"]) == 6 * config.num_people_task0_test
    assert len(dd["task2_train"]) == 6 * config.people_per_task
    assert len(dd["people"]) == config.num_people


def test_deterministic_for_a_seed_and_different_across_seeds(dd, config):
    again = make_biography(config)
    assert _as_dicts(again) == _as_dicts(dd)
    other = make_biography(BiographyConfig.preset("quick", num_tasks=2, seed=config.seed + 1))
    assert _col(other["people"], "name") != _col(dd["people"], "name")
    assert _col(other["bios"], "text") != _col(dd["bios"], "text")
    assert _col(other["task0_train"], "answer") != _col(dd["task0_train"], "answer")


def test_earlier_people_do_not_depend_on_later_group_sizes(config):
    # The runner can add tasks or grow a later task without changing Task 0's people.
    small = generate_people(config)
    bigger = generate_people(BiographyConfig.preset("quick", num_tasks=4, people_per_task=60))
    n = config.num_people_task0_train + config.num_people_task0_test
    assert [(p.name, dict(p.attributes)) for p in small[:n]] == [(p.name, dict(p.attributes)) for p in bigger[:n]]


def test_attribute_formats(dd):
    people = dd["people"]
    assert all(DATE_RE.match(d) for d in people["birth_date"]), "birth dates must look like 'May 28, 1952'"
    for col in ("birth_city", "company_city"):
        bad = [c for c in people[col] if not CITY_RE.match(c)]
        assert not bad, f"{col} not 'City, ST': {bad[:3]}"
    assert set(people["university"]) <= set(pools.UNIVERSITIES)
    assert set(people["major"]) <= set(pools.MAJORS)
    assert set(people["company"]) <= set(pools.COMPANIES)


def test_names_unique_and_three_words_from_the_pools(dd):
    names = _col(dd["people"], "name")
    assert len(set(names)) == len(names)
    for name in names:
        first, middle, last = name.split(" ")
        assert first in pools.FIRST_NAMES and middle in pools.MIDDLE_NAMES and last in pools.LAST_NAMES


def test_company_city_is_a_function_of_company(dd):
    hq: dict[str, str] = {}
    for company, city in zip(_col(dd["people"], "company"), _col(dd["people"], "company_city")):
        assert hq.setdefault(company, city) == city
        assert city == company_city(company)
    # And it is fixed across seeds, not redrawn.
    other = make_biography(BiographyConfig.preset("quick", seed=7))["people"]
    for company, city in zip(other["company"], other["company_city"]):
        assert city == company_city(company)
    with pytest.raises(ValueError, match="unknown company"):
        company_city("Not A Company")


def test_qa_format_and_every_attribute_asked_once_per_person(dd):
    people = {r["person_id"]: r for r in dd["people"]}
    for split in QA_SPLITS:
        asked: dict[int, list[str]] = {}
        for row in dd[split]:
            person = people[row["person_id"]]
            assert row["prompt"].endswith("?\nAnswer:")
            assert person["name"] in row["prompt"]
            assert row["answer"] == " " + person[row["attribute"]], "answer = leading space + attribute value"
            assert row["answer"] == row["answer"].rstrip()
            asked.setdefault(row["person_id"], []).append(row["attribute"])
        assert all(sorted(a) == sorted(ATTRIBUTES) for a in asked.values()), split
    birth = dd["task0_train"].filter(lambda r: r["attribute"] == "birth_date")[0]
    assert birth["prompt"] == f"What is the birth date of {people[birth['person_id']]['name']}?\nAnswer:"


def test_every_answer_appears_in_each_of_that_persons_bios(dd):
    bios: dict[int, list[str]] = {}
    for row in dd["bios"]:
        bios.setdefault(row["person_id"], []).append(row["text"])
    for split in ("task0_train", "task0_test"):
        for row in dd[split]:
            texts = bios[row["person_id"]]
            assert len(texts) == 5
            assert all(row["answer"].strip() in t for t in texts), (row, texts[0])


def test_full_name_in_every_bio_sentence_and_orders_vary(dd):
    names = dict(zip(_col(dd["people"], "person_id"), _col(dd["people"], "name")))
    orders = set()
    for row in dd["bios"]:
        sentences = row["text"].split(". ")
        assert len(sentences) == 6
        assert sentences[-1].endswith(".")
        for s in sentences:
            assert s.startswith(names[row["person_id"]] + " ")
        orders.add(tuple(s.split(" ")[3] for s in sentences))
    assert len(orders) > 10, "sentence order should be permuted per biography"


def test_bios_of_a_person_use_distinct_templates(dd, config):
    # With bios_per_person <= num_templates, each attribute is worded differently in each bio.
    by_person: dict[int, list[str]] = {}
    for row in dd["bios"]:
        by_person.setdefault(row["person_id"], []).append(row["text"])
    for texts in list(by_person.values())[:20]:
        sentence_sets = [set(t.split(". ")) for t in texts]
        for i in range(len(texts)):
            for j in range(i + 1, len(texts)):
                assert not (sentence_sets[i] & sentence_sets[j])


def test_person_splits_disjoint_and_bios_cover_a_and_b_only(dd, config):
    ids = {s: set(_col(dd[s], "person_id")) for s in QA_SPLITS}
    groups = [ids["task0_train"], ids["task0_test"], ids["task1_train"], ids["task2_train"]]
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            assert not groups[i] & groups[j]
    assert set(_col(dd["bios"], "person_id")) == ids["task0_train"] | ids["task0_test"]
    for i in (1, 2):
        assert dd[f"task{i}_test"].to_dict() == dd[f"task{i}_train"].to_dict()
        assert set(_col(dd[f"task{i}_train"], "task")) == {i}
    assert set(_col(dd["task0_test"], "task")) == {0}


def test_include_later_people_in_bios():
    dd = make_biography(BiographyConfig.preset("quick", include_later_people_in_bios=True))
    assert set(_col(dd["bios"], "person_id")) == set(_col(dd["people"], "person_id"))
    assert all(_col(dd["people"], "in_bios"))


def test_save_and_load_round_trip(dd, config, tmp_path):
    dd.save_to_disk(str(tmp_path / "bio"))
    loaded = datasets.load_from_disk(str(tmp_path / "bio"))
    assert _as_dicts(loaded) == _as_dicts(dd)
    assert dataset_config(loaded) == config


def test_presets():
    quick, tiny, paper = (BiographyConfig.preset(n) for n in ("quick", "tiny", "paper"))
    def sizes(c):
        return (c.num_people_task0_train, c.num_people_task0_test, c.num_tasks, c.people_per_task)

    assert sizes(quick) == (40, 40, 1, 40)
    # tiny = the CPU feasibility study in paper.md: 200 A, 200 B, 1 task of 200, 5 bios, 5 templates.
    assert sizes(tiny) == (200, 200, 1, 200)
    assert (tiny.bios_per_person, tiny.num_templates) == (5, 5)
    # paper = the paper's code: 50K + 50K people for Task 0, then 5 tasks of 20K (200K people).
    assert sizes(paper) == (50_000, 50_000, 5, 20_000)
    assert paper.num_people == 200_000
    assert BiographyConfig.preset("quick", seed=3).seed == 3


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(num_people_task0_train=0), ValueError, "num_people_task0_train must be >= 1"),
        (dict(num_people_task0_test=-3), ValueError, "num_people_task0_test must be >= 1"),
        (dict(num_tasks=-1), ValueError, "num_tasks must be >= 0"),
        (dict(people_per_task=0), ValueError, "people_per_task must be >= 1"),
        (dict(bios_per_person=0), ValueError, "bios_per_person must be >= 1"),
        (dict(num_templates=99), ValueError, "num_templates <= "),
        (dict(num_people_task0_train=10**9), ValueError, "name pools allow at most"),
        (dict(seed=1.5), TypeError, "seed must be an int"),
        (dict(num_tasks=True), TypeError, "num_tasks must be an int"),
        (dict(include_later_people_in_bios="yes"), TypeError, "must be a bool"),
    ],
)
def test_bad_configs_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        BiographyConfig(**kwargs)


def test_bad_preset_and_unknown_fields():
    with pytest.raises(ValueError, match=r"preset 'huge'; choose one of \['paper', 'quick', 'tiny'\]"):
        BiographyConfig.preset("huge")
    with pytest.raises(ValueError, match=r"unknown BiographyConfig field\(s\) \['num_people'\]"):
        BiographyConfig.from_dict({"num_people": 10})
    with pytest.raises(TypeError, match="expects a BiographyConfig"):
        make_biography({"seed": 0})
    # Task 0 only is valid: no later task needs people then.
    dd = make_biography(BiographyConfig.preset("quick", num_tasks=0, people_per_task=0))
    assert set(dd) == {"bios", "people", "task0_train", "task0_test"}
