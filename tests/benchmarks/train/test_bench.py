"""Smoke test of `python -m benchmarks.train`: every arm trains 2 steps on the toy preset and the report holds together."""
from __future__ import annotations

import json
from importlib import metadata

import pytest
import torch

from benchmarks.train import bench as bench_train
from benchmarks.train import presets
from tests._helpers import assert_losses_close


@pytest.fixture(scope="module")
def bench():
    return bench_train, presets


@pytest.fixture(scope="module")
def toy_result(bench, tmp_path_factory):
    bench_train, _ = bench
    out = tmp_path_factory.mktemp("bench")
    rc = bench_train.main(["--preset", "toy", "--out", str(out), "--memory", "none", "--sweep", "0",
                           "--steps", "1,1,1", "--threads", "1"])
    return rc, json.loads((out / "bench_train_toy.json").read_text()), (out / "bench_train_toy.md").read_text()


def test_every_arm_runs_and_is_timed(toy_result):
    rc, result, md = toy_result
    assert rc == 0, [r.get("error") for r in result["arms"] if "error" in r]
    kinds = {(r["kind"], r["ckpt"]) for r in result["arms"] if r["k"] == 2}
    expected = {"full", "naive", "ff", "ff-warm", "ff-cold", "floor", "floor-loop"}
    assert kinds == {(k, c) for k in expected for c in (False, True)}
    assert {r["kind"] for r in result["arms"] if r["k"] == 0} == {"naive", "ff", "ff-warm"}
    for r in result["arms"]:
        assert len(r["step_times"]) == 2 and r["measured_steps"] == 1, r["name"]
        assert r["median_step_s"] > 0 and r["tokens_per_s"] > 0, r["name"]
    assert "| ff-warm | 2 | off |" in md and "Targets:" in md and "predicted**" in md
    assert all(0 < r["predicted_step_vs_naive"] < 2 for r in result["arms"])  # FLOP model beside every arm
    meta = result["meta"]
    assert meta["versions"]["torch"] == metadata.version("torch") and meta["git_commit"] and meta["device"].startswith("CPU")


def test_freeze_arms_train_identically(toy_result):
    """Same weights, data and order: every freeze arm (incl. the floor fed precomputed boundaries) must
    produce the same losses; fp32 op-order differences stay far below 1e-5 relative."""
    _, result, _ = toy_result
    for ckpt in (False, True):
        arms = [r for r in result["arms"] if r["k"] == 2 and r["ckpt"] == ckpt and r["kind"] != "full"]
        ref = arms[0]["losses"]
        assert len(arms) >= 6, [r["name"] for r in arms]
        for r in arms[1:]:
            assert_losses_close(r["losses"], ref, rtol=1e-5)  # fp32, op order only (docstring)
    full = next(r for r in result["arms"] if r["kind"] == "full" and not r["ckpt"])
    naive = next(r for r in result["arms"] if r["kind"] == "naive" and not r["ckpt"] and r["k"] == 2)
    assert full["losses"][0] == pytest.approx(naive["losses"][0], rel=1e-6)  # same weights at step 1
    assert full["losses"][1] != naive["losses"][1]  # full also trains the embedding and lower layers


def test_cache_arms_hit_and_miss_as_claimed(bench, toy_result):
    _, result, _ = toy_result
    examples = bench[1].make_examples(bench[1].PRESETS["toy"])
    for r in result["arms"]:
        if r["kind"] == "ff-warm":
            assert r["cache"]["misses"] == 0 and r["cache"]["hits"] > 0, r["name"]
            # the precompute pass saw every real token of the fixed example set exactly once
            assert r["cache_build"]["tokens"] == sum(len(ex["input_ids"]) for ex in examples), r["name"]
        if r["kind"] == "ff-cold":
            assert r["cache"]["misses"] > 0 and r["cache"]["entries"] > 0, r["name"]
    assert any("cache build" in key for key in result["extra"])
    assert any(t["name"].startswith("final losses") and t["ok"] for t in result["targets"])


def test_memory_probe_measures_growth(bench, tmp_path):
    """The probe runs in a fresh subprocess, as bench_train does: in this (long-lived) pytest process the
    allocator would reuse pages freed by earlier tests and the RSS high-water mark would not move."""
    import argparse

    bench_train, tp = bench
    args = argparse.Namespace(preset="toy", kernels="torch", device="cpu", probe_timeout=120)
    probe = bench_train.run_probe_subprocess(tp.ArmSpec("naive", 2, False), args)
    assert "error" not in probe, probe
    # The toy model's weights + Adam state alone are ~1 MB; a probe that reads 0 measures nothing.
    assert probe["peak_bytes"] > 100_000 and probe["steps"] >= 1


def test_bad_arguments_name_the_fix(bench):
    bench_train, _ = bench
    with pytest.raises(SystemExit, match="choose from"):
        bench_train.main(["--preset", "toy", "--arms", "naive,bogus"])
    with pytest.raises(SystemExit, match="use 0..4"):
        bench_train.main(["--preset", "toy", "--k", "9"])
    with pytest.raises(SystemExit, match="warmup,rounds,window"):
        bench_train.main(["--preset", "toy", "--steps", "x"])
