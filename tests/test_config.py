"""FreezeConfig: validated knobs, with errors that name the fix; what a resume compares."""
from __future__ import annotations

import pytest

from fastfreeze import FreezeConfig, FreezeConfigError


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_config_rejects_bad_k(bad):
    with pytest.raises(FreezeConfigError):
        FreezeConfig(num_frozen_layers=bad)


def test_config_rejects_bad_knobs():
    with pytest.raises(FreezeConfigError, match="kernels"):
        FreezeConfig(num_frozen_layers=1, kernels="cuda")
    with pytest.raises(FreezeConfigError, match="cache_dir"):
        FreezeConfig(num_frozen_layers=1, cache="disk")
    with pytest.raises(FreezeConfigError, match="freeze_embeddings=True"):
        FreezeConfig(num_frozen_layers=1, cache="memory", freeze_embeddings=False)
    with pytest.raises(FreezeConfigError, match="Unknown"):
        FreezeConfig.from_dict({"num_frozen_layers": 1, "layers": 2})


def test_round_trip_and_identity():
    cfg = FreezeConfig(num_frozen_layers=3, cache="memory", kernels="torch")
    assert FreezeConfig.from_dict(cfg.to_dict()) == cfg
    assert FreezeConfig.from_dict(__import__("json").loads(cfg.to_json())) == cfg
    # What a resume compares: the frozen model's identity, not runtime knobs such as kernels or cache.
    assert cfg.identity() == FreezeConfig(num_frozen_layers=3).identity()
    assert cfg.identity() != FreezeConfig(num_frozen_layers=2).identity()
    with pytest.raises(FreezeConfigError, match="0..2"):
        cfg.validate_for(2)



def test_a_freeze_config_saved_with_the_retired_extra_field_still_loads():
    # Checkpoints written before `extra` was dropped carry `"extra": {}` in their freeze config; resume reads it.
    old = {**FreezeConfig(num_frozen_layers=2).to_dict(), "extra": {}}
    assert FreezeConfig.from_dict(old) == FreezeConfig(num_frozen_layers=2)
    assert "extra" not in FreezeConfig(num_frozen_layers=2).to_dict()


def test_per_op_kernel_switches_are_validated_saved_and_not_identity():
    """rms_norm / swiglu / fused_loss: bools (the error names the fix), saved in the checkpoint's
    fastfreeze_config.json, free to change on resume (results do not depend on them), and a config saved
    before the rms_norm / swiglu switches existed loads with them on."""
    with pytest.raises(FreezeConfigError, match=r"swiglu='no'.*FreezeConfig\(swiglu=False\)"):
        FreezeConfig(num_frozen_layers=1, swiglu="no")
    with pytest.raises(FreezeConfigError, match="fused_loss=1"):
        FreezeConfig(num_frozen_layers=1, fused_loss=1)
    cfg = FreezeConfig(num_frozen_layers=2, rms_norm=False)
    assert FreezeConfig.from_dict(__import__("json").loads(cfg.to_json())) == cfg
    assert cfg.identity() == FreezeConfig(num_frozen_layers=2).identity()
    older = {k: v for k, v in FreezeConfig(num_frozen_layers=2).to_dict().items() if k not in ("rms_norm", "swiglu")}
    assert FreezeConfig.from_dict(older) == FreezeConfig(num_frozen_layers=2)
