"""DeepSpeed ZeRO-1/2/3 through FastFreezeTrainer and FastFreezeSFTTrainer on 2 CPU ranks (gloo): the same run as plain Trainer / SFTTrainer + DeepSpeed.

One torchrun launch (tests/integrations/ds_worker.py) runs every scenario in turn, each built as a
user's script builds it: `TrainingArguments(deepspeed=...)`, then `from_pretrained` (ZeRO-3: inside
zero.Init, so each rank starts from empty placeholders), then the trainer. Against plain Trainer with
the seed-snippet freeze and the same DeepSpeed config: the same losses at every step, the same trained
weights and the frozen weights unchanged, without a cache, with a disk cache both ranks share and with
a memory cache per rank, and resumed from a DeepSpeed checkpoint; ZeRO-1 without a cache; and
FastFreezeSFTTrainer against TRL's SFTTrainer (its defaults: its collator, completion-only loss,
activation checkpointing) under ZeRO-2 and ZeRO-3; and the GPU defaults (kernels="triton", interpreted,
with the fused loss) under ZeRO-3, within the Triton-vs-torch bound. Each check first asserts that the
engine really ran the stage and that the data parallelism is real (each rank trains on its own half).
"""
from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch
import transformers

from datasets import Dataset

from fastfreeze import FastFreezeTrainer, FreezeConfig
from fastfreeze.kernels import ENV_SWITCH
from fastfreeze.runtime import HUB_KERNELS_NOTE, ZERO3_AT_LOAD_NOTE, ZERO3_ENGINE_NOTE, ZERO3_KERNELS_NOTE
from tests._helpers import assert_losses_close, make_model, make_rows
from tests.integrations.ds_worker import K, ROWS, SCENARIOS, SFT_ROWS, SFT_SCENARIOS, SFT_STEPS, STEPS, TRITON_OPS
from tests.integrations.test_distributed import launch_or_fail
from tests.parity.test_triton_parity import LOSS_RTOL
from tests.parity.harness import training_args

pytestmark = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                reason="deepspeed is an optional extra: pip install -e '.[deepspeed]'")
WORKER = os.path.join(os.path.dirname(__file__), "ds_worker.py")
STEPS_PER_EPOCH = STEPS // 2


def _steps_rows(scenario: str) -> tuple[int, int]:
    return (SFT_STEPS, SFT_ROWS) if "_sft_" in scenario else (STEPS, ROWS)


def _ref(scenario: str) -> str:
    """The plain counterpart with the same DeepSpeed config: SFTTrainer for the SFT arms, else Trainer."""
    return scenario[:3] + ("sft_ref" if "_sft_" in scenario else "ref")


@pytest.fixture(scope="module")
def ds_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ds"))
    make_model("llama").save_pretrained(os.path.join(out, "tiny"))
    with pytest.MonkeyPatch.context() as env:  # for the launch only: DeepSpeed's CPU accelerator, gloo
        env.setenv("DS_ACCELERATOR", "cpu")
        # The ranks run on CPU: z3_triton's kernels interpreted, also where this process sees a GPU. The other
        # arms stay in the CPU defaults (torch ops, compared bitwise) in every session, the GPU-defaults one too.
        env.setenv("TRITON_INTERPRET", "1")
        env.delenv(ENV_SWITCH, raising=False)
        launch_or_fail(WORKER, out, ",".join(SCENARIOS))
    facts = {s: [json.load(open(os.path.join(out, f"{s}.rank{r}.json"))) for r in (0, 1)] for s in SCENARIOS}
    weights = {s: torch.load(os.path.join(out, f"{s}.pt")) for s in SCENARIOS}
    return out, facts, weights


def _scenarios(stage: int, prefix: str = "") -> list[str]:
    return [s for s in SCENARIOS if s.startswith(f"z{stage}_{prefix}")]


@pytest.fixture(scope="module")
def reference(ds_run, tmp_path_factory):
    """The tiny model as saved (what every run starts from), its trainable names, and the cache
    fingerprint of one process training it whole, without DeepSpeed, in the CPU defaults as the cached
    arms ran (the fingerprint names the kernel set)."""
    tiny = os.path.join(ds_run[0], "tiny")
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny, attn_implementation="eager")
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = training_args(str(tmp_path_factory.mktemp("one")), steps=STEPS, grad_accum=1)
    with pytest.MonkeyPatch.context() as env:
        env.delenv(ENV_SWITCH, raising=False)
        one = FastFreezeTrainer(model=model, args=args, train_dataset=Dataset.from_list(make_rows(ROWS)),
                                freeze_config=FreezeConfig(num_frozen_layers=K, cache="memory"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    counts = [one.freeze_report.frozen_params, one.freeze_report.trainable_params]
    return {"initial": initial, "trainable": trainable, "fingerprint": one.prefix_cache.cache.fingerprint,
            "counts": counts}


def test_deepspeed_really_ran_each_stage_on_two_ranks(ds_run):
    _, facts, _ = ds_run
    for s in SCENARIOS:
        stage = int(s[1])
        for r in facts[s]:
            assert (r["engine"], r["zero_stage"], r["world_size"]) == ("DeepSpeedEngine", stage, 2), (s, r["rank"])
            # ZeRO-3: from_pretrained ran inside zero.Init (placeholders at construction), and each rank
            # still holds only its partition of the frozen weights after training.
            assert r["partitioned_at_load"] is (stage == 3), s
            if stage == 3:
                assert 0 < r["frozen_partition_numel"] < 0.6 * r["prefix_numel"], (s, r)


def test_each_rank_trains_on_its_own_half_of_the_data(ds_run):
    """The data parallelism is real: in every epoch the two ranks' batches are disjoint and cover the dataset."""
    _, facts, _ = ds_run
    for s in SCENARIOS:
        if s == "z3_resume":
            continue  # resumed mid-run: only epoch 2's batches
        steps, n_rows = _steps_rows(s)
        r0, r1 = (r["batches"] for r in facts[s])
        assert len(r0) == len(r1) == steps, s
        for epoch in range(2):
            part = slice(epoch * steps // 2, (epoch + 1) * steps // 2)
            rows0 = {row for batch in r0[part] for row in map(tuple, batch)}
            rows1 = {row for batch in r1[part] for row in map(tuple, batch)}
            assert not rows0 & rows1 and len(rows0 | rows1) == n_rows, (s, epoch)


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if not s.endswith(("_ref", "_triton"))])
def test_same_losses_and_weights_as_plain_trainer_with_deepspeed(ds_run, reference, scenario):
    """Bitwise: both arms run the same ops in the same order on the same rows on each rank (the prefix
    under no_grad computes the same values, a cached boundary is those values), and DeepSpeed reduces
    the same gradients the same way; measured exactly equal on every scenario, so no tolerance."""
    _, facts, weights = ds_run
    ref_name = _ref(scenario)
    assert_losses_close(facts[scenario][0]["losses"], facts[ref_name][0]["losses"], rtol=0.0)
    assert len(facts[scenario][0]["losses"]) == _steps_rows(scenario)[0]
    got, ref, initial = weights[scenario], weights[ref_name], reference["initial"]
    assert set(got) == set(ref) == set(initial)
    for name in ref:
        assert torch.equal(got[name], ref[name]), name
        trained = not torch.equal(ref[name], initial[name])
        assert trained is (name in reference["trainable"]), f"{name}: frozen weights must stay as loaded"


def test_zero3_triton_kernels_and_fused_loss_train_like_plain_trainer(ds_run, reference):
    """kernels="triton" with the fused loss (the GPU defaults) under ZeRO-3 partitioned at load, against plain
    Trainer + the same ZeRO-3 config (torch ops). The kernels' install check gathers the module it checks;
    in training every step called every kernel (none dropped by transformers' hub re-kernelization at
    train(): from_pretrained turns it on) and every kernel call got its module's whole weight (the engine's hooks gathered it; the LM
    head's weight, read by the fused loss after the head ran, through DeepSpeed's external-parameter
    discovery). Losses within the GPU defaults' 2e-6 (tests/parity/test_triton_parity.py: fp32, the
    kernels reduce in another order); trained weights within 2e-6 of each tensor's largest value (AdamW,
    lr 1e-3, 8 steps: measured <= 1.9e-7, losses <= 2.2e-7; a wrong kernel moves them by ~lr); frozen weights bitwise."""
    _, facts, weights = ds_run
    for r in facts["z3_triton"]:
        assert ZERO3_KERNELS_NOTE in r["notes"] and any(n.startswith("kernels=triton (llama)") for n in r["notes"])
        # Every step: the 9 RMSNorms (2 per block, the final norm), the 4 SwiGLU MLPs, the one fused head.
        assert r["triton_step_calls"] == [dict(zip(TRITON_OPS, (9, 4, 1)))] * STEPS, r["triton_step_calls"]
        assert r["triton_partial_weight_calls"] == 0
        assert (HUB_KERNELS_NOTE in r["notes"]) is r["hub_kernels_at_load"]  # on at load (the lock's versions): now off
    assert_losses_close(facts["z3_triton"][0]["losses"], facts["z3_ref"][0]["losses"], rtol=LOSS_RTOL)
    assert len(facts["z3_triton"][0]["losses"]) == STEPS
    got, ref, initial = weights["z3_triton"], weights["z3_ref"], reference["initial"]
    assert set(got) == set(ref) == set(initial)
    for name in ref:
        if name in reference["trainable"]:
            assert not torch.equal(ref[name], initial[name]), f"{name} should have trained"
            assert (got[name] - ref[name]).abs().max() <= LOSS_RTOL * ref[name].abs().max(), name
        else:
            assert torch.equal(got[name], initial[name]) and torch.equal(ref[name], initial[name]), name


def test_frozen_parameters_get_no_optimizer_state_no_master_copy_no_gradient(ds_run, reference):
    _, facts, _ = ds_run
    n_trainable = sum(reference["initial"][n].numel() for n in reference["trainable"])
    for s in SCENARIOS:
        ranks = facts[s]
        assert sum(r["fp32_partition_numel"] for r in ranks) == n_trainable, s  # fp32 master: trainable only, split
        for r in ranks:
            assert set(r["optimizer_params"]) == reference["trainable"], s
            assert r["moment_bytes"] == 2 * 4 * r["fp32_partition_numel"], s  # fp32 exp_avg + exp_avg_sq
            assert r["frozen_with_grad"] == [], s


def test_zero3_prefix_is_gathered_one_module_at_a_time(ds_run, reference):
    """At no point during training are more prefix weights whole than the largest single module's.
    Not plain SFTTrainer's: its activation checkpointing recomputes the frozen blocks in backward, and
    DeepSpeed held the whole prefix at once there (measured; see the SFT test below)."""
    _, facts, _ = ds_run
    largest = max(t.numel() for n, t in reference["initial"].items() if n not in reference["trainable"])
    for s in [s for s in _scenarios(3) if s != "z3_sft_ref"]:
        for r in facts[s]:
            assert 0 < r["max_prefix_whole"] <= largest < r["prefix_numel"], (s, r["max_prefix_whole"])


def test_cache_skips_the_prefix_and_its_gathers_once_every_rank_hits(ds_run):
    """Disk cache shared by both ranks: epoch 1 computes and stores, epoch 2 is all hits, and the prefix
    modules are not called at all (no ZeRO-3 gather)."""
    _, facts, _ = ds_run
    for s in ("z2_disk", "z3_disk"):
        for r in facts[s]:
            cold, warm = r["prefix_leaf_calls"][:STEPS_PER_EPOCH], r["prefix_leaf_calls"][STEPS_PER_EPOCH:]
            assert all(c > 0 for c in cold) and all(c == 0 for c in warm), (s, r["prefix_leaf_calls"])
            assert r["cache"] == {"hits": 8, "misses": 8, "entries": 16} and r["prefix_calls"] == STEPS_PER_EPOCH


def test_zero3_a_rank_that_hits_while_another_misses_still_runs_its_prefix(ds_run):
    """Memory cache per rank: in epoch 2 a rank finds some of its rows cached while the other rank's are
    not; ZeRO-3 gathers per leaf module, so the hitting rank runs its prefix for real (a block standing
    in with a placeholder would skip its submodules' gathers): both ranks call the same prefix modules
    on every step, and the run still equals plain Trainer (above)."""
    _, facts, _ = ds_run
    r0, r1 = facts["z3_memory"]
    assert r0["prefix_leaf_calls"] == r1["prefix_leaf_calls"] and all(c > 0 for c in r0["prefix_leaf_calls"])
    assert r0["cache"]["hits"] + r1["cache"]["hits"] > 0, (r0["cache"], r1["cache"])


def test_zero3_fingerprint_equals_the_whole_models(ds_run, reference):
    _, facts, _ = ds_run
    for s in ("z2_disk", "z3_disk", "z3_memory"):
        for r in facts[s]:
            assert r["fingerprint"] == reference["fingerprint"], s


def test_zero3_report_says_where_the_split_was_proven(ds_run, reference):
    """ZeRO-3 partitioned at load: frozen at construction from names and ds_numel, trace and probe at
    train start under the engine; ZeRO-2 (whole weights on CPU): everything at construction."""
    _, facts, _ = ds_run
    for s in [s for s in ("z3_ff", "z3_disk", "z3_sft_ff") if s in SCENARIOS]:
        for r in facts[s]:
            assert not r["completed_at_init"] and r["probe"], s
            assert r["counts"] == reference["counts"], s  # from ds_numel: the whole model's counts
            assert r["notes"][:2] == [ZERO3_AT_LOAD_NOTE, ZERO3_ENGINE_NOTE], r["notes"]
    assert all(r["completed_at_init"] and r["probe"] for s in SCENARIOS if s in ("z1_ff", "z2_ff", "z2_sft_ff")
               for r in facts[s])


def test_resume_from_a_deepspeed_checkpoint_checks_the_freeze(ds_run):
    """z3_ff saved DeepSpeed checkpoints with the freeze config beside them; resuming at step 4 gives
    the uninterrupted run (checked above against plain Trainer); another freeze (k=1) is refused."""
    _, facts, _ = ds_run
    assert all(r["saved_config"] for r in facts["z3_ff"])
    for r in facts["z3_resume"]:
        assert r["refused_other_k"].startswith("Cannot resume") and "'num_frozen_layers': 1" in r["refused_other_k"]
        assert r["prefix_leaf_calls"] and len(r["prefix_leaf_calls"]) == STEPS - 4


@pytest.mark.skipif(not SFT_SCENARIOS, reason="trl is an optional extra: pip install -e '.[trl]'")
def test_sft_arms_ran_trls_trainer_with_its_defaults(ds_run):
    """The SFT arms really ran TRL's trainer (SFTConfig's activation checkpointing on), under ZeRO-2 and -3.
    Plain SFTTrainer recomputes the frozen blocks in backward (more prefix module calls per step);
    FastFreezeSFTTrainer runs each prefix module once per step, as FastFreezeTrainer does."""
    _, facts, _ = ds_run
    for s in SFT_SCENARIOS:
        want = "SFTTrainer" if s.endswith("_ref") else "FastFreezeSFTTrainer"
        assert all(r["trainer"] == want and r["gradient_checkpointing"] for r in facts[s]), s
    assert {s[:2] for s in SFT_SCENARIOS} == {"z2", "z3"}
    once = facts["z2_ff"][0]["prefix_leaf_calls"][0]
    for stage in (2, 3):
        ff, ref = facts[f"z{stage}_sft_ff"][0]["prefix_leaf_calls"], facts[f"z{stage}_sft_ref"][0]["prefix_leaf_calls"]
        assert all(c == once for c in ff) and all(c > once for c in ref), (stage, ff, ref)
