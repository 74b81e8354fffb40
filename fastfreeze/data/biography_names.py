"""Full names for the Biography people: unique words per person (default) or shared name-word pools."""
from __future__ import annotations

from fastfreeze.data.biography_pools import FIRST_NAMES, LAST_NAMES, MIDDLE_NAMES

NAME_CAPACITY = len(FIRST_NAMES) * len(MIDDLE_NAMES) * len(LAST_NAMES)


def unique_names(count: int, name_rng) -> list[str]:
    """`count` unique full names from the full pools (name words nearly unique per person); `name_rng`: a _Stream.

    Usage (inside biography.generate_people): `unique_names(config.num_people, _Stream(seed, "names"))`.
    """
    n_mid, n_last = len(MIDDLE_NAMES), len(LAST_NAMES)
    used: set[int] = set()
    names = []
    for _ in range(count):
        # Rejection sampling of a unique (first, middle, last) index; even the paper preset
        # uses 0.1% of the name space, so rejections are rare.
        while True:
            code = name_rng.below(NAME_CAPACITY)
            if code not in used:
                used.add(code)
                break
        first, rest = divmod(code, n_mid * n_last)
        middle, last = divmod(rest, n_last)
        names.append(f"{FIRST_NAMES[first]} {MIDDLE_NAMES[middle]} {LAST_NAMES[last]}")
    return names


def shared_names(config, groups, name_rng) -> list[str]:
    """Unique full names from the `config.name_pools` prefixes; words shared across people.

    `groups`: biography._groups(config), (split, task, count, in_bios) in person order.

    People with biographies draw from the whole prefix pools. People without (later tasks, by default)
    draw only from the words that people with biographies use, so every word of their names was
    pretrained while they themselves were not (the paper's rule: tasks 1-5 are new people).
    """
    pools = [FIRST_NAMES[: config.name_pools[0]], MIDDLE_NAMES[: config.name_pools[1]],
             LAST_NAMES[: config.name_pools[2]]]
    used: set[tuple[str, str, str]] = set()
    seen: list[set[str]] = [set(), set(), set()]
    names = []

    def draw(choices: list[tuple[str, ...]]) -> tuple[str, str, str]:
        free = len(choices[0]) * len(choices[1]) * len(choices[2]) - len(used)
        if free < 1:
            raise ValueError(f"BiographyConfig.name_pools {list(config.name_pools)}: no unused name is left whose "
                             "words were pretrained; enlarge the pools or the number of pretrained people")
        while True:
            name = tuple(c[name_rng.below(len(c))] for c in choices)
            if name not in used:
                used.add(name)
                return name

    for _, _, count, in_bios in groups:
        # Sorted: the seen words' order (a set's) must not depend on hashing.
        choices = pools if in_bios else [tuple(sorted(w)) for w in seen]
        for _ in range(count):
            name = draw(choices)
            if in_bios:
                for s, w in zip(seen, name):
                    s.add(w)
            names.append(" ".join(name))
    return names
