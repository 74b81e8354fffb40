"""Synthetic Biography benchmark (Zheng et al., ICLR 2025): people, biographies and QA tasks as a DatasetDict.

Task layout, as in the paper's code:
- Task 0: pretrain on the biographies of people A and B (split ``bios``), QA fine-tune on A
  (``task0_train``), test QA on B (``task0_test``): the model must *extract* knowledge that it only
  read in biographies.
- Tasks 1..n: QA on new people each. These people have no biographies (unless
  ``include_later_people_in_bios``): the task is learned from the QA pairs themselves, so
  ``task{i}_test`` holds the same questions as ``task{i}_train`` (it measures memorisation and,
  later, forgetting of that task).

Usage::

    from fastfreeze.data.biography import BiographyConfig, make_biography
    dd = make_biography(BiographyConfig.preset("tiny"))
    dd["task0_train"][0]  # {'prompt': 'What is the birth date of ...?\\nAnswer:', 'answer': ' May 28, 1952', ...}
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from typing import Any, Mapping

import datasets
import pyarrow as pa

from fastfreeze._hf_compat import dataset_from_arrow
from fastfreeze.data.biography_names import NAME_CAPACITY, shared_names, unique_names
from fastfreeze.data.biography_pools import (
    ATTRIBUTES,
    BIO_TEMPLATES,
    CITIES,
    COMPANIES,
    DAYS,
    FIRST_NAMES,
    LAST_NAMES,
    MAJORS,
    MAX_TEMPLATES,
    MIDDLE_NAMES,
    MONTHS,
    QUESTION_TEMPLATES,
    UNIVERSITIES,
    YEARS,
    company_city,
)

__all__ = [
    "ATTRIBUTES",
    "BiographyConfig",
    "Person",
    "PRESETS",
    "dataset_config",
    "generate_people",
    "make_biography",
    "question",
]

# Presets. "paper" follows the paper's code: 200K people = Task 0 (50K QA-train people A + 50K
# held-out people B, all 100K with biographies) + 5 tasks of 20K new people each.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": dict(num_people_task0_train=40, num_people_task0_test=40, num_tasks=1,
                  people_per_task=40, bios_per_person=5, num_templates=5),
    "tiny": dict(num_people_task0_train=200, num_people_task0_test=200, num_tasks=1,
                 people_per_task=200, bios_per_person=5, num_templates=5),
    "paper": dict(num_people_task0_train=50_000, num_people_task0_test=50_000, num_tasks=5,
                  people_per_task=20_000, bios_per_person=5, num_templates=MAX_TEMPLATES),
}


def _check_int(name: str, value: Any, minimum: int) -> None:
    # bool is an int subclass; True people is a bug, not a count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"BiographyConfig.{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"BiographyConfig.{name} must be >= {minimum}, got {value}")


@dataclass(frozen=True)
class BiographyConfig:
    """Size and seed of a Biography benchmark; validated on construction.

    Usage: ``BiographyConfig.preset("tiny")`` or ``BiographyConfig(num_people_task0_train=100, ...)``.
    The defaults equal the ``tiny`` preset.
    """

    seed: int = 0
    num_people_task0_train: int = 200  # people A: biographies + Task-0 QA training
    num_people_task0_test: int = 200  # people B: biographies + Task-0 QA test only
    num_tasks: int = 1  # later tasks 1..num_tasks, after Task 0
    people_per_task: int = 200  # new people in each later task
    bios_per_person: int = 5
    num_templates: int = 5  # paraphrase templates used per attribute (<= MAX_TEMPLATES)
    include_later_people_in_bios: bool = False
    # (first, middle, last): draw names from the first n words of each pool, so name words repeat across
    # people; later tasks' people then use only words that pretrained people's names use (see
    # generate_people). None (the default, and every shipped preset): the full pools, names as before.
    name_pools: tuple | None = None

    def __post_init__(self) -> None:
        _check_int("seed", self.seed, -(2**63))
        _check_int("num_people_task0_train", self.num_people_task0_train, 1)
        _check_int("num_people_task0_test", self.num_people_task0_test, 1)
        _check_int("num_tasks", self.num_tasks, 0)
        _check_int("people_per_task", self.people_per_task, 1 if self.num_tasks > 0 else 0)
        _check_int("bios_per_person", self.bios_per_person, 1)
        _check_int("num_templates", self.num_templates, 1)
        if self.num_templates > MAX_TEMPLATES:
            raise ValueError(
                f"BiographyConfig.num_templates={self.num_templates} but only {MAX_TEMPLATES} "
                f"templates per attribute exist; pass num_templates <= {MAX_TEMPLATES}"
            )
        if not isinstance(self.include_later_people_in_bios, bool):
            raise TypeError("BiographyConfig.include_later_people_in_bios must be a bool (True/False)")
        if self.name_pools is not None:
            self._check_name_pools()
        if self.name_pools is None and self.num_people > NAME_CAPACITY:
            raise ValueError(
                f"BiographyConfig asks for {self.num_people:,} people but the name pools allow at "
                f"most {NAME_CAPACITY:,} unique full names ({len(FIRST_NAMES)} first x "
                f"{len(MIDDLE_NAMES)} middle x {len(LAST_NAMES)} last); reduce "
                "num_people_task0_train / num_people_task0_test / people_per_task or num_tasks"
            )

    def _check_name_pools(self) -> None:
        pools = self.name_pools
        if not isinstance(pools, (list, tuple)) or len(pools) != 3:
            raise TypeError(f"BiographyConfig.name_pools must be [first, middle, last] sizes, got {pools!r}")
        for label, n, full in zip(("first", "middle", "last"), pools, (FIRST_NAMES, MIDDLE_NAMES, LAST_NAMES)):
            _check_int(f"name_pools {label}", n, 1)
            if n > len(full):
                raise ValueError(f"BiographyConfig.name_pools: {n} {label} names asked, the pool has {len(full)}")
        object.__setattr__(self, "name_pools", tuple(pools))  # a YAML/JSON list compares equal after a round trip
        capacity = pools[0] * pools[1] * pools[2]
        if self.num_people > capacity // 2:  # rejection sampling: keep at least half of the names free
            raise ValueError(f"BiographyConfig.name_pools {list(pools)} give {capacity:,} full names, too few for "
                             f"{self.num_people:,} people (need at least twice as many); enlarge the pools")

    @property
    def num_people(self) -> int:
        """All people: A + B + every later task's people."""
        return self.num_people_task0_train + self.num_people_task0_test + self.num_tasks * self.people_per_task

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "BiographyConfig":
        """A named preset ("quick", "tiny", "paper"), optionally with fields overridden.

        Usage: ``BiographyConfig.preset("quick", seed=3)``.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown Biography preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "BiographyConfig":
        """Build from a mapping (e.g. a YAML section), rejecting unknown keys by name.

        Usage: ``BiographyConfig.from_dict({"seed": 1, "num_tasks": 2})``.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown BiographyConfig field(s) {unknown}; valid fields: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (JSON/YAML friendly); `name_pools` only when set (older configs stay as they were)."""
        d = dataclasses.asdict(self)
        if d["name_pools"] is None:
            del d["name_pools"]
        else:
            d["name_pools"] = list(d["name_pools"])
        return d


@dataclass(frozen=True)
class Person:
    """One synthetic person: id, full name, which QA split asks about them, and six attributes."""

    person_id: int
    name: str
    split: str  # "task0_train" (A), "task0_test" (B) or "task{i}_train" (later task i)
    task: int
    in_bios: bool
    attributes: Mapping[str, str]


class _Stream:
    """Seeded draws built only on ``random.Random.random()``.

    Python guarantees that method's sequence for a given seed across versions (unlike
    ``randrange``/``shuffle``), so a dataset is reproducible on any interpreter.
    """

    def __init__(self, seed: int, purpose: str) -> None:
        # A str seed is hashed with SHA-512 (seed version 2), so streams for different purposes
        # are independent.
        self._rng = random.Random(f"fastfreeze.biography/{purpose}/{seed}")

    def below(self, n: int) -> int:
        """Uniform int in [0, n); the float-scaling bias is < n / 2**53, negligible here."""
        return min(int(self._rng.random() * n), n - 1)

    def pick(self, seq: tuple[str, ...]) -> str:
        return seq[self.below(len(seq))]

    def permutation(self, n: int) -> list[int]:
        """Fisher-Yates shuffle of range(n)."""
        out = list(range(n))
        for i in range(n - 1, 0, -1):
            j = self.below(i + 1)
            out[i], out[j] = out[j], out[i]
        return out


def _groups(config: BiographyConfig) -> list[tuple[str, int, int, bool]]:
    """(split, task, count, in_bios) per group of people, in person_id order."""
    groups = [
        ("task0_train", 0, config.num_people_task0_train, True),
        ("task0_test", 0, config.num_people_task0_test, True),
    ]
    for i in range(1, config.num_tasks + 1):
        groups.append((f"task{i}_train", i, config.people_per_task, config.include_later_people_in_bios))
    return groups


def generate_people(config: BiographyConfig) -> list[Person]:
    """All people of a config, person_id 0.. in order A, B, task 1, task 2, ...

    Names and attributes come from separate sequential streams, so a person depends only on the
    seed and their person_id: growing a later group (or adding tasks) never changes earlier people.

    Usage: ``people = generate_people(BiographyConfig.preset("quick"))``.
    """
    name_rng = _Stream(config.seed, "names")
    attr_rng = _Stream(config.seed, "attributes")
    names = (shared_names(config, _groups(config), name_rng) if config.name_pools is not None
             else unique_names(config.num_people, name_rng))
    people: list[Person] = []
    for split, task, count, in_bios in _groups(config):
        for _ in range(count):
            name = names[len(people)]
            month, day = MONTHS[attr_rng.below(len(MONTHS))], DAYS[attr_rng.below(len(DAYS))]
            date = f"{month} {day}, {YEARS[attr_rng.below(len(YEARS))]}"
            company = attr_rng.pick(COMPANIES)
            attributes = {
                "birth_date": date,
                "birth_city": attr_rng.pick(CITIES),
                "university": attr_rng.pick(UNIVERSITIES),
                "major": attr_rng.pick(MAJORS),
                "company": company,
                "company_city": company_city(company),
            }
            people.append(Person(len(people), name, split, task, in_bios, attributes))
    return people


def question(attribute: str, name: str) -> str:
    """The fixed QA prompt for an attribute, e.g. "What is the birth date of X?\\nAnswer:".

    Usage: ``question("birth_date", "Ada Quinn Ashford")``.
    """
    if attribute not in QUESTION_TEMPLATES:
        raise ValueError(f"unknown attribute {attribute!r}; choose one of {list(ATTRIBUTES)}")
    return QUESTION_TEMPLATES[attribute].format(name=name)


def _biographies(person: Person, config: BiographyConfig, rng: _Stream) -> list[str]:
    """``bios_per_person`` biographies: a template per attribute and a shuffled sentence order each.

    A person's bios use distinct templates per attribute while there are enough of them
    (bio j takes the j-th entry of a per-attribute permutation of the templates).
    """
    template_order = {a: rng.permutation(config.num_templates) for a in ATTRIBUTES}
    bios = []
    for j in range(config.bios_per_person):
        sentences = [
            BIO_TEMPLATES[a][template_order[a][j % config.num_templates]].format(
                name=person.name, value=person.attributes[a]
            )
            for a in ATTRIBUTES
        ]
        bios.append(" ".join(sentences[k] for k in rng.permutation(len(ATTRIBUTES))))
    return bios


_QA_FEATURES = datasets.Features(
    {
        "prompt": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "attribute": datasets.Value("string"),
        "person_id": datasets.Value("int64"),
        "task": datasets.Value("int64"),
    }
)
_BIO_FEATURES = datasets.Features({"text": datasets.Value("string"), "person_id": datasets.Value("int64")})
_PEOPLE_FEATURES = datasets.Features(
    {
        "person_id": datasets.Value("int64"),
        "name": datasets.Value("string"),
        "split": datasets.Value("string"),
        "task": datasets.Value("int64"),
        "in_bios": datasets.Value("bool"),
        **{a: datasets.Value("string") for a in ATTRIBUTES},
    }
)
_DESCRIPTION_PREFIX = "fastfreeze Biography benchmark; config="


def _qa_columns(people: list[Person]) -> dict[str, list]:
    cols: dict[str, list] = {k: [] for k in _QA_FEATURES}
    for p in people:
        for a in ATTRIBUTES:
            cols["prompt"].append(question(a, p.name))
            cols["answer"].append(" " + p.attributes[a])  # leading space: a continuation of "Answer:"
            cols["attribute"].append(a)
            cols["person_id"].append(p.person_id)
            cols["task"].append(p.task)
    return cols


def make_biography(config: BiographyConfig) -> datasets.DatasetDict:
    """Generate the benchmark as a DatasetDict; the same config always gives identical data.

    Splits:
    - ``bios`` (text, person_id): ``bios_per_person`` biographies per person of A and B (and of later
      people if ``include_later_people_in_bios``), grouped by person; shuffle when training.
    - ``task0_train`` / ``task0_test`` (prompt, answer, attribute, person_id, task): six questions per
      person of A / of B.
    - ``task{i}_train`` / ``task{i}_test`` for i in 1..num_tasks: six questions per new person of task
      i; test holds the same questions as train (later tasks are learned from QA directly).
    - ``people``: one row per person (person_id, name, split, task, in_bios, six attributes), for
      selecting subsets (e.g. part of A for the recovery test) and for checks.

    The config is stored in each split's ``info.description``; read it back with ``dataset_config``.

    Usage: ``dd = make_biography(BiographyConfig.preset("quick")); dd.save_to_disk(path)``.
    """
    if not isinstance(config, BiographyConfig):
        raise TypeError(
            f"make_biography expects a BiographyConfig, got {type(config).__name__}; "
            "use BiographyConfig.preset(name) or BiographyConfig.from_dict(...)"
        )
    people = generate_people(config)
    bio_rng = _Stream(config.seed, "bios")
    bios: dict[str, list] = {"text": [], "person_id": []}
    for p in people:
        if p.in_bios:
            texts = _biographies(p, config, bio_rng)
            bios["text"].extend(texts)
            bios["person_id"].extend([p.person_id] * len(texts))

    description = _DESCRIPTION_PREFIX + json.dumps(config.to_dict(), sort_keys=True)

    def build(columns: dict[str, list], features: datasets.Features) -> datasets.Dataset:
        # Straight to Arrow with the declared schema: Dataset.from_dict would re-encode every
        # value in Python, which doubles the time of the paper preset.
        table = pa.Table.from_pydict(columns, schema=features.arrow_schema)
        info = datasets.DatasetInfo(description=description, features=features)
        return dataset_from_arrow(table, info)

    splits: dict[str, datasets.Dataset] = {
        "bios": build(bios, _BIO_FEATURES)
    }
    for split, _, _, _ in _groups(config):
        group = [p for p in people if p.split == split]
        ds = build(_qa_columns(group), _QA_FEATURES)
        splits[split] = ds
        if split != "task0_train" and split.endswith("_train"):
            splits[split.replace("_train", "_test")] = ds  # same questions: see module docstring
    people_cols: dict[str, list] = {k: [] for k in _PEOPLE_FEATURES}
    for p in people:
        for k in ("person_id", "name", "split", "task", "in_bios"):
            people_cols[k].append(getattr(p, k))
        for a in ATTRIBUTES:
            people_cols[a].append(p.attributes[a])
    splits["people"] = build(people_cols, _PEOPLE_FEATURES)
    return datasets.DatasetDict(splits)


def dataset_config(dataset_dict: datasets.DatasetDict) -> BiographyConfig | None:
    """The BiographyConfig a DatasetDict was made from (also after save/load), or None if unknown.

    Usage: ``assert dataset_config(load_from_disk(path)) == config``.
    """
    for ds in dataset_dict.values():
        desc = ds.info.description or ""
        if desc.startswith(_DESCRIPTION_PREFIX):
            return BiographyConfig.from_dict(json.loads(desc[len(_DESCRIPTION_PREFIX):]))
    return None
