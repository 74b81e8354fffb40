"""fastfreeze.standin: output forms, placeholders and the stand-ins that take a prefix module's place under injection."""
from __future__ import annotations

import torch
from torch import nn

from fastfreeze.standin import (OutputSpec, StandIn, StandIns, as_output, output_spec, placeholder_output,
                                standin_output)


class _RunState:
    """The two fields of the prefix's run state a stand-in reads, and the counter the swap keeps."""

    def __init__(self, injected=None, fill=0.0):
        self.injected, self.fill, self.standin_calls = injected, fill, 0


class _Join(nn.Module):
    def forward(self, parts):
        return torch.cat(parts, -1)


def test_output_specs_keep_their_form_and_filled_standins_are_stride0_views():
    """Tuple / list outputs keep their type and length, their extra items become None, and a filled
    stand-in is a stride-0 view with the recorded tail and dtype."""
    x, ids = torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.long)
    passed = output_spec(x, (x * 2, "attention weights"))
    assert passed == OutputSpec("pass", container=tuple, length=2) and as_output(x, passed) == (x, None)
    filled = output_spec(ids, [torch.zeros(2, 3, 5, dtype=torch.bfloat16)])
    assert (filled.kind, filled.container, filled.length, filled.tail, filled.dtype) == (
        "fill", list, 1, (5,), torch.bfloat16)
    out = standin_output(filled, ids, float("nan"))
    assert isinstance(out, list) and out[0].shape == (2, 3, 5) and out[0].stride() == (0, 0, 0)
    assert out[0].dtype == torch.bfloat16 and out[0].isnan().all()
    assert output_spec(x, torch.randn(5)) is None and as_output(x, None) is x  # not derived from the input


def test_placeholders_are_materialized_and_integer_outputs_hold_zero():
    """A module still called under injection returns a real tensor (hooks may write to it): its own
    storage, the fill in floating outputs, 0 in integer ones; None when nothing says what to return."""
    ids = torch.ones(2, 3, dtype=torch.long)
    out = placeholder_output(OutputSpec("fill", tail=(4,), dtype=torch.float32), ids, float("nan"))
    assert out.shape == (2, 3, 4) and out.stride() == (12, 4, 1) and out.isnan().all()
    positions = placeholder_output(OutputSpec("fill", container=tuple, length=2, tail=(), dtype=torch.long), ids, 7.0)
    assert positions[1] is None and positions[0].dtype == torch.long and positions[0].eq(0).all()
    x = torch.randn(2, 3, 4)
    assert placeholder_output(OutputSpec("pass"), x, 0.0) is x
    assert placeholder_output(None, x, 0.0) is None and placeholder_output(OutputSpec("pass"), None, 0.0) is None


def test_a_standin_returns_the_injected_boundary_or_a_placeholder_and_owns_no_parameters():
    """The boundary source's stand-in returns the injected boundary in the recorded form; another returns
    a stride-0 placeholder of the fill, or runs the module when its input gives no shape to derive from."""
    layer = nn.Linear(4, 4)
    boundary = torch.randn(2, 3, 4)
    state = _RunState(injected=boundary, fill=float("nan"))
    source = StandIn(layer, OutputSpec("pass", container=tuple, length=2), state, source=True)
    assert list(source.parameters()) == [] and source.original is layer
    got = source(torch.zeros(2, 3, 4))
    assert got[0] is boundary and got[1] is None
    embed = nn.Embedding(10, 4)
    other = StandIn(embed, OutputSpec("fill", tail=(4,), dtype=torch.float32), state, source=False)
    out = other(torch.ones(2, 3, dtype=torch.long))
    assert out.shape == (2, 3, 4) and out.isnan().all() and out.stride() == (0, 0, 0)
    parts = [torch.ones(2, 1), torch.zeros(2, 1)]  # a first argument that is no tensor: the module itself runs
    joined = StandIn(_Join(), OutputSpec("pass"), state, source=False)(parts)
    assert torch.equal(joined, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))


def test_swap_in_follows_only_and_the_recorded_forms_and_restore_puts_modules_back():
    """The boundary source always stands in; another module only with a recorded form and, under
    `only`, when named. Each module gets one stand-in for good; a swap left in place is undone."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4))
    names, modules = ["0", "1", "2"], list(model)
    state = _RunState(injected=torch.randn(1, 4))
    standins = StandIns(model, names, modules, state)
    modules[0].__dict__["_ff_spec"] = OutputSpec("pass")  # module 1 never ran: no form recorded
    swapped: list = []
    standins.swap_in(swapped, only=None)
    assert [m for _, _, m in swapped] == [modules[0], modules[2]] and state.standin_calls == 2
    assert isinstance(model[0], StandIn) and model[1] is modules[1] and isinstance(model[2], StandIn)
    first = model[0]
    standins.restore_left_in_place()
    assert list(model) == modules
    swapped.clear()
    standins.swap_in(swapped, only={modules[1]})  # module 0 not named: it runs; the source stands in regardless
    assert [m for _, _, m in swapped] == [modules[2]] and model[0] is modules[0]
    standins.restore_left_in_place()
    standins.swap_in([], only=None)
    assert model[0] is first  # the same stand-in object as the first time (torch.compile guards on it)
    standins.restore_left_in_place()
    assert list(model) == modules
