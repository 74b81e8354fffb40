"""suggest-k's inputs: what a run folder implies, explicit paths over it, and errors that name the fix."""
from __future__ import annotations

import pytest
import yaml

from fastfreeze.lab.continual.config import ConfigError
from fastfreeze.lab.suggest.inputs import resolve


def _run(tmp_path, tasks=(0,), data_dirs=("data-abc",)):
    """A run folder with config, data/tokenizer cache folders and empty 'checkpoints' (config.json only)."""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"data": {"max_length": 20},
                                                          "training": {"learning_rate": 1e-3}}))
    for name in (*data_dirs, "tokenizer-abc"):
        (tmp_path / name).mkdir()
    for key in ("pretrain", *(f"trunk/task{t}" for t in tasks)):
        (tmp_path / "checkpoints" / key).mkdir(parents=True)
        (tmp_path / "checkpoints" / key / "config.json").write_text("{}")
    return tmp_path


def test_a_run_folder_gives_the_checkpoints_data_and_settings(tmp_path):
    run = _run(tmp_path, tasks=(0, 1))
    inp = resolve(run)
    assert inp.model == run / "checkpoints/trunk/task0" and inp.previous == run / "checkpoints/pretrain"
    assert inp.data == run / "data-abc" and inp.tokenizer == run / "tokenizer-abc"
    assert (inp.old_task, inp.new_task, inp.max_length, inp.training) == (0, 1, 20, {"learning_rate": 1e-3})
    later = resolve(run, new_task=2, old_task=0)
    assert later.model == run / "checkpoints/trunk/task1" and later.previous == run / "checkpoints/trunk/task0"
    assert resolve(run, previous=run / "checkpoints/trunk/task1").previous == run / "checkpoints/trunk/task1"


@pytest.mark.parametrize("kwargs, fix", [
    ({"new_task": 0}, "--new-task must be >= 1"),
    ({"new_task": 1, "old_task": 1}, "--old-task must be in 0..0"),
    ({"model": "nope"}, "pass --model DIR"),
])
def test_bad_arguments_name_the_fix(tmp_path, kwargs, fix):
    with pytest.raises(ConfigError, match=fix.replace(".", r"\.")):
        resolve(_run(tmp_path), **kwargs)


def test_a_folder_that_is_not_a_run_names_the_alternative(tmp_path):
    with pytest.raises(ConfigError, match="or pass --model, --data and --tokenizer instead"):
        resolve(tmp_path)
    with pytest.raises(ConfigError, match="has 2 data-\\* folders"):
        (tmp_path / "two").mkdir()
        resolve(_run(tmp_path / "two", data_dirs=("data-a", "data-b")))
    with pytest.raises(ConfigError, match="pass all of --model DIR"):
        resolve(None, model=tmp_path)
