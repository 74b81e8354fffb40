"""FastFreezeSFTTrainer trains exactly like TRL's SFTTrainer + the seed snippet, with SFT's defaults."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from fastfreeze import FreezeConfig, FreezeConfigError  # noqa: E402
from fastfreeze._hf_compat import trl_fused_lm_head  # noqa: E402
from fastfreeze.data.tokenize import build_word_tokenizer  # noqa: E402
from fastfreeze.integrations.trl import FastFreezeSFTTrainer  # noqa: E402
from tests._helpers import VOCAB, assert_losses_close, make_model, seed_snippet_freeze  # noqa: E402
from tests.parity.harness import max_rel_diff  # noqa: E402

# fp32 on CPU, same ops and data in both arms; see tests/parity/test_trainer_parity.py.
RTOL = 1e-5
K = 2
WORDS = [f"w{i}" for i in range(40)]


def _tokenizer():
    tok = build_word_tokenizer(Dataset.from_dict({"text": [" ".join(WORDS)]}))
    assert len(tok) <= VOCAB  # the tiny models' vocabulary
    return tok


def sft_dataset(n: int = 24, seed: int = 3) -> Dataset:
    """Prompt-completion rows: SFTTrainer defaults to completion-only loss for this format."""
    g = torch.Generator().manual_seed(seed)

    def words(lo, hi):
        t = int(torch.randint(lo, hi + 1, (1,), generator=g))
        return " ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (t,), generator=g))

    return Dataset.from_list([{"prompt": words(3, 7), "completion": " " + words(2, 5)} for _ in range(n)])


class _Record:
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if model.training:
            self.recorded.append((loss[0] if return_outputs else loss).detach().double().item())
        return loss


class RefSFT(_Record, SFTTrainer):
    pass


class FFSFT(_Record, FastFreezeSFTTrainer):
    pass


def sft_args(out: str, steps: int = 6, **extra) -> SFTConfig:
    # SFTConfig's own defaults otherwise: activation checkpointing on, completion-only loss for
    # prompt-completion data, its collator. bf16 is its default on GPUs; fp32 here for a tight tolerance.
    kw = dict(output_dir=out, max_steps=steps, per_device_train_batch_size=4, per_device_eval_batch_size=4,
              gradient_accumulation_steps=2, learning_rate=1e-3, logging_steps=2, save_strategy="no",
              report_to=[], seed=0, data_seed=0, use_cpu=True, bf16=False, dataloader_num_workers=0,
              disable_tqdm=True, dataset_num_proc=None, max_length=64)
    kw.update(extra)
    return SFTConfig(**kw)


def run_sft(arm: str, out: str, freeze_config=None, model=None, peft_config=None, evaluate=False, callbacks=None,
            **extra):
    model = model if model is not None else make_model("llama")
    tok = _tokenizer()
    args = sft_args(out, **extra)
    common = dict(model=model, args=args, train_dataset=sft_dataset(), eval_dataset=sft_dataset(8, seed=9),
                  processing_class=tok, callbacks=callbacks)
    if arm == "ref":
        if peft_config is None:
            seed_snippet_freeze(model, "llama", K)
        trainer = RefSFT(**common, peft_config=peft_config)
    else:
        trainer = FFSFT(**common, peft_config=peft_config,
                        freeze_config=freeze_config or FreezeConfig(num_frozen_layers=K))
    trainer.recorded = []
    trainer.train()
    out = {"trainer": trainer, "losses": list(trainer.recorded), "grads": (callbacks or [None])[0],
           "params": {n: p.detach().clone() for n, p in trainer.model.named_parameters()}}
    if evaluate:
        out["eval_metrics"] = trainer.evaluate()
        out["eval_loss"] = out["eval_metrics"]["eval_loss"]
    return out


def assert_parity(ff, ref, initial=None, rtol=RTOL):
    assert_losses_close(ff["losses"], ref["losses"], rtol=rtol)  # each caller's rtol (RTOL: fp32, same ops)
    ref_model = ref["trainer"].model
    for name, p_ref in ref["params"].items():
        if ref_model.get_parameter(name).requires_grad:
            assert max_rel_diff(ff["params"][name], p_ref) <= rtol, name
            if initial is not None:
                assert not torch.equal(p_ref, initial[name]), f"{name} should have trained"
        else:
            assert torch.equal(ff["params"][name], p_ref), f"frozen {name} changed"
            if initial is not None:
                assert torch.equal(p_ref, initial[name]), f"frozen {name} changed"


def test_sft_parity_with_defaults(tmp_path):
    ref = run_sft("ref", str(tmp_path / "ref"), evaluate=True)
    ff = run_sft("ff", str(tmp_path / "ff"), evaluate=True)
    trainer = ff["trainer"]
    assert trainer.args.gradient_checkpointing, "SFTConfig's default (activation checkpointing) must be on"
    assert trainer.completion_only_loss, "prompt-completion data: completion-only loss by default"
    assert_parity(ff, ref, initial=make_model("llama").state_dict())
    assert abs(ff["eval_loss"] - ref["eval_loss"]) <= RTOL * abs(ref["eval_loss"])
    # SFTTrainer's own eval metrics are there, fastfreeze's training counters are not (same keys as the reference).
    assert "eval_mean_token_accuracy" in ff["eval_metrics"] and set(ff["eval_metrics"]) == set(ref["eval_metrics"])


def test_sft_memory_cache_two_epochs(tmp_path):
    # 24 rows / (4 x 2) = 3 optimizer steps per epoch: 6 steps = 2 epochs, the second served by the cache.
    ref = run_sft("ref", str(tmp_path / "ref"), pad_to_multiple_of=16)
    ff = run_sft("ff", str(tmp_path / "ff"), freeze_config=FreezeConfig(num_frozen_layers=K, cache="memory"),
                 pad_to_multiple_of=16)
    assert_parity(ff, ref)
    summary = ff["trainer"].cache_summary()
    assert summary.entries == 24 and summary.hits >= 24, summary
    assert ff["trainer"].prefix.prefix_calls == 6  # epoch 1 only: 6 micro-batches
    # SFTTrainer.log adds its metrics and FreezeMixin.log ours: both reach the logs report_to receives.
    last = [h for h in ff["trainer"].state.log_history if "loss" in h][-1]
    assert "mean_token_accuracy" in last and last["fastfreeze/cache_hits"] > 0 and last["fastfreeze/cache_entries"] == 24


def test_sft_padding_free_cache_keys_packed_rows(tmp_path):
    """Padding-free batches come as one flattened row with position_ids and no attention_mask."""
    common = dict(padding_free=True, max_length=None, per_device_train_batch_size=1, gradient_accumulation_steps=1,
                  steps=48)
    ref = run_sft("ref", str(tmp_path / "ref"), **common)
    ff = run_sft("ff", str(tmp_path / "ff"), freeze_config=FreezeConfig(num_frozen_layers=K, cache="memory"),
                 **common)
    batch = ff["trainer"].data_collator([ff["trainer"].train_dataset[i] for i in range(2)])
    assert "attention_mask" not in batch and batch["position_ids"].shape == batch["input_ids"].shape == (1, batch["input_ids"].numel())
    assert_parity(ff, ref)
    # one example per batch: 24 entries in epoch 1, all hits in epoch 2
    summary = ff["trainer"].cache_summary()
    assert summary.entries == 24 and summary.hits >= 24, summary


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flash-attn needs a CUDA GPU")
def test_flash_attention_2_padding_free(tmp_path):
    """flash_attention_2 with padding-free rows, the case it exists for: same as SDPA within bf16 noise,
    and a cache built under one attention kernel is never served to the other (different fingerprint)."""
    pytest.importorskip("flash_attn")
    from fastfreeze.cache.wiring import compute_fingerprint

    runs = {}
    for attn in ("sdpa", "flash_attention_2"):
        model = make_model("llama", attn=attn, dtype=torch.bfloat16).cuda()
        runs[attn] = run_sft("ff", str(tmp_path / attn), model=model, padding_free=True, max_length=None,
                             freeze_config=FreezeConfig(num_frozen_layers=K, cache="memory"), use_cpu=False,
                             bf16=True, per_device_train_batch_size=1, gradient_accumulation_steps=1, steps=8)
    fps = {a: compute_fingerprint(r["trainer"].model, r["trainer"].prefix, r["trainer"].freeze_config, "torch")
           for a, r in runs.items()}
    assert fps["sdpa"] != fps["flash_attention_2"]
    # bf16 (8-bit mantissa), two attention kernels summing differently
    assert_losses_close(runs["flash_attention_2"]["losses"], runs["sdpa"]["losses"], rtol=2e-2)


def test_model_id_with_quantization_config_reaches_the_load(tmp_path, monkeypatch):
    """FastFreezeSFTTrainer(model=<id>, quantization_config=q) loads the id with q, as SFTTrainer does."""
    import fastfreeze.integrations.trl as fftrl

    seen = {}

    def load(name, args, quantization_config=None):
        seen["q"] = quantization_config
        return make_model("llama")

    monkeypatch.setattr(fftrl, "trl_load_model", load)
    q = object()
    FastFreezeSFTTrainer(model="some/id", args=sft_args(str(tmp_path)), train_dataset=sft_dataset(8),
                         processing_class=_tokenizer(), quantization_config=q,
                         freeze_config=FreezeConfig(num_frozen_layers=K))
    assert seen["q"] is q


# ------------------------------------------------------------------ the GPU defaults (issue 29)
# Losses and TRL's metrics, GPU defaults vs plain SFTTrainer: the Triton kernels reorder fp32 sums
# (<= 2e-7 relative per micro-batch, measured), so 2e-6 over 4 steps; token accuracy is a count: equal.
# Trainable gradients of the first step (same weights in both arms), elementwise: measured <= 6e-7 of the
# largest element (fp32 reordering), 5e-6 with margin. After that, AdamW turns last-bit noise on a ~0
# gradient into a step of ~lr (measured: weights 2.4e-5 relative apart after 4 steps, later gradients
# 9e-5), so later steps are compared through their losses and gradient norms only.
GPU_RTOL = 2e-6
GRAD_RTOL = 5e-6


class Grads(TrainerCallback):
    """The trainable parameters' gradients just before each optimizer step (name -> list over steps)."""

    def __init__(self):
        self.steps = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.steps.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})


def _logged(trainer, keys=("loss", "entropy", "mean_token_accuracy", "grad_norm")):
    return [{k: row[k] for k in keys} for row in trainer.state.log_history if "loss" in row]


def assert_sft_gpu_parity(ff, ref, defaults):
    """`defaults`' kernel set and loss head were used, and losses, TRL's entropy / token accuracy and
    gradient norms of every logged step match plain TRL."""
    report = ff["trainer"].freeze_report
    assert report.kernel_set == ("triton" if defaults == "gpu" else "torch")
    if defaults == "gpu":  # one fused head, and the report names it
        assert "Training loss: TRL's fused LM head" in str(report)
        assert trl_fused_lm_head(ff["trainer"].freeze_runtime.target)  # TRL's forward, not ours over it
    assert_losses_close(ff["losses"], ref["losses"], rtol=GPU_RTOL)
    for name, p in ref["params"].items():
        if not ref["trainer"].model.get_parameter(name).requires_grad:
            assert torch.equal(ff["params"][name], p), f"frozen {name} changed"
    g_ff, g_ref = ff["grads"].steps, ref["grads"].steps
    assert len(g_ff) == len(g_ref) == len(ff["losses"]) and set(g_ff[0]) == set(g_ref[0])
    for name, g in g_ref[0].items():  # the first step's: both arms still have the same weights
        assert max_rel_diff(g_ff[0][name], g) <= GRAD_RTOL, name
    got, want = _logged(ff["trainer"]), _logged(ref["trainer"])
    assert len(got) == len(want) == len(ff["losses"])
    for g, w in zip(got, want):
        assert g["mean_token_accuracy"] == w["mean_token_accuracy"], (g, w)
        for key in ("loss", "entropy", "grad_norm"):
            assert abs(g[key] - w[key]) <= GPU_RTOL * abs(w[key]), (key, g, w)


SFT_MODES = {"padded": {}, "padding_free": dict(padding_free=True, max_length=None),
             "packing": dict(packing=True, max_length=16)}


@pytest.mark.parametrize("mode", list(SFT_MODES))
def test_sft_in_both_defaults_matches_trl_and_its_metrics(defaults, mode, tmp_path):
    """Issue 29's case: padded batches of 4, 4 steps, lr 1e-3, each step logged; padding-free (one
    flattened row of 4 examples) and packed (documents packed into rows of 16 tokens) likewise."""
    extra = dict(steps=4, gradient_accumulation_steps=1, logging_steps=1, **SFT_MODES[mode])
    ref = run_sft("ref", str(tmp_path / "ref"), callbacks=[Grads()], **extra)
    ff = run_sft("ff", str(tmp_path / "ff"), callbacks=[Grads()], **extra)
    assert_sft_gpu_parity(ff, ref, defaults)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled Triton kernels and bf16 autocast need CUDA")
def test_sft_on_cuda_in_the_gpu_defaults_matches_trl(tmp_path):
    """SFTConfig's GPU defaults (bf16) with FastFreezeSFTTrainer's (compiled Triton kernels, TRL's fused head):
    losses and TRL's metrics against plain TRL under the same autocast. Run by benchmarks/gpu/suite.sh."""
    from fastfreeze.verify.report import Tolerances

    common = dict(steps=4, gradient_accumulation_steps=1, logging_steps=1, use_cpu=False, bf16=True)
    ref = run_sft("ref", str(tmp_path / "ref"), model=make_model("llama").cuda(), **common)
    ff = run_sft("ff", str(tmp_path / "ff"), model=make_model("llama").cuda(), **common)
    report = ff["trainer"].freeze_report
    assert report.kernel_set == "triton" and "Training loss: TRL's fused LM head" in str(report)
    rtol = Tolerances.for_dtype("bf16", len(ref["losses"])).loss_rtol  # fastfreeze verify's bf16 rule
    assert_losses_close(ff["losses"], ref["losses"], rtol=rtol)
    for g, w in zip(_logged(ff["trainer"]), _logged(ref["trainer"])):
        assert abs(g["entropy"] - w["entropy"]) <= rtol * abs(w["entropy"]), (g, w)
        assert abs(g["mean_token_accuracy"] - w["mean_token_accuracy"]) <= 0.05, (g, w)  # bf16: 2 of ~40 tokens' argmax may flip
