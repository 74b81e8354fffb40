"""The CPU FSDP2 test's shim (tests/integrations/_fsdp_cpu.py): its self-check holds today and names what moved when a name moves."""
from __future__ import annotations

import enum
import importlib
from importlib import metadata
from types import SimpleNamespace

import accelerate.utils
import pytest
from accelerate.state import AcceleratorState
from torch import nn
from transformers import Trainer

from tests.integrations import _fsdp_cpu

pg = importlib.import_module(_fsdp_cpu.PARAM_GROUP)


def test_self_check_passes_with_the_installed_releases():
    """If this fails, test_fsdp.py skips: the message names the versions and what moved."""
    assert _fsdp_cpu.problems() == [], _fsdp_cpu.report()
    _fsdp_cpu.check()


def _unshard_without_gather(self, async_op: bool = False):
    return None


class _PluginWithoutVersion:
    def __init__(self, sharding_strategy=None):
        pass


_NoFSDP = enum.Enum("DistributedType", ["NO", "MULTI_CPU", "MULTI_GPU"])


# (object, attribute, replacement or None to delete, the words the message must contain)
MUTATIONS = {
    "gather renamed": (pg, "foreach_all_gather", None, "foreach_all_gather is gone"),
    "unshard signature": (pg.FSDPParamGroup, "unshard", lambda self, wait=False: None, "unshard(self, async_op)"),
    "unshard stops gathering": (pg.FSDPParamGroup, "unshard", _unshard_without_gather, "no longer calls"),
    "no FSDP type": (accelerate.utils, "DistributedType", _NoFSDP, "DistributedType.FSDP is gone"),
    "plugin without version": (accelerate.utils, "FullyShardedDataParallelPlugin", _PluginWithoutVersion,
                               "FullyShardedDataParallelPlugin(fsdp_version"),
    "is_fsdp2 constant": (AcceleratorState, "is_fsdp2", property(lambda self: False), "is_fsdp2 no longer reads"),
    "create renamed": (Trainer, "create_accelerator_and_postprocess", None, "create_accelerator_and_postprocess"),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_a_moved_name_is_named_with_the_versions(monkeypatch, mutation):
    obj, name, value, words = MUTATIONS[mutation]
    if value is None:
        monkeypatch.delattr(obj, name)
    else:
        monkeypatch.setattr(obj, name, value)
    found = _fsdp_cpu.problems()
    assert any(words in p for p in found), found
    with pytest.raises(RuntimeError) as err:
        _fsdp_cpu.check()
    message = str(err.value)
    assert words in message and f"torch {metadata.version('torch')}" in message
    assert f"accelerate {metadata.version('accelerate')}" in message


def test_watch_all_gathers_attributes_each_gather_to_the_unit_and_restores(monkeypatch):
    """With stand-ins for torch's two functions (no process group on one CPU process): a gather inside
    an unshard is reported with that unit's modules, one outside with (); stop() puts both back."""
    def fake_unshard(self, async_op=False):
        return pg.foreach_all_gather()  # as the real unshard does: a module-global lookup

    monkeypatch.setattr(pg.FSDPParamGroup, "unshard", fake_unshard)
    monkeypatch.setattr(pg, "foreach_all_gather", lambda *a, **kw: "gathered")
    gather = pg.foreach_all_gather
    seen: list = []
    stop = _fsdp_cpu.watch_all_gathers(seen.append)
    unit = nn.Linear(2, 2)
    assert pg.FSDPParamGroup.unshard(SimpleNamespace(modules=(unit,))) == "gathered"
    assert pg.foreach_all_gather() == "gathered"
    assert seen == [(unit,), ()]
    stop()
    assert pg.FSDPParamGroup.unshard is fake_unshard and pg.foreach_all_gather is gather
    pg.foreach_all_gather()
    assert len(seen) == 2  # stopped: no longer counted
