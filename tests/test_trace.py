"""fastfreeze.trace: run_until stops at the module and always removes its hook; eval_mode restores flags exactly."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fastfreeze.families import resolve
from fastfreeze.trace import probe_inputs, run_model
from fastfreeze.trace import eval_mode, run_until
from tests._helpers import make_model


def _chain(n: int = 3) -> tuple[nn.Sequential, list]:
    """n Linear layers and a log of which ran (by index), in order."""
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(n)])
    ran: list = []
    for i, m in enumerate(model):
        m.register_forward_hook(lambda _m, _a, _o, i=i: ran.append(i))
    return model, ran


def _no_trace_hooks(module: nn.Module) -> bool:
    # The chain's own logging hooks are plain forward hooks; run_until's are the with-kwargs ones.
    return not module._forward_pre_hooks and not module._forward_hooks_with_kwargs


def test_stops_at_the_module_input_and_returns_what_it_saw():
    model, ran = _chain()
    x = torch.randn(2, 4)
    reach = run_until(lambda: model(x), model[1])
    assert reach.stopped and reach.calls == 1 and reach.result is None
    assert ran == [0]  # block 1 never ran, nor anything after it
    assert torch.equal(reach.hidden, model[0](x))  # its input: block 0's output


def test_output_stops_once_the_module_has_produced_its_output():
    model, ran = _chain()
    x = torch.randn(2, 4)
    reach = run_until(lambda: model(x), model[1], output=True)
    assert reach.stopped and ran == [0, 1]
    assert torch.equal(reach.output, model[1](model[0](x)))


def test_without_stop_the_forward_runs_to_the_end_and_on_reach_sees_every_call():
    model, ran = _chain()
    x = torch.randn(2, 4)
    seen = []
    reach = run_until(lambda: model(x), model[2], stop=False, on_reach=lambda r: seen.append(r.calls))
    assert not reach.stopped and ran == [0, 1, 2] and seen == [1]
    assert torch.equal(reach.result, model(x))


@pytest.mark.parametrize("output", [False, True])
def test_the_hook_is_gone_after_a_stop_a_full_run_and_an_error(output):
    model, _ = _chain()
    x = torch.randn(2, 4)
    run_until(lambda: model(x), model[1], output=output)
    run_until(lambda: model(x), model[1], output=output, stop=False)
    assert _no_trace_hooks(model[1])

    def broken():
        model(x)
        raise ValueError("the model's own error")
    with pytest.raises(ValueError, match="own error"):  # propagates, not swallowed as a stop
        run_until(broken, model[2], output=output, stop=False)
    assert _no_trace_hooks(model[2])
    ran_after = model(x)  # nothing of the trace is left to stop this forward
    assert ran_after.shape == (2, 4)


def test_a_nested_run_until_does_not_swallow_the_outer_stop():
    model, ran = _chain()
    x = torch.randn(2, 4)
    outer = run_until(lambda: run_until(lambda: model(x), model[2], stop=False), model[1])
    assert outer.stopped and ran == [0]


def test_the_model_runner_lets_the_stop_through_on_a_real_model():
    """trace.run_model turns a model's errors into refusals; the trace's stop must not become one."""
    model = make_model("llama")
    parts = resolve(model)
    ran = []
    parts.layers[2].register_forward_pre_hook(lambda m, a: ran.append(2))
    with eval_mode(model), torch.no_grad():
        reach = run_until(lambda: run_model(model, probe_inputs(model)), parts.layers[1])
    assert reach.stopped and isinstance(reach.hidden, torch.Tensor) and ran == []


class _AlwaysEval(nn.Dropout):
    """Refuses train mode, as a fastfreeze prefix module does."""

    def train(self, mode: bool = True):
        return super().train(False)


class _CountsTrain(nn.Module):
    """Records each train() call, standing in for models that act on it (transformers' hub kernels)."""

    def __init__(self):
        super().__init__()
        self.calls: list = []
        self.drop, self.prefix, self.head = nn.Dropout(0.5), _AlwaysEval(0.5), nn.Linear(4, 4)

    def train(self, mode: bool = True):
        self.calls.append(mode)
        return super().train(mode)


def _flags(model: nn.Module) -> dict:
    return {name: m.training for name, m in model.named_modules()}


def test_a_mixed_mode_model_comes_back_exactly_as_it_was():
    model = _CountsTrain()
    model.train()
    model.drop.eval()  # a user's eval-mode dropout inside a training model
    model.prefix.training = True  # a flag its own train() would never set back
    before = _flags(model)
    assert before == {"": True, "drop": False, "prefix": True, "head": True}
    model.calls.clear()
    with eval_mode(model):
        assert not any(_flags(model).values())
    assert _flags(model) == before
    assert model.calls == [False, True]  # model.eval() in, model.train(True) out: what hand-written code did


def test_an_eval_model_is_not_trained_on_the_way_out_and_its_train_submodule_stays_trained():
    model = _CountsTrain().eval()
    model.head.train()
    before = _flags(model)
    model.calls.clear()
    with eval_mode(model):
        pass
    assert _flags(model) == before and model.calls == [False]


def test_flags_are_restored_when_the_block_raises():
    model = _CountsTrain()
    model.train()
    model.drop.eval()
    before = _flags(model)
    with pytest.raises(RuntimeError, match="inside"):
        with eval_mode(model):
            raise RuntimeError("inside")
    assert _flags(model) == before
