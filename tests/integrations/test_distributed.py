"""DDP through torchrun (2 CPU ranks, gloo): same final weights as one process with the same global batch.

The worker (tests/integrations/ddp_worker.py) runs one set-up per torchrun launch: no cache, a memory
cache per rank, a memory cache precomputed on rank 0 only (rank 0 never runs its prefix while rank 1
runs it: uneven work must not deadlock), and one disk cache shared by both ranks. Each launch has a
hard timeout, so a deadlock fails the test instead of hanging CI. `launch()` is also what
tests/integrations/ddp_launches.py repeats to show the launches never abort.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import TrainerCallback

from tests.integrations.ddp_worker import ROWS, SCENARIOS, freeze_config, make_trainer
from tests.parity.harness import max_rel_diff

# fp32. Per-rank batches (2 rows) and the single-process batch (4 rows) are padded to one width,
# so each row's forward is the same computation; DDP's gradient all-reduce (sum of 2 partial
# gradients, then / 2) reorders the sums, and Adam turns that into ~1e-7 relative differences.
RTOL = 1e-5
LAUNCH_TIMEOUT_S = 150
WORKER = os.path.join(os.path.dirname(__file__), "ddp_worker.py")
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def launch(worker: str, *worker_args: str, timeout: float = LAUNCH_TIMEOUT_S) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 2 -m <worker as a module> *worker_args` on CPU (gloo), one thread per rank."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TOKENIZERS_PARALLELISM="false", WANDB_DISABLED="true", CUDA_VISIBLE_DEVICES="")
    # As a module: the working directory (the repository), not the worker's folder, goes on the ranks'
    # sys.path, so no test folder's names can shadow an installed package.
    module = os.path.relpath(worker, REPO)[:-len(".py")].replace(os.sep, ".")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", module, *worker_args]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def launch_or_fail(worker: str, *worker_args: str) -> None:
    try:
        proc = launch(worker, *worker_args)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"torchrun did not finish in {LAUNCH_TIMEOUT_S}s (deadlock?):\n{(err.stderr or '')[-3000:]}")
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stderr[-5000:]}"


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ddp"))
    for scenario in SCENARIOS:
        launch_or_fail(WORKER, out, scenario)
    stats = {s: [json.load(open(os.path.join(out, f"{s}.rank{r}.json"))) for r in (0, 1)] for s in SCENARIOS}
    params = {s: torch.load(os.path.join(out, f"{s}.pt")) for s in SCENARIOS}
    return out, stats, params


class _SeenLogs(TrainerCallback):
    """Stands in for report_to integrations (tensorboard, wandb): they receive exactly on_log's `logs`."""

    seen: list

    def on_train_begin(self, args, state, control, **kwargs):
        self.seen = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.seen.append(dict(logs))


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """The reference: one process, per-device batch 4 (= 2 ranks x 2), no cache."""
    trainer = make_trainer(str(tmp_path_factory.mktemp("single")), freeze_config("nocache", ""), per_device=4)
    trainer.add_callback(_SeenLogs())
    trainer.train()
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}, trainer


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_ddp_matches_single_process(ddp_run, single_process, scenario):
    _, stats, params = ddp_run
    ref, ref_trainer = single_process
    assert all(s["world_size"] == 2 for s in stats[scenario])
    got = params[scenario]
    assert set(got) == set(ref)
    for name, p in ref.items():
        if ref_trainer.model.get_parameter(name).requires_grad:
            assert max_rel_diff(got[name], p) <= RTOL, name
        else:
            assert torch.equal(got[name], p), f"frozen {name} changed"


def test_each_rank_cache_works(ddp_run):
    _, stats, _ = ddp_run
    for rank_stats in stats["memory"]:
        # A memory cache is per process; a rank only reuses rows it computed itself, and the sampler
        # hands each rank a different half of the data every epoch, so some epoch-2 rows hit, not all.
        c = rank_stats["cache"]
        assert c["hits"] > 0 and 0 < rank_stats["prefix_calls"] < 16 and c["entries"] < ROWS, rank_stats


def test_uneven_cache_no_deadlock(ddp_run):
    _, stats, _ = ddp_run
    r0, r1 = stats["memory_rank0_precomputed"]
    assert r0["cache"]["misses"] == 0 and r0["prefix_calls"] == r0["prefix_calls_before_train"] > 0, r0
    assert r1["prefix_calls"] > 0 and r1["cache"]["misses"] > 0, r1  # the other rank did run its prefix


def test_disk_cache_shards_per_rank(ddp_run):
    out, stats, _ = ddp_run
    manifests = glob.glob(os.path.join(out, "disk-cache", "*", "shard-*.json"))
    writer_pids = {os.path.basename(m).split("-")[1] for m in manifests}
    assert writer_pids == {str(s["pid"]) for s in stats["disk"]}, (writer_pids, manifests)
    for s in stats["disk"]:
        # Shared store: after epoch 1 both ranks see all 32 rows, whoever computed them, and every
        # epoch-2 row is a hit, not by timing: each rank flushes, waits for the other and re-reads the
        # index at the epoch end. 16 rows per rank per epoch, 2 per step.
        c = s["cache"]
        assert c["entries"] == ROWS and c["misses"] == c["hits"] == ROWS // 2 and s["prefix_calls"] == 8, s


def test_single_process_logs_fastfreeze_metrics(single_process):
    """What `report_to` (tensorboard, wandb) receives: a TrainerCallback's on_log sees fastfreeze/* keys."""
    _, trainer = single_process
    seen = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, _SeenLogs)).seen
    logged = [h for h in seen if "loss" in h]
    assert logged, seen
    report = trainer.freeze_report
    for h in logged:
        assert h["fastfreeze/frozen_params"] == report.frozen_params > 0
        assert h["fastfreeze/trainable_params"] == report.trainable_params > 0
    assert [h["fastfreeze/prefix_calls"] for h in logged] == [4, 8, 12, 16]  # logging_steps=4, one call per step


def test_fsdp_config_and_empty_param_groups():
    from fastfreeze.integrations.distributed import fsdp_config
    from fastfreeze.trainer import drop_empty_param_groups
    from tests._helpers import make_model

    model = make_model("gpt2")
    cfg = fsdp_config(model)
    assert cfg["version"] == 2 and cfg["transformer_layer_cls_to_wrap"] == ["GPT2Block", "Embedding"]
    classes = {type(m).__name__ for m in model.modules()}  # accelerate resolves the names among these
    assert set(cfg["transformer_layer_cls_to_wrap"]) <= classes
    assert fsdp_config(model, version=1)["use_orig_params"] is True
    with pytest.raises(ValueError, match="version"):
        fsdp_config(model, version=3)

    lin = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW([{"params": [lin.weight]}, {"params": [], "weight_decay": 0.0}])
    assert len(drop_empty_param_groups(opt).param_groups) == 1
    with pytest.raises(ValueError, match="no parameters"):
        emptied = torch.optim.SGD([lin.weight], lr=0.1)
        emptied.param_groups[0]["params"] = []  # built non-empty: torch may refuse an empty group itself
        drop_empty_param_groups(emptied)


def test_ddp_worker_in_the_gpu_defaults_matches_single_process(single_process, tmp_path, monkeypatch):
    """The DDP worker (2 ranks, no cache) in the GPU defaults (Triton interpreted + fused loss; the ranks
    inherit the switch) against the single process in the CPU defaults, which the tests above and tests/parity
    prove equal to plain freezing: every logged loss (mean of 4 steps) within 2e-6
    (tests/parity/test_triton_parity.py's bound), frozen weights bitwise equal. Trainable weights are not
    compared elementwise: after 16 AdamW steps last-bit gradient noise on ~0 gradients is a step of ~lr."""
    monkeypatch.setenv("FASTFREEZE_KERNELS", "triton")
    launch_or_fail(WORKER, str(tmp_path), "nocache")
    stats = [json.load(open(tmp_path / f"nocache.rank{r}.json")) for r in (0, 1)]
    params = torch.load(tmp_path / "nocache.pt")
    ref, ref_trainer = single_process
    assert [s["kernel_set"] for s in stats] == ["triton", "triton"] and ref_trainer.freeze_runtime.kernel_set == "torch"
    want = [row["loss"] for row in ref_trainer.state.log_history if "loss" in row]
    got = stats[0]["losses"]
    assert len(got) == len(want) == 4 and got == stats[1]["losses"]
    assert all(abs(g - w) <= 2e-6 * abs(w) for g, w in zip(got, want)), (got, want)
    for name, p in ref.items():
        if not ref_trainer.model.get_parameter(name).requires_grad:
            assert torch.equal(params[name], p), f"frozen {name} changed"
