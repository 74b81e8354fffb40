"""fastfreeze.integrations.peft: LoRA on the trainable suffix trains like PEFT + the seed snippet, saves a normal adapter; CLI configs are narrowed."""
from __future__ import annotations

import os

import pytest
import torch

peft = pytest.importorskip("peft")

from datasets import Dataset  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402

from fastfreeze import FreezeConfig, FreezeConfigError  # noqa: E402
from fastfreeze.integrations.peft import restrict_to_suffix, suffix_lora_kwargs  # noqa: E402
from tests._helpers import (assert_losses_close, lora_model, make_model, make_rows, pad_collator,  # noqa: E402
                            seed_snippet_freeze)
from tests.parity.harness import FFTrainer, RefTrainer, max_rel_diff, training_args  # noqa: E402

RTOL = 1e-5  # fp32, same ops both arms (see tests/parity/test_trainer_parity.py)
K = 2


def run(arm: str, out: str, freeze_config=None, steps: int = 8):
    model = lora_model()
    args = training_args(out, steps=steps)
    data = dict(train_dataset=Dataset.from_list(make_rows(32)), data_collator=pad_collator(pad_to=12))
    if arm == "ref":
        seed_snippet_freeze(model.get_base_model(), "llama", K)  # a no-op on top of PEFT's own freeze
        trainer = RefTrainer(model=model, args=args, **data)
    else:
        trainer = FFTrainer(model=model, args=args, freeze_config=freeze_config or FreezeConfig(num_frozen_layers=K),
                            **data)
    trainer.recorded = []
    trainer.train()
    return {"trainer": trainer, "model": model, "losses": list(trainer.recorded),
            "params": {n: p.detach().clone() for n, p in model.named_parameters()}}


@pytest.mark.parametrize("cache", [None, "memory"])
def test_lora_suffix_parity(cache, tmp_path):
    ref = run("ref", str(tmp_path / "ref"))
    ff = run("ff", str(tmp_path / "ff"), FreezeConfig(num_frozen_layers=K, cache=cache))
    assert len(ff["losses"]) == len(ref["losses"]) == 16
    assert_losses_close(ff["losses"], ref["losses"], rtol=RTOL)  # fp32, same ops in both arms (RTOL above)
    initial = {n: p.detach().clone() for n, p in lora_model().named_parameters()}
    trained = [n for n, p in ref["model"].named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)
    assert all(".layers.0." not in n and ".layers.1." not in n for n in trained)
    for name, p_ref in ref["params"].items():
        p_ff = ff["params"][name]
        if name in trained:
            assert max_rel_diff(p_ff, p_ref) <= RTOL, name
            if "lora_B" in name:  # B starts at zero, so a trained B is the proof the adapter learned
                assert not torch.equal(p_ref, initial[name]), name
        else:
            assert torch.equal(p_ff, p_ref) and torch.equal(p_ff, initial[name]), f"frozen {name} changed"
    if cache:
        summary = ff["trainer"].cache_summary()  # 32 rows, 16 micro-batches of 4 = two epochs
        assert summary.entries == 32 and summary.hits >= 32, summary
        assert ff["trainer"].prefix.prefix_calls == 8


def test_saved_adapter_is_a_normal_peft_adapter(tmp_path):
    ff = run("ff", str(tmp_path / "ff"), FreezeConfig(num_frozen_layers=K, cache="memory"), steps=4)
    out = str(tmp_path / "adapter")
    ff["trainer"].save_model(out)
    files = set(os.listdir(out))
    assert "adapter_config.json" in files and "adapter_model.safetensors" in files, files
    assert "model.safetensors" not in files  # the adapter only, not the base weights
    loaded = PeftModel.from_pretrained(make_model("llama"), out).eval()
    trained = ff["model"].eval()
    ids = torch.tensor([make_rows(1, seed=5)[0]["input_ids"]])
    with torch.no_grad():
        ref_logits = trained(input_ids=ids).logits
        got = loaded(input_ids=ids).logits
    assert torch.equal(got, ref_logits)  # same weights, same ops: bitwise
    assert not torch.equal(got, make_model("llama")(input_ids=ids).logits)  # and the adapter matters


def test_sft_trainer_peft_config_validated_and_matches(tmp_path):
    pytest.importorskip("trl")
    from tests.integrations.test_trl import assert_parity, run_sft

    # A placement that cannot be narrowed by itself is refused with the fix: an explicit
    # layers_to_transform over frozen blocks, a regular expression that matches them, the embedding.
    with pytest.raises(FreezeConfigError, match=r"includes frozen blocks \[0, 1\].*layers_to_transform=\[2, 3\]"):
        run_sft("ff", str(tmp_path / "bad"), peft_config=LoraConfig(r=4, target_modules=["q_proj"],
                                                                    layers_to_transform=[0, 1, 2, 3]))
    with pytest.raises(FreezeConfigError, match="frozen prefix.*regular expression"):
        run_sft("ff", str(tmp_path / "bad"), peft_config=LoraConfig(r=4, target_modules=r".*\.q_proj"))
    with pytest.raises(FreezeConfigError, match=r"embedding side: \['model.embed_tokens'\]"):
        run_sft("ff", str(tmp_path / "bad"), peft_config=LoraConfig(r=4, target_modules=["q_proj", "embed_tokens"]))
    good = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                **suffix_lora_kwargs(make_model("llama"), K))
    ref = run_sft("ref", str(tmp_path / "ref"), peft_config=LoraConfig(**good), steps=4)
    ff = run_sft("ff", str(tmp_path / "ff"), peft_config=LoraConfig(**good), steps=4)
    assert_parity(ff, ref)


def test_report_lists_adapter_modules_as_trainable():
    """With PEFT the base stays frozen, so the report names the adapter modules, not whole blocks."""
    peft = pytest.importorskip("peft")
    from fastfreeze import FreezeConfig, apply_freeze
    from tests._helpers import make_model

    model = make_model("llama")
    lora = peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], **suffix_lora_kwargs(model, 2))
    wrapped = peft.get_peft_model(model, lora)
    report = apply_freeze(wrapped, FreezeConfig(num_frozen_layers=2)).report
    assert report.trainable_modules and all("lora_" in name for name in report.trainable_modules)
    assert not any(".layers.0." in n or ".layers.1." in n for n in report.trainable_modules)


def _trl_cli_lora():
    """What TRL's CLI builds for `--use_peft --lora_target_modules q_proj v_proj` (lora_dropout 0: the
    prefix runs in eval mode by design, so parity is defined without dropout)."""
    pytest.importorskip("trl")
    from trl import ModelConfig, get_peft_config

    return get_peft_config(ModelConfig(use_peft=True, lora_target_modules=["q_proj", "v_proj"], lora_r=4,
                                       lora_alpha=8, lora_dropout=0.0))


def _adapter_modules(model):
    from fastfreeze._hf_compat import peft_adapter_types

    tuner_layer = peft_adapter_types()[0]
    return sorted(n.split("model.layers.", 1)[1] for n, m in model.named_modules() if isinstance(m, tuner_layer))


def test_restrict_to_suffix_narrows_cli_targets():
    model = make_model("llama")
    cli = _trl_cli_lora()
    narrowed, note = restrict_to_suffix(cli, model, K)
    assert narrowed.layers_to_transform == [2, 3] and narrowed.layers_pattern == "layers"
    assert set(narrowed.target_modules) == {"q_proj", "v_proj"} and cli.layers_to_transform is None  # a copy
    assert "blocks 0-1 are frozen" in note and "blocks 2-3 only" in note
    # PEFT's default targets (no --lora_target_modules) and "all-linear" are narrowed the same way.
    assert restrict_to_suffix(LoraConfig(r=4), model, K)[0].target_modules == {"q_proj", "v_proj"}
    all_linear = restrict_to_suffix(LoraConfig(r=4, target_modules="all-linear"), model, K)[0]
    assert all_linear.target_modules == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    # Nothing to do: already on the suffix, only outside the blocks (the head), or k = 0.
    suffix = LoraConfig(r=4, target_modules=["q_proj"], **suffix_lora_kwargs(model, K))
    assert restrict_to_suffix(suffix, model, K) == (suffix, None)
    head = LoraConfig(r=4, target_modules=["lm_head"])
    assert restrict_to_suffix(head, model, 4) == (head, None)
    assert restrict_to_suffix(cli, model, 0) == (cli, None)
    with pytest.raises(FreezeConfigError, match="no suffix block"):
        restrict_to_suffix(cli, model, 4)


def test_sft_cli_lora_goes_on_the_suffix_and_matches_the_seed_recipe(tmp_path, caplog):
    """TRL CLI LoRA (every block) + FreezeConfig(k=2): adapters only on blocks 2-3, a warning says so, and
    training matches (a) plain SFTTrainer with the same LoRA on blocks 2-3, (b) the recipe a TRL user
    would write by hand: LoRA on every block + the seed snippet freezing blocks 0-1 (adapters included)."""
    pytest.importorskip("trl")
    import logging

    from tests.integrations.test_trl import FFSFT, RefSFT, _tokenizer, assert_parity, run_sft, sft_args, sft_dataset

    caplog.set_level(logging.WARNING, logger="fastfreeze")
    cli = _trl_cli_lora()
    ff = run_sft("ff", str(tmp_path / "ff"), peft_config=cli, steps=4)
    notes = [r.getMessage() for r in caplog.records if r.name == "fastfreeze.integrations.trl"]
    assert len(notes) == 1 and "layers_to_transform=[2, 3]" in notes[0]
    assert cli.layers_to_transform is None  # the caller's config is left as it was
    model = ff["trainer"].model
    assert _adapter_modules(model) == ["2.self_attn.q_proj", "2.self_attn.v_proj", "3.self_attn.q_proj",
                                       "3.self_attn.v_proj"]
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n and (".layers.2." in n or ".layers.3." in n) for n in trained)

    # (a) the same LoRA written by hand for the suffix, plain SFTTrainer: same adapter init, same run.
    suffix = LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                        **suffix_lora_kwargs(make_model("llama"), K))
    ref = run_sft("ref", str(tmp_path / "ref"), peft_config=suffix, steps=4)
    assert_parity(ff, ref)

    # (b) LoRA on every block, then the seed snippet on the wrapped model (blocks 0-1 and their
    # adapters frozen; a zero-initialised lora_B there adds exactly 0). The adapter inits differ from
    # the narrowed run (more modules draw from the RNG), so the fastfreeze arm starts from the
    # reference's initial suffix adapters.
    args = sft_args(str(tmp_path / "seed"), steps=4)
    torch.manual_seed(args.seed)
    everywhere = get_peft_model(make_model("llama"), _trl_cli_lora())
    seed_snippet_freeze(everywhere.get_base_model(), "llama", K)
    start = {n: p.detach().clone() for n, p in everywhere.named_parameters() if "lora_" in n}
    data = dict(train_dataset=sft_dataset(), eval_dataset=sft_dataset(8, seed=9), processing_class=_tokenizer())
    seed_ref = RefSFT(model=everywhere, args=args, **data)
    ff_b = FFSFT(model=make_model("llama"), args=sft_args(str(tmp_path / "ffb"), steps=4), peft_config=_trl_cli_lora(),
                 freeze_config=FreezeConfig(num_frozen_layers=K), **data)
    with torch.no_grad():
        for n, p in ff_b.model.named_parameters():
            if "lora_" in n:
                p.copy_(start[n])
    arms = {}
    for name, trainer in (("ref", seed_ref), ("ff", ff_b)):
        trainer.recorded = []
        trainer.train()
        # Base weights under an adapter are called "...q_proj.base_layer.weight": compare by plain name.
        arms[name] = {"trainer": trainer, "losses": list(trainer.recorded),
                      "params": {n.replace(".base_layer", ""): p.detach().clone()
                                 for n, p in trainer.model.named_parameters()}}
    assert len(arms["ff"]["losses"]) == len(arms["ref"]["losses"]) == 8
    assert_losses_close(arms["ff"]["losses"], arms["ref"]["losses"], rtol=RTOL)  # fp32, same ops (RTOL above)
    for n, p in arms["ff"]["params"].items():
        p_ref = arms["ref"]["params"][n]
        if "lora_" in n:
            assert max_rel_diff(p, p_ref) <= RTOL, n
            if "lora_B" in n:
                assert not torch.equal(p, start[n]), f"{n} did not train"
        else:
            assert torch.equal(p, p_ref), n
    prefix_adapters = [n for n in arms["ref"]["params"] if "lora_" in n and (".layers.0." in n or ".layers.1." in n)]
    assert prefix_adapters and all(torch.equal(arms["ref"]["params"][n], start[n]) for n in prefix_adapters)


def test_sft_with_peft_in_both_defaults_matches_trl(defaults, tmp_path):
    """LoRA on the trainable blocks through SFTTrainer's peft_config, in the CPU and the GPU defaults:
    losses, TRL's metrics and the adapters' first-step gradients equal plain TRL + PEFT's (tests/integrations/test_trl.py)."""
    pytest.importorskip("trl")
    from tests.integrations.test_trl import Grads, assert_sft_gpu_parity, run_sft

    lora = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                **suffix_lora_kwargs(make_model("llama"), K))
    extra = dict(steps=4, gradient_accumulation_steps=1, logging_steps=1)
    ref = run_sft("ref", str(tmp_path / "ref"), peft_config=LoraConfig(**lora), callbacks=[Grads()], **extra)
    ff = run_sft("ff", str(tmp_path / "ff"), peft_config=LoraConfig(**lora), callbacks=[Grads()], **extra)
    assert all("lora_" in name for name in ff["grads"].steps[0])
    assert_sft_gpu_parity(ff, ref, defaults)
