"""`estimate` against the CPU measurements committed in benchmarks/results: step-time ratios, parameters, memory, cache bytes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fastfreeze.cache import DiskCache
from fastfreeze.estimate import Device, ModelShape, estimate, render
from fastfreeze.estimate.memory import predict, weight_state_bytes

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def _shape_from_run(config: dict, tmp_path, name: str) -> ModelShape:
    """The measured run's model written as a config.json, read back the way `fastfreeze estimate` reads it."""
    hf = {"model_type": "llama", "num_hidden_layers": config["layers"], "hidden_size": config["hidden"],
          "intermediate_size": config["intermediate"], "num_attention_heads": config["heads"],
          "num_key_value_heads": config["kv_heads"], "vocab_size": config["vocab"], "tie_word_embeddings": False,
          "torch_dtype": config["dtype"]}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(hf))
    return ModelShape.from_config(str(path), seq=config["seq"], batch=config["batch"])


def test_step_ratios_and_parameters_match_the_committed_cpu_small_run(tmp_path):
    """bench_train_cpu-small.json (2-core CPU, 2026-11-26): measured step time / naive of the fastfreeze
    arms, cold (ff) and warm (ff-warm), with and without checkpointing, within 5% of the estimate;
    trainable parameters exactly."""
    run = json.loads((RESULTS / "bench_train_cpu-small.json").read_text())
    shape = _shape_from_run(run["meta"]["config"], tmp_path, "cpu-small")
    checked = 0
    for arm in run["arms"]:
        if arm["kind"] not in ("ff", "ff-warm") or not arm.get("step_vs_naive"):
            continue
        est = estimate(shape, arm["k"], dataset_tokens=1e6, epochs=2)
        assert est.ratios[(arm["kind"], arm["ckpt"])] == pytest.approx(arm["step_vs_naive"], rel=0.05), arm["name"]
        assert est.trainable == arm["trainable_params"], arm["name"]
        checked += 1
    assert checked >= 6


def test_memory_matches_the_committed_mem_1b_measurement(tmp_path):
    """memory_mem-1b.json (tensors counted on CPU): saved activations within 16 bytes of the model
    for every arm, gradient bytes exactly."""
    run = json.loads((RESULTS / "memory_mem-1b.json").read_text())
    cfg = dict(layers=16, hidden=64, intermediate=256, heads=4, kv_heads=1, vocab=4008, seq=64, batch=2, dtype="bfloat16")
    assert run["meta"]["shape"].startswith("L=16 k=8 H=64 I=256 heads 4/1 V=4008")
    shape = _shape_from_run(cfg, tmp_path, "mem-1b")
    for arm in run["arms"]:
        if arm["kind"] == "floor":
            continue
        b, t = arm["batch_shape"]
        pred = predict(shape, arm["kind"], arm["k"], arm["ckpt"], bool(arm["fused_loss"]), arm["kernels"], batch=b, seq=t)
        assert abs(arm["saved_bytes"] - pred["saved_bytes"]) <= 16, arm
        assert weight_state_bytes(shape.trainable_params(arm["k"]), shape.dtype_bytes)["gradient_bytes"] == arm["grad_bytes"]


def test_cache_size_is_what_a_disk_cache_writes(tmp_path):
    shape = ModelShape.from_config({"num_hidden_layers": 4, "hidden_size": 48, "intermediate_size": 96,
                                    "num_attention_heads": 4, "vocab_size": 100}, seq=16, batch=2, dtype="float16")
    lengths = [5, 9, 13, 2]
    cache = DiskCache(tmp_path, "fp", dtype=torch.float16)
    cache.put_many([f"k{i}" for i in range(4)], [torch.randn(n, 48) for n in lengths])
    cache.flush()
    on_disk = sum(f.stat().st_size for f in (tmp_path / "fp").glob("*.bin"))
    assert estimate(shape, 2, dataset_tokens=sum(lengths), epochs=1).cache_bytes == on_disk


def test_llama3_8b_report_has_every_part(tmp_path):
    cfg = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
           "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False,
           "torch_dtype": "bfloat16"}
    shape = ModelShape.from_config(cfg, seq=2048, batch=4)
    est = estimate(shape, 16, dataset_tokens=1e6, epochs=3, dev=Device.named("h100"), read_bytes_per_s=2e9)
    assert est.trainable + est.frozen == 8_030_261_248  # Llama-3-8B's published parameter count
    assert est.cache_bytes == 8192 * 1e6  # 8 KiB per token at hidden 4096, bf16
    text = render(est)
    for part in ("trainable", "frozen", "fastfreeze cold", "fastfreeze warm", "ckpt", "activations", "gradients",
                 "AdamW state", "cache size", "reading beats recomputing", "paid for itself by the end of epoch 2"):
        assert part in text, part
