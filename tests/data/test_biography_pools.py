"""fastfreeze.data.biography_pools: the word pools and templates are large, clean and well formed."""
from __future__ import annotations

import re

from fastfreeze.data import ATTRIBUTES
from fastfreeze.data import biography_pools as pools


CITY_RE = re.compile(r"^[A-Z][A-Za-z\- ]*[a-z], [A-Z]{2}$")


def test_pools_are_large_clean_and_templates_well_formed():
    assert (len(pools.FIRST_NAMES), len(pools.MIDDLE_NAMES), len(pools.LAST_NAMES)) == (400, 400, 1000)
    assert len(pools.CITIES) >= 200 and len(pools.UNIVERSITIES) >= 200
    assert len(pools.MAJORS) >= 100 and len(pools.COMPANIES) >= 250
    all_pools = (pools.FIRST_NAMES, pools.MIDDLE_NAMES, pools.LAST_NAMES, pools.CITIES, pools.UNIVERSITIES,
                 pools.MAJORS, pools.COMPANIES)
    for pool in all_pools:
        assert len(set(pool)) == len(pool)
        # No periods in values: bios are split into sentences on ". ".
        assert not [v for v in pool if "." in v]
    assert not set(pools.FIRST_NAMES) & set(pools.MIDDLE_NAMES)
    assert all(CITY_RE.match(c) for c in pools.CITIES)
    assert set(pools.BIO_TEMPLATES) == set(ATTRIBUTES) == set(pools.QUESTION_TEMPLATES)
    for attr, templates in pools.BIO_TEMPLATES.items():
        assert len(templates) >= 5 and len(set(templates)) == len(templates)
        for t in templates:
            assert t.startswith("{name} ") and t.endswith(".") and t.count("{value}") == 1 and t.count("{name}") == 1
    for q in pools.QUESTION_TEMPLATES.values():
        assert q.count("{name}") == 1 and q.endswith("?\nAnswer:")
