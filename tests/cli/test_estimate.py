"""`fastfreeze estimate` on a Llama-3-8B-shaped config.json prints every part of the estimate."""
import json

import pytest

from fastfreeze.cli import main

LLAMA3_8B = {"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
             "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
             "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
             "vocab_size": 128256}


def test_estimate_llama3_8b(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA3_8B))
    assert main(["estimate", str(path), "--k", "16", "--seq", "2048", "--batch", "4", "--dataset-tokens", "5e8",
                 "--epochs", "3", "--device", "h100", "--read-gbps", "2"]) == 0
    out = capsys.readouterr().out
    assert "trainable 4.02 B, frozen 4.02 B" in out
    for part in ("fastfreeze cold", "fastfreeze warm", "no ckpt", "activations", "gradients", "AdamW state",
                 "cache size: 3.73 TiB", "reading beats recomputing", "paid for itself by the end of epoch",
                 "after epoch 3"):
        assert part in out, part


def test_estimate_without_a_device_and_bad_input(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA3_8B))
    assert main(["estimate", str(path), "--k", "8", "--dataset-tokens", "1e6"]) == 0
    assert "pass --device" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="outside 0..32"):
        main(["estimate", str(path), "--k", "40", "--dataset-tokens", "1e6"])
    with pytest.raises(SystemExit, match="--mfu goes with --device"):
        main(["estimate", str(path), "--k", "8", "--dataset-tokens", "1e6", "--flops", "1e14", "--mfu", "0.5"])


def _bench_json(path, gbps):
    path.write_text(json.dumps({"meta": {"device": "CPU test", "date": "2026-12-07T00:00:00+00:00"},
                                "result": {"read_path_GBps": gbps}}))
    return str(path)


def test_the_verdict_follows_the_measured_read_rate(tmp_path, capsys):
    """k=4 on an H100 at mfu 0.4: the prefix costs ~4.6 us/token against 8 KiB/token to read, so a 0.5 GB/s
    read path loses to recomputing and a 20 GB/s one wins (docs/cache-sizing.md's table)."""
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(LLAMA3_8B))
    base = ["estimate", str(cfg), "--k", "4", "--seq", "2048", "--batch", "4", "--dataset-tokens", "1e6",
            "--device", "h100", "--read-json"]
    assert main(base + [_bench_json(tmp_path / "slow.json", 0.5)]) == 0
    slow = capsys.readouterr().out
    assert "reading 0.5 GB/s (measured by benchmarks.cache on CPU test, 2026-12-07" in slow
    assert "recomputing beats reading" in slow and "never pays" in slow
    assert main(base + [_bench_json(tmp_path / "fast.json", 20)]) == 0
    fast = capsys.readouterr().out
    assert "reading 20 GB/s" in fast and "reading beats recomputing" in fast and "paid for itself" in fast
    with pytest.raises(SystemExit, match="rerun the benchmark"):
        main(base + [str(tmp_path / "config.json")])


def test_the_default_read_rate_is_the_measured_one(tmp_path, capsys):
    from fastfreeze.estimate.payoff import MEASURED_READ

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(LLAMA3_8B))
    assert main(["estimate", str(cfg), "--k", "16", "--dataset-tokens", "1e6", "--device", "h100"]) == 0
    out = capsys.readouterr().out
    assert f"reading {MEASURED_READ.bytes_per_s / 1e9:.3g} GB/s ({MEASURED_READ.source})" in out
    assert "measured by benchmarks.cache" in out
