"""Test-side shim: the private torch / accelerate / transformers names the CPU FSDP2 test touches, checked up front.

Why it exists: accelerate turns FSDP on only for accelerator devices (AcceleratorState sets
DistributedType.FSDP inside its MULTI_GPU/NPU/XPU branch; multi-process CPU is MULTI_CPU, which Trainer
wraps in DDP). So the CPU test (tests/integrations/fsdp_worker.py) marks accelerate's state FSDP right
after Trainer builds its Accelerator (`force_fsdp`), and counts FSDP2's all-gathers per unit by wrapping
torch's private `FSDPParamGroup.unshard` and `foreach_all_gather` (`watch_all_gathers`).

Why it lives in tests/ and not in fastfreeze/_hf_compat.py: fastfreeze itself ships no such patch (on a
GPU accelerate sets the state on its own and nothing is counted), so the package has nothing to shim;
these are test instruments. `problems()` checks every name they rely on, with the shape it must have,
before any torchrun launch: when a release moves one, tests/integrations/test_fsdp_cpu_shim.py fails
and test_fsdp.py skips, both with one message naming the installed versions and what moved, instead of
a rank crashing deep inside Trainer.

Usage:
    if problems(): pytest.skip(report())           # before launching the workers
    force_fsdp(trainer, plugin=True)                # in Trainer.create_accelerator_and_postprocess
    restore = watch_all_gathers(lambda modules: ...)  # called once per all-gather that really ran
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

PARAM_GROUP = "torch.distributed.fsdp._fully_shard._fsdp_param_group"


def _code_names(fn: Any) -> set[str]:
    """Global and attribute names a function's own body uses (decorators unwrapped)."""
    code = getattr(inspect.unwrap(fn), "__code__", None)
    return set(code.co_names) if code is not None else set()


def _method_names(cls: type) -> set[str]:
    """Names used by any function defined on `cls` itself (where an attribute is set, whichever method)."""
    names: set[str] = set()
    for value in vars(cls).values():
        fn = value.fget if isinstance(value, property) else value
        if inspect.isfunction(fn) or inspect.isfunction(inspect.unwrap(fn)):
            names |= _code_names(fn)
    return names


def _torch_problems() -> list[str]:
    import importlib

    try:
        pg = importlib.import_module(PARAM_GROUP)
    except ImportError as err:
        return [f"{PARAM_GROUP} does not import ({err})"]
    group = getattr(pg, "FSDPParamGroup", None)
    if not isinstance(group, type):
        return [f"{PARAM_GROUP}.FSDPParamGroup is gone"]
    out = []
    unshard = getattr(group, "unshard", None)
    if not callable(unshard) or list(inspect.signature(unshard).parameters)[:2] != ["self", "async_op"]:
        out.append("FSDPParamGroup.unshard(self, async_op) is gone or changed")
    elif "foreach_all_gather" not in _code_names(unshard):
        out.append("FSDPParamGroup.unshard no longer calls the module-level foreach_all_gather")
    if not callable(getattr(pg, "foreach_all_gather", None)):
        out.append(f"{PARAM_GROUP}.foreach_all_gather is gone")
    if "modules" not in _code_names(group.__init__):
        out.append("FSDPParamGroup no longer keeps its `modules`")
    return out


def _accelerate_problems() -> list[str]:
    import accelerate.utils
    from accelerate.state import AcceleratorState

    out = []
    if "FSDP" not in getattr(accelerate.utils.DistributedType, "__members__", {}):
        out.append("accelerate.utils.DistributedType.FSDP is gone")
    plugin = getattr(accelerate.utils, "FullyShardedDataParallelPlugin", None)
    if plugin is None or "fsdp_version" not in inspect.signature(plugin).parameters:
        out.append("accelerate.utils.FullyShardedDataParallelPlugin(fsdp_version=...) is gone")
    if not {"distributed_type", "fsdp_plugin"} <= _code_names(AcceleratorState.__init__):
        out.append("AcceleratorState.__init__ no longer sets `distributed_type` / `fsdp_plugin`")
    is_fsdp2 = getattr(AcceleratorState, "is_fsdp2", None)
    if not isinstance(is_fsdp2, property) or not {"distributed_type", "fsdp_plugin"} <= _code_names(is_fsdp2.fget):
        out.append("AcceleratorState.is_fsdp2 no longer reads `distributed_type` and `fsdp_plugin`")
    return out


def _transformers_problems() -> list[str]:
    from transformers import Trainer, TrainingArguments

    out = []
    create = getattr(Trainer, "create_accelerator_and_postprocess", None)
    if not callable(create) or list(inspect.signature(create).parameters) != ["self"]:
        out.append("Trainer.create_accelerator_and_postprocess(self) is gone or changed")
    elif "is_fsdp_enabled" not in _code_names(create):
        out.append("Trainer.create_accelerator_and_postprocess no longer sets `is_fsdp_enabled`")
    if "fsdp_plugin_args" not in _method_names(TrainingArguments):
        out.append("TrainingArguments no longer builds `fsdp_plugin_args`")
    return out


def problems() -> list[str]:
    """Every private name this shim relies on that the installed releases moved or changed; [] when all hold."""
    return _torch_problems() + _accelerate_problems() + _transformers_problems()


def versions() -> str:
    """The installed torch / accelerate / transformers versions, for messages."""
    from importlib import metadata

    return ", ".join(f"{p} {metadata.version(p)}" for p in ("torch", "accelerate", "transformers"))


def report(found: list[str] | None = None) -> str:
    """One message: the installed versions and what moved (tests/integrations/_fsdp_cpu.py says why it matters)."""
    found = problems() if found is None else found
    return (f"the CPU FSDP2 test's shim (tests/integrations/_fsdp_cpu.py) does not fit {versions()}: "
            + "; ".join(found))


def check() -> None:
    """Raise RuntimeError with `report()` unless every name holds (the workers call it first)."""
    found = problems()
    if found:
        raise RuntimeError(report(found))


def force_fsdp(trainer: Any, plugin: bool = False) -> None:
    """Mark `trainer`'s accelerate state FSDP as the MULTI_GPU branch would (plugin=True: also give it the
    FSDP plugin built from the TrainingArguments, as accelerate does there). Call it again before saving:
    on CPU accelerate sets the shared state back to MULTI_CPU during train()."""
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if plugin:
        trainer.accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin(**trainer.args.fsdp_plugin_args)
    trainer.accelerator.state.distributed_type = DistributedType.FSDP
    trainer.is_fsdp_enabled = True


def watch_all_gathers(on_gather: Callable[[tuple], None]) -> Callable[[], None]:
    """Call `on_gather(modules)` for every FSDP2 all-gather that really runs, `modules` being those of the
    unit being unsharded (() when none is known). Returns a function that removes the watch."""
    import importlib

    pg = importlib.import_module(PARAM_GROUP)
    unshard, gather, current = pg.FSDPParamGroup.unshard, pg.foreach_all_gather, []

    def counted_unshard(group, *a, **kw):
        current.append(group)
        try:
            return unshard(group, *a, **kw)
        finally:
            current.pop()

    def counted_gather(*a, **kw):
        on_gather(tuple(current[-1].modules) if current else ())
        return gather(*a, **kw)

    pg.FSDPParamGroup.unshard, pg.foreach_all_gather = counted_unshard, counted_gather

    def restore() -> None:
        pg.FSDPParamGroup.unshard, pg.foreach_all_gather = unshard, gather

    return restore
