"""FSDP2 through FastFreezeTrainer on 2 CPU ranks (gloo): really sharded, same weights as one process, no prefix all-gather when cached.

accelerate enables FSDP only on accelerator devices, so tests/integrations/fsdp_worker.py builds the
Trainer a GPU user builds and marks accelerate's state FSDP through tests/integrations/_fsdp_cpu.py
(when a release moves a name it relies on, these tests skip with its message and
test_fsdp_cpu_shim.py fails); every check below first asserts that FSDP2 really ran (DTensor parameters, `is_fsdp_enabled`), so a silent fall-back
to DDP fails. One launch runs four set-ups: no cache, a memory cache built before training on each
rank, one built on rank 0 only (rank 0 hits while rank 1 computes: rank 0 must still join the prefix
all-gathers, or the launch deadlocks), and a disk cache both ranks share and fill lazily in epoch 1;
then the same without a cache and with the disk cache under FSDP RAM-efficient loading, rank 1 holding
its model on `meta` until accelerate fills it from rank 0 at train start (docs/placement.md), and
with the Triton kernels (interpreted) swapped in on the sharded model at train start.
"""
from __future__ import annotations

import json
import os

import pytest
import torch
import transformers

from fastfreeze import FastFreezeTrainer, FreezeConfig
from tests.integrations import _fsdp_cpu
from tests.integrations.fsdp_worker import K, SCENARIOS, STEPS, make_trainer
from tests.integrations.test_distributed import launch_or_fail
from tests.parity.harness import max_rel_diff

# fp32. Both runs compute each row's forward identically (per-rank batches and the single batch are
# padded to one width); FSDP averages the two ranks' gradients with a reduce-scatter, which orders
# the fp32 sums differently from one batch-4 backward; AdamW turns that into ~1e-7 relative
# differences (measured 1.3e-7 here, every scenario). A wrong global batch (2 instead of 4) gives
# 5.8e-2 (asserted > 100 x RTOL below).
RTOL = 1e-5
WORKER = os.path.join(os.path.dirname(__file__), "fsdp_worker.py")
STEPS_PER_EPOCH = STEPS // 2


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    moved = _fsdp_cpu.problems()
    if moved:  # test_fsdp_cpu_shim.py fails with the same message
        pytest.skip(_fsdp_cpu.report(moved))
    out = str(tmp_path_factory.mktemp("fsdp"))
    launch_or_fail(WORKER, out, ",".join(SCENARIOS))
    stats = {s: [json.load(open(os.path.join(out, f"{s}.rank{r}.json"))) for r in (0, 1)] for s in SCENARIOS}
    params = {s: torch.load(os.path.join(out, f"{s}.pt")) for s in SCENARIOS}
    return out, stats, params


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """One process, no FSDP; per-device batch 4 (= 2 ranks x 2) and, for the negative check, 2."""
    out = {}
    for per_device in (4, 2):
        t = make_trainer(str(tmp_path_factory.mktemp(f"single{per_device}")), FreezeConfig(num_frozen_layers=K),
                         per_device=per_device, cls=FastFreezeTrainer)
        t.train()
        out[per_device] = {n: p.detach().clone() for n, p in t.model.named_parameters()}
        out["trainable"] = {n for n, p in t.model.named_parameters() if p.requires_grad}
        out["prefix"] = [n for n, _ in t.prefix.named_tensors()]
    triton = make_trainer(str(tmp_path_factory.mktemp("triton")), FreezeConfig(num_frozen_layers=K, kernels="triton"),
                          per_device=4, cls=FastFreezeTrainer)  # interpreted on CPU (tests/conftest.py)
    triton.train()
    out["triton"] = {n: p.detach().clone() for n, p in triton.model.named_parameters()}
    cached = make_trainer(str(tmp_path_factory.mktemp("fp")), FreezeConfig(num_frozen_layers=K, cache="memory"),
                          per_device=4, cls=FastFreezeTrainer)
    out["fingerprint"] = cached.prefix_cache.cache.fingerprint
    return out


def _worst_trainable_diff(got: dict, ref: dict, trainable: set) -> float:
    return max(max_rel_diff(got[n], ref[n]) for n in trainable)


def test_fsdp2_is_really_on(fsdp_run, single_process):
    _, stats, _ = fsdp_run
    for s in SCENARIOS:
        for r in stats[s]:
            assert r["is_fsdp_enabled"] and r["world_size"] == 2, r
            assert r["dtensor"] == r["params"] and len(r["params"]) == 39  # every parameter a DTensor shard
            assert set(single_process["prefix"]) <= set(r["dtensor"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_fsdp_matches_single_process_same_global_batch(fsdp_run, single_process, scenario):
    _, _, params = fsdp_run
    ref, got = single_process["triton" if scenario == "meta_triton" else 4], params[scenario]
    assert set(got) == set(ref)
    assert _worst_trainable_diff(got, ref, single_process["trainable"]) <= RTOL
    for name in set(ref) - single_process["trainable"]:
        assert torch.equal(got[name], ref[name]), f"frozen {name} changed"


def test_wrong_global_batch_fails_the_check(fsdp_run, single_process):
    """The parity check can fail: against a single process with global batch 2 (not 4) it does."""
    _, _, params = fsdp_run
    assert _worst_trainable_diff(params["nocache"], single_process[2], single_process["trainable"]) > 100 * RTOL


def test_frozen_params_have_no_grad_and_no_optimizer_state(fsdp_run, single_process):
    _, stats, _ = fsdp_run
    n_trainable = sum(single_process[4][n].numel() for n in single_process["trainable"])
    for s in SCENARIOS:
        ranks = stats[s]
        assert sum(r["trainable_local_numel"] for r in ranks) == n_trainable  # sharded: each rank holds about half
        for r in ranks:
            assert r["frozen_with_grad"] == [] and r["frozen_state_bytes"] == 0, r
            assert set(r["params_with_state"]) == single_process["trainable"]
            assert r["moment_bytes"] == 2 * 4 * r["trainable_local_numel"]  # fp32 exp_avg + exp_avg_sq of the shard
            assert r["trainable_local_numel"] < 0.6 * n_trainable


def test_warm_step_all_gathers_nothing_of_the_prefix(fsdp_run):
    """Cold steps all-gather the prefix units; a step whose batch is cached on every rank gathers none
    of them (the suffix's gathers are unchanged). Memory cache: built before training, so only step
    1 (the wrapped model's first forward, which must call every unit) gathers the prefix. Disk cache:
    epoch 1 computes and stores; from epoch 2 every row, whichever rank stored it, is a hit."""
    _, stats, _ = fsdp_run
    for r in stats["nocache"]:
        assert all(g["prefix"] > 0 for g in r["gathers"]) and len(r["gathers"]) == STEPS
    suffix_gathers = stats["nocache"][0]["gathers"][0]["other"]
    for r in stats["memory"]:
        assert [g["prefix"] > 0 for g in r["gathers"]] == [True] + [False] * (STEPS - 1), r["gathers"]
        assert all(g["other"] == suffix_gathers for g in r["gathers"])
        assert r["cache"]["misses"] == 0
    for r in stats["disk"] + stats["meta_disk"]:
        cold, warm = r["gathers"][:STEPS_PER_EPOCH], r["gathers"][STEPS_PER_EPOCH:]
        assert len(cold) == len(warm) == STEPS_PER_EPOCH, r["gathers"]
        assert all(g["prefix"] > 0 for g in cold) and all(g["prefix"] == 0 for g in warm), r["gathers"]
        # Cross-rank determinism: each rank computed only epoch 1's rows (misses), epoch 2 hit them all.
        assert r["cache"]["misses"] == r["cache"]["hits"] == 8 and r["cache"]["entries"] == 16, r
        assert r["prefix_calls"] == STEPS_PER_EPOCH


def test_a_rank_that_hits_joins_the_prefix_all_gathers_of_a_rank_that_misses(fsdp_run):
    """memory_rank0: rank 0 never computes its prefix (prefix_calls 0, no miss), yet on every step of
    epoch 1, where rank 1 computes, it all-gathers the prefix units exactly as rank 1 does (the
    per-step agreement); the weights equal the no-cache run (checked above)."""
    _, stats, _ = fsdp_run
    r0, r1 = stats["memory_rank0"]
    assert r0["prefix_calls"] == 0 and r0["cache"]["misses"] == 0 and r1["prefix_calls"] > 0, (r0, r1)
    assert [g["prefix"] for g in r0["gathers"]] == [g["prefix"] for g in r1["gathers"]]
    assert all(g["prefix"] > 0 for g in r0["gathers"][:STEPS_PER_EPOCH])


def test_partly_cached_batches_keep_the_ranks_paired(fsdp_run):
    """memory_half: every other row cached on both ranks, so batches are partly cached. The launch
    finishing is the no-deadlock check; on every step both ranks all-gather the prefix or neither does."""
    _, stats, _ = fsdp_run
    r0, r1 = stats["memory_half"]
    assert len(r0["gathers"]) == len(r1["gathers"]) == STEPS, (r0["gathers"], r1["gathers"])
    assert [g["prefix"] > 0 for g in r0["gathers"]] == [g["prefix"] > 0 for g in r1["gathers"]]
    assert all(r["cache"]["hits"] > 0 and r["cache"]["misses"] > 0 for r in (r0, r1)), (r0, r1)


def test_a_rank_loaded_on_meta_is_completed_at_train_start_on_every_rank(fsdp_run):
    """meta*: rank 1 starts on meta, so no rank completes the freeze at construction (they agree); at
    train start both ranks trace and probe the sharded model; the weights match one process (checked
    above for every scenario), and the deferred disk cache serves epoch 2 (checked above)."""
    _, stats, _ = fsdp_run
    for s in ("meta", "meta_disk", "meta_triton"):
        r0, r1 = stats[s]
        assert (r0["meta_at_init"], r1["meta_at_init"]) == (False, True), s
        kernels = "triton" if s == "meta_triton" else "torch"  # triton: swapped in on the sharded model
        for r in (r0, r1):
            assert not r["completed_at_init"] and not r["prefix_at_init"], r
            assert r["probe"] and (r["kernel_set"], r["device"]) == (kernels, "cpu"), r
    for s in ("nocache", "disk"):  # loaded whole on both ranks: completed at construction, as before
        assert all(r["completed_at_init"] and not r["meta_at_init"] for r in stats[s])


def test_fingerprint_of_sharded_prefix_equals_unsharded(fsdp_run, single_process):
    _, stats, _ = fsdp_run
    for s in ("memory", "memory_rank0", "disk", "memory_half", "meta_disk"):
        for r in stats[s]:
            assert r["fingerprint_sharded"] == r["fingerprint_at_open"] == single_process["fingerprint"], r


def test_fsdp_checkpoint_loads_with_plain_from_pretrained(fsdp_run):
    out, _, params = fsdp_run
    model = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(out, "saved"))
    saved = dict(model.named_parameters())
    assert set(saved) == set(params["nocache"])
    for name, p in params["nocache"].items():
        assert torch.equal(saved[name], p), name
