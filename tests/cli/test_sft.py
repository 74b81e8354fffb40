"""`fastfreeze sft`: parses like `trl sft`, trains like a hand-written FastFreezeSFTTrainer, runs examples/sft.yaml
as `python -m fastfreeze.cli sft`, saves a model plain `from_pretrained` loads, and refuses bad input with exit 2."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
import transformers

pytest.importorskip("trl")

from trl import SFTConfig  # noqa: E402

try:  # `trl sft`'s own parser, the reference; its module is a script, so fall back to the same types
    from trl.scripts.sft import make_parser as trl_sft_parser  # noqa: E402
except ImportError:  # pragma: no cover
    def trl_sft_parser():
        from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments, TrlParser

        return TrlParser((ScriptArguments, SFTConfig, ModelConfig, DatasetMixtureConfig))

from fastfreeze.cli.sft import FreezeArguments, load_local_dataset, load_model, main, parse  # noqa: E402
from fastfreeze._hf_compat import attn_implementation  # noqa: E402
from fastfreeze.config import FreezeConfig  # noqa: E402
from fastfreeze.data.tokenize import build_word_tokenizer  # noqa: E402
from fastfreeze.integrations.trl import FastFreezeSFTTrainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WORDS = [f"w{i}" for i in range(40)]
K = 2
FROZEN = ("model.embed_tokens.", "model.layers.0.", "model.layers.1.")  # embedding + layers[:K]
# fp32 on CPU, one process, two epochs over 16 rows (the second served by the cache), nothing saved mid-run.
RUN = ["--use_cpu", "--bf16", "false", "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2",
       "--num_train_epochs", "2", "--learning_rate", "1e-3", "--save_strategy", "no", "--report_to", "none",
       "--disable_tqdm", "true", "--dataloader_num_workers", "0", "--max_length", "64"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny Llama + word tokenizer (save_pretrained) and 16 prompt/completion rows as JSONL."""
    root = tmp_path_factory.mktemp("sft-cli")
    tok = build_word_tokenizer(datasets.Dataset.from_dict({"text": [" ".join(WORDS)]}))
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                                   tie_word_embeddings=False, pad_token_id=tok.pad_token_id,
                                   eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    g = torch.Generator().manual_seed(3)

    def words(lo, hi):
        n = int(torch.randint(lo, hi + 1, (1,), generator=g))
        return " ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (n,), generator=g))

    rows = [{"prompt": words(3, 7), "completion": " " + words(2, 5)} for _ in range(16)]
    with open(root / "train.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return {"root": root, "model": str(root / "model"), "data": str(root / "train.jsonl"), "rows": rows}


def _weights(path) -> dict[str, torch.Tensor]:
    model = transformers.AutoModelForCausalLM.from_pretrained(path)  # plain HF: no fastfreeze involved
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _assert_freeze_held(initial, trained):
    assert set(trained) == set(initial)
    for name, p in trained.items():
        if name.startswith(FROZEN):
            assert torch.equal(p, initial[name]), f"frozen {name} changed"
        else:
            assert not torch.equal(p, initial[name]), f"{name} should have trained"


# ------------------------------------------------------------------ parsing: TRL's parser, TRL's answers
def test_flags_and_yaml_parse_as_trl_sft_does(files, tmp_path):
    common = {"learning_rate": 3e-4, "lr_scheduler_type": "cosine", "lora_r": 8, "packing": True}
    (tmp_path / "trl.yaml").write_text(json.dumps({**common, "model_name_or_path": files["model"]}))
    # fastfreeze's YAML: the short `data:` key and FreezeConfig fields beside TRL's keys
    (tmp_path / "ff.yaml").write_text(json.dumps({**common, "model_name_or_path": files["model"], "data": files["data"],
                                                  "cache": "disk", "cache_dir": "c", "num_frozen_layers": 1}))
    flags = ["--use_peft", "--max_length", "32", "--output_dir", str(tmp_path / "o"), "--use_cpu"]
    ref = trl_sft_parser().parse_args_and_config(
        ["--config", str(tmp_path / "trl.yaml"), "--dataset_name", files["data"], *flags])
    ours = parse(["--config", str(tmp_path / "ff.yaml"), *flags, "--num-frozen-layers", "2"])
    for theirs, mine in zip(ref, ours[:4]):  # ScriptArguments, SFTConfig, ModelConfig, DatasetMixtureConfig
        assert isinstance(mine, type(theirs)) and dataclasses.asdict(mine) == dataclasses.asdict(theirs)
    assert ours[1].learning_rate == 3e-4 and ours[2].lora_r == 8 and ours[1].max_length == 32  # from YAML and flags
    assert ours[4] == FreezeArguments(num_frozen_layers=2, cache="disk", cache_dir="c")  # the flag beat the YAML


def test_short_and_long_spellings_are_one_option(files):
    short = parse(["--model", files["model"], "--data", files["data"], "--num_frozen_layers", "1", "--use_cpu"])
    long = parse(["--model_name_or_path", files["model"], "--dataset_name", files["data"], "--num-frozen-layers", "1",
                  "--use_cpu"])
    assert short[0].dataset_name == long[0].dataset_name == files["data"]
    assert short[2].model_name_or_path == long[2].model_name_or_path == files["model"]


def test_freeze_arguments_are_freeze_config_fields_with_its_defaults():
    ours = {f.name: f.default for f in dataclasses.fields(FreezeArguments)}
    theirs = {f.name: f.default for f in dataclasses.fields(FreezeConfig)}
    assert set(ours) == set(theirs)
    assert {**ours, "cache": None, "num_frozen_layers": None} == {**theirs, "num_frozen_layers": None}
    assert ours["cache"] == "none" and FreezeArguments(num_frozen_layers=3).to_freeze_config() == FreezeConfig(3)


def test_model_flags_and_init_kwargs_reach_the_loaded_model(files, tmp_path):
    # `--dtype` / `--attn_implementation` (ModelConfig) and `--model_init_kwargs` (SFTConfig) shape the model as
    # `trl sft` does; the loader used up model_init_kwargs, so SFTTrainer does not warn that an instance ignores them.
    _, training, model_args, _, _ = parse(["--model", files["model"], "--data", files["data"], "--num_frozen_layers",
                                           "1", "--output_dir", str(tmp_path), "--dtype", "bfloat16",
                                           "--attn_implementation", "eager", "--model_init_kwargs",
                                           '{"use_cache": false}', *RUN])
    model, processor = load_model(model_args, training)
    assert model.dtype == torch.bfloat16 and attn_implementation(model.config) == "eager"
    assert model.config.use_cache is False and training.model_init_kwargs is None
    assert processor.pad_token_id == model.config.pad_token_id


def test_help_lists_trl_and_freeze_options(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(opt in out for opt in ("--num_frozen_layers", "--model", "--data", "--learning_rate", "--use_peft"))


# ------------------------------------------------------------------ local data, offline
@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "parquet", "txt", "save_to_disk", "dict_on_disk", "folder"])
def test_local_data_loads(tmp_path, kind):
    ds = datasets.Dataset.from_dict({"text": ["w1 w2", "w3", "w4 w5 w6"]})
    path = tmp_path / f"d.{kind}"
    if kind == "jsonl":
        ds.to_json(path, lines=True)
    elif kind == "json":
        path.write_text(json.dumps(ds.to_list()))
    elif kind in ("csv", "parquet"):
        getattr(ds, f"to_{kind}")(path)
    elif kind == "txt":
        path.write_text("w1 w2\nw3\nw4 w5 w6\n")
    elif kind == "save_to_disk":
        ds.save_to_disk(path)
    elif kind == "dict_on_disk":
        datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(path)
    else:  # a folder of data files: the split comes from the file name
        path.mkdir()
        ds.to_json(path / "train.jsonl", lines=True)
    data = load_local_dataset(str(path))
    assert data["train"]["text"] == ds["text"]
    assert set(data) == ({"train", "test"} if kind == "dict_on_disk" else {"train"})


# ------------------------------------------------------------------ bad input: one line, exit 2
def _yaml(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return ["--config", str(path)]


def _args(f, model=None, data=None, k=str(K)):
    """A valid command line with one part replaced (False: left out)."""
    out = []
    for flag, value in (("--model", f["model"] if model is None else model),
                        ("--data", f["data"] if data is None else data), ("--num-frozen-layers", k)):
        out += [flag, value] if value is not False else []
    return out


BAD = {  # case: (argv from the files and tmp_path, what the one error line must say)
    "unknown flag": (lambda f, t: _args(f) + ["--no_such_flag", "1"], "--no_such_flag"),
    "bad value": (lambda f, t: _args(f, k="two"), "invalid int value: 'two'"),
    "bad choice": (lambda f, t: _args(f) + ["--cache", "ram"], "invalid choice: 'ram'"),
    "k out of range": (lambda f, t: _args(f, k="5"), "the model has 4 decoder layers; use a value in 0..4"),
    "k negative": (lambda f, t: _args(f, k="-1"), "num_frozen_layers=-1 is negative"),
    "no k": (lambda f, t: _args(f, k=False), "--num-frozen-layers K is required"),
    "disk cache without dir": (lambda f, t: _args(f) + ["--cache", "disk"], "cache='disk' needs cache_dir"),
    "missing model": (lambda f, t: _args(f, model=str(t / "nope")), "does not exist"),
    "no model": (lambda f, t: _args(f, model=False), "--model PATH is required"),
    "hub id not cached": (lambda f, t: _args(f, model="nobody/none-such-0.5B"), "not a local model or one in the HF cache"),
    "model without config": (lambda f, t: _args(f, model=str(t)), "has no config.json"),
    "missing data": (lambda f, t: _args(f, data=str(t / "nope.jsonl")), "does not exist"),
    "unknown data type": (lambda f, t: _args(f, data=f["model"] + "/model.safetensors"), "unknown file type"),
    "config of a file": (lambda f, t: _args(f) + ["--dataset_config", "x"], "selects a config of a folder"),
    "no data": (lambda f, t: _args(f, data=False), "--data FILE_OR_DIR is required"),
    "eval without test split": (lambda f, t: _args(f) + ["--eval_strategy", "steps"], "not 'test'"),
    "missing yaml": (lambda f, t: _args(f) + ["--config", str(t / "nope.yaml")], "no such file"),
    "yaml path left out": (lambda f, t: _args(f) + ["--config"], "--config needs a YAML file path"),
    "bad yaml": (lambda f, t: _args(f) + _yaml(t, "learning_rate: [1e-3\n"), "not valid YAML"),
    "yaml not a mapping": (lambda f, t: _args(f) + _yaml(t, "- 1\n"), "must hold a YAML mapping"),
    # The key name, not TRL's wording around it (a key no release will ever define).
    "unknown yaml key": (lambda f, t: _args(f) + _yaml(t, "no_such_option_ff: 0.1\n"), "no_such_option_ff"),
    "yaml alias conflict": (lambda f, t: _args(f) + _yaml(t, "model: a\nmodel_name_or_path: b\n"), "keep one"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_exit_2(files, tmp_path, capsys, case):
    argv, message = BAD[case]
    assert main(["--use_cpu", "--output_dir", str(tmp_path / "out"), *argv(files, tmp_path)]) == 2
    err = capsys.readouterr().err  # may start with a datasets progress bar, then the one error line
    last = err.strip().splitlines()[-1]
    assert last.startswith("fastfreeze sft: error: ") and message in last and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()  # refused before training


# ------------------------------------------------------------------ training: nothing added, freeze held
def test_cli_trains_exactly_as_the_hand_written_trainer(files, tmp_path):
    out = tmp_path / "cli"
    assert main(["--model", files["model"], "--data", files["data"], "--num-frozen-layers", str(K),
                 "--cache", "memory", "--output_dir", str(out), *RUN]) == 0
    # The same run written by hand from the library (FastFreezeSFTTrainer, as in docs/integrations.md).
    args = SFTConfig(output_dir=str(tmp_path / "hand"), use_cpu=True, bf16=False, per_device_train_batch_size=4,
                     gradient_accumulation_steps=2, num_train_epochs=2, learning_rate=1e-3, save_strategy="no",
                     report_to="none", disable_tqdm=True, dataloader_num_workers=0, max_length=64)
    trainer = FastFreezeSFTTrainer(
        model=transformers.AutoModelForCausalLM.from_pretrained(files["model"]), args=args,
        train_dataset=datasets.load_dataset("json", data_files=files["data"], split="train"),
        processing_class=transformers.AutoTokenizer.from_pretrained(files["model"]),
        freeze_config=FreezeConfig(num_frozen_layers=K, cache="memory"))
    trainer.train()
    assert trainer.cache_summary().hits >= 16  # epoch 2 came from the cache in this arm
    hand = {n: p.detach() for n, p in trainer.model.named_parameters()}
    cli = _weights(out)
    assert all(torch.equal(cli[n], hand[n]) for n in hand), [n for n in hand if not torch.equal(cli[n], hand[n])]
    _assert_freeze_held(_weights(files["model"]), cli)


def test_example_yaml_runs_as_python_m_and_saves_a_plain_hf_model(files, tmp_path):
    """examples/sft.yaml as docs/sft.md runs it, with flags pointing it at the tiny local model and data."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    cmd = [sys.executable, "-m", "fastfreeze.cli", "sft", "--config", str(ROOT / "examples" / "sft.yaml"),
           "--model", files["model"], "--data", files["data"], "--num_frozen_layers", str(K), "--dtype", "float32",
           "--output_dir", str(out), "--cache_dir", str(cache), "--max_length", "64", "--use_cpu", "--bf16", "false",
           "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2", "--disable_tqdm", "true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"fastfreeze sft: model saved to {out}" in run.stdout
    _assert_freeze_held(_weights(files["model"]), _weights(out))
    assert json.loads((out / "fastfreeze_config.json").read_text())["num_frozen_layers"] == K
    assert any(cache.rglob("*")), "the YAML's disk cache was not written"


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="the .[deepspeed] extra is not installed")
def test_deepspeed_zero3_under_torchrun(files, tmp_path):
    """`fastfreeze sft --deepspeed examples/deepspeed_zero3.json` on 2 CPU ranks (gloo): the model loads
    partitioned (SFTConfig is parsed before the model loads), trains, writes a DeepSpeed checkpoint (one
    ZeRO partition per rank) with the freeze config beside it, and saves a plain HF model whose frozen
    weights are unchanged. Parity with plain Trainer + DeepSpeed: tests/integrations/test_deepspeed.py."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "fastfreeze.cli", "sft", "--config", str(ROOT / "examples" / "sft.yaml"), "--model", files["model"],
           "--data", files["data"], "--num_frozen_layers", str(K), "--dtype", "float32", "--output_dir", str(out),
           "--cache", "none", "--deepspeed", str(ROOT / "examples" / "deepspeed_zero3.json"), "--max_steps", "2",
           "--max_length", "64", "--use_cpu", "--bf16", "false", "--per_device_train_batch_size", "2",
           "--gradient_accumulation_steps", "1", "--disable_tqdm", "true", "--ddp_backend", "gloo", "--save_strategy", "steps", "--save_steps", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    checkpoint = out / "checkpoint-2"  # a DeepSpeed checkpoint: one ZeRO optimizer partition per rank
    assert sorted(p.name for p in (checkpoint / "global_step2").glob("*optim_states.pt")) == [
        f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)]
    assert json.loads((checkpoint / "fastfreeze_config.json").read_text())["num_frozen_layers"] == K
    _assert_freeze_held(_weights(files["model"]), _weights(out))


def test_trl_lora_flags_put_the_adapter_on_the_trainable_blocks(files, tmp_path):
    """`--use_peft --lora_target_modules q_proj v_proj` (every block, as for `trl sft`) is narrowed to blocks K..;
    the output is the adapter, as `trl sft` saves it."""
    out = tmp_path / "lora"
    assert main(["--model", files["model"], "--data", files["data"], "--num-frozen-layers", str(K), "--max_steps", "2",
                 "--use_peft", "--lora_target_modules", "q_proj", "v_proj", "--lora_r", "4", "--output_dir", str(out),
                 *RUN]) == 0
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["layers_to_transform"] == [2, 3] and adapter["r"] == 4


# ------------------------------------------------------------------ the GPU defaults (issue 29)
def test_cli_trainer_in_both_defaults_matches_plain_trl(files, defaults, tmp_path):
    """The trainer `fastfreeze sft` builds (flags -> build_trainer), in the CPU and the GPU defaults, against
    plain TRL with requires_grad=False on the same layers: every logged loss, entropy, gradient norm (2e-6),
    token accuracy (equal) and the first step's gradients; see tests/integrations/test_trl.py for the tolerances."""
    from trl import SFTTrainer

    from fastfreeze.cli.sft import build_trainer
    from tests.integrations.test_trl import GPU_RTOL, GRAD_RTOL, Grads, _logged
    from tests.parity.harness import max_rel_diff

    run = [*RUN, "--max_steps", "3", "--logging_steps", "1", "--gradient_accumulation_steps", "1"]
    cli = build_trainer(*parse(["--model", files["model"], "--data", files["data"], "--num-frozen-layers", str(K),
                                "--output_dir", str(tmp_path / "cli"), *run]))
    cli.add_callback(grads := Grads())
    cli.train()
    model = transformers.AutoModelForCausalLM.from_pretrained(files["model"])
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(FROZEN))
    _, args, _, _, _ = parse(["--model", files["model"], "--data", files["data"], "--output_dir",
                              str(tmp_path / "plain"), *run])
    plain = SFTTrainer(model=model, args=args, train_dataset=datasets.load_dataset("json", data_files=files["data"],
                                                                                    split="train"),
                       processing_class=transformers.AutoTokenizer.from_pretrained(files["model"]),
                       callbacks=[plain_grads := Grads()])
    plain.train()
    assert cli.freeze_runtime.kernel_set == ("triton" if defaults == "gpu" else "torch")
    assert ("Training loss: TRL's fused LM head" in str(cli.freeze_report)) == (defaults == "gpu")
    got, want = _logged(cli), _logged(plain)
    assert len(got) == len(want) == 3
    for name, g in plain_grads.steps[0].items():  # first step: same weights in both (GRAD_RTOL's reason)
        assert max_rel_diff(grads.steps[0][name], g) <= GRAD_RTOL, name
    for g, w in zip(got, want):
        assert g["mean_token_accuracy"] == w["mean_token_accuracy"], (g, w)
        for key in ("loss", "entropy", "grad_norm"):
            assert abs(g[key] - w[key]) <= GPU_RTOL * abs(w[key]), (key, g, w)
