"""errors: the one refusal type, and the meta-weights message naming the three ways to load real weights."""
import pytest
import torch

import fastfreeze
from fastfreeze.errors import UnsupportedModelError, meta_weights_refusal
from fastfreeze.families import UnsupportedModelError as from_families


def test_one_refusal_type_everywhere():
    assert fastfreeze.UnsupportedModelError is UnsupportedModelError is from_families
    assert issubclass(UnsupportedModelError, ValueError)  # callers that catch ValueError keep working


def test_meta_message_names_the_model_where_and_each_fix():
    msg = meta_weights_refusal(torch.nn.Linear(2, 2), "on a test device")
    assert msg.startswith("Linear: its weights are on a test device")
    for fix in ("from_pretrained(path)", "to_empty(device=...)", "load_state_dict", "cpu_ram_efficient_loading"):
        assert fix in msg
    with pytest.raises(UnsupportedModelError, match="meta device"):
        raise UnsupportedModelError(meta_weights_refusal(torch.nn.Linear(2, 2)))
