"""`fastfreeze verify`: passes on correct training, fails when a component is deliberately wrong, CLI end to end."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re

import datasets
import pytest
import torch
import transformers

import fastfreeze.trainer as ff_trainer
import fastfreeze.verify_data as verify_data
from fastfreeze import FreezeConfig
from fastfreeze.data.tokenize import build_word_tokenizer
from fastfreeze.verify import Tolerances, main, verify
from fastfreeze.verify_data import VerifyError
from tests._helpers import make_model, make_rows

STEPS = 3


def _verify(family="llama", k=2, steps=STEPS, rows=None, **kw):
    cfg_kw = {key: kw.pop(key) for key in ("cache", "untie_embeddings", "kernels", "freeze_embeddings") if key in kw}
    return verify(make_model(family), rows or make_rows(4 * steps), FreezeConfig(num_frozen_layers=k, **cfg_kw),
                  steps=steps, **kw)


def _inject(monkeypatch, wrong):
    """Make `wrong(model, parts)` run inside FastFreezeTrainer's set-up only: the reference arm never calls
    apply_freeze, so only the fastfreeze arm gets the fault."""
    original = ff_trainer.apply_freeze

    def faulty(model, config):
        runtime = original(model, config)
        wrong(model, runtime.parts)
        return runtime

    monkeypatch.setattr(ff_trainer, "apply_freeze", faulty)


def _shift_output(module, eps=1e-3):
    """Add eps to hidden feature 0 only: a shift of every feature would vanish in the next LayerNorm."""
    def hook(mod, args, out):
        hidden = out if torch.is_tensor(out) else out[0]
        bump = torch.zeros_like(hidden)
        bump[..., 0] = eps
        return hidden + bump if torch.is_tensor(out) else (hidden + bump, *out[1:])
    module.register_forward_hook(hook)


# ------------------------------------------------------------------------------------------ PASS
@pytest.mark.parametrize("family,extra", [("llama", {}), ("gpt_neox", {}), ("gpt2", {}),
                                          ("gemma2", {"untie_embeddings": True}),
                                          ("llama", {"kernels": "triton"}),  # Triton interpreter on CPU
                                          ("llama", {"freeze_embeddings": False})])  # not a prefix
def test_passes_on_families(family, extra):
    report = _verify(family, **extra)
    assert report.passed, str(report)
    assert report.verdict == "PASS" and "verdict: PASS" in str(report)
    assert len(report.reference.losses) == len(report.fastfreeze.losses) == STEPS
    assert all(math.isfinite(x) for x in report.reference.losses)
    # Embedding + 2 blocks frozen in both arms; the tied gemma2 head trains once untied (in both arms).
    assert report.reference.frozen == report.fastfreeze.frozen and len(report.fastfreeze.frozen) > 2
    assert ("model.embed_tokens.weight" in report.fastfreeze.frozen) == extra.get("freeze_embeddings", True) \
        or family in ("gpt_neox", "gpt2")
    if family == "gemma2":
        assert "lm_head.weight" not in report.fastfreeze.frozen
    assert report.fastfreeze.kernel_set == extra.get("kernels", "torch")
    assert report.param_max_rel <= report.tolerances.param_rtol


def test_memory_cache_run_reads_the_cache_in_epoch_two():
    report = _verify("llama", steps=4, rows=make_rows(32), cache="memory")
    assert report.passed, str(report)
    # 4 steps x 4 rows over 8 rows: epoch 2 (8 rows) must come from the cache.
    assert report.fastfreeze.cache["hits"] >= 8 and report.fastfreeze.cache["entries"] == 8
    assert "padded to one width" in str(report)


def test_bf16_uses_bf16_tolerance():
    model = make_model("llama", dtype=torch.bfloat16)
    report = verify(model, make_rows(8), FreezeConfig(num_frozen_layers=2), steps=2)
    assert report.dtype == "bf16" and report.tolerances == Tolerances.for_dtype("bf16", 2)
    assert report.passed, str(report)


def test_tolerances_follow_dtype_and_steps():
    assert Tolerances.for_dtype("fp32", 8).loss_rtol == 1e-5  # floor: the parity suite's fp32 tolerance
    bf16 = Tolerances.for_dtype("bf16", 8)
    assert bf16.loss_rtol == pytest.approx(4 * 2 ** -8 * math.sqrt(8))
    assert Tolerances.for_dtype("fp16", 8).loss_rtol < bf16.loss_rtol < Tolerances.for_dtype("bf16", 32).loss_rtol
    with pytest.raises(VerifyError, match="choose one of"):
        Tolerances.for_dtype("int8", 8)


def test_input_model_is_left_untouched():
    model = make_model("llama")
    before = {n: p.clone() for n, p in model.state_dict().items()}
    verify(model, make_rows(8), FreezeConfig(num_frozen_layers=2), steps=2)
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------------------------------ FAIL
def test_fails_when_a_suffix_module_is_perturbed(monkeypatch):
    _inject(monkeypatch, lambda model, parts: _shift_output(parts.layers[3]))
    report = _verify("llama")
    assert not report.passed and report.verdict == "FAIL"
    assert any("micro-batch losses differ" in f for f in report.failures), report.failures


def test_fails_when_a_prefix_module_is_perturbed(monkeypatch):
    _inject(monkeypatch, lambda model, parts: _shift_output(parts.layers[0]))
    report = _verify("gpt2")
    assert not report.passed
    assert any("micro-batch losses differ" in f for f in report.failures)


def test_fails_when_a_frozen_weight_moves(monkeypatch):
    def nudge(model, parts):
        w = parts.layers[1].mlp.up_proj.weight

        def pre_hook(module, args):
            w.data.add_(1e-7)  # a "kernel" that writes into a frozen weight
        parts.layers[1].register_forward_pre_hook(pre_hook)
    _inject(monkeypatch, nudge)
    report = _verify("llama")
    assert "fastfreeze: frozen parameters changed: ['model.layers.1.mlp.up_proj.weight']" in report.failures
    assert "reference: frozen" not in " ".join(report.failures)


def test_fails_when_a_different_layer_set_is_frozen(monkeypatch):
    original = ff_trainer.apply_freeze
    monkeypatch.setattr(ff_trainer, "apply_freeze", lambda model, config: original(
        model, dataclasses.replace(config, num_frozen_layers=config.num_frozen_layers + 1)))
    report = _verify("llama")
    assert not report.passed
    assert any("froze different parameters" in f for f in report.failures)
    assert any("trainable parameters differ" in f for f in report.failures)


# ------------------------------------------------------------------------------------------ sequential / memory
@pytest.mark.parametrize("family,extra", [("llama", {}), ("gemma2", {"untie_embeddings": True})])
def test_sequential_gives_the_same_result(family, extra):
    both = _verify(family, **extra)
    seq = _verify(family, sequential=True, **extra)
    assert seq.passed and both.passed
    assert seq.reference.losses == both.reference.losses and seq.fastfreeze.losses == both.fastfreeze.losses
    assert any("sequential" in n for n in seq.notes)


def test_refuses_when_two_copies_do_not_fit(monkeypatch):
    monkeypatch.setattr(verify_data, "available_bytes", lambda device: 10_000)
    with pytest.raises(VerifyError, match="--sequential"):
        _verify("llama")
    assert _verify("llama", steps=2, sequential=True).passed  # no second copy: no refusal


def test_bad_arguments():
    with pytest.raises(VerifyError, match="steps=0"):
        _verify("llama", steps=0)
    with pytest.raises(VerifyError, match="two epochs"):
        _verify("llama", steps=1, cache="memory")
    with pytest.raises(VerifyError, match="input_ids"):
        verify(make_model("llama"), [{"text": "hi"}], FreezeConfig(num_frozen_layers=1))


# ------------------------------------------------------------------------------------------ CLI
WORDS = "the cat sat on a mat while dogs ran far away from home and birds sang loud songs".split()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny Llama + word tokenizer saved with save_pretrained, and JSONL files next to it."""
    root = tmp_path_factory.mktemp("verify-cli")
    g = torch.Generator().manual_seed(0)
    texts = [" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (int(n),), generator=g))
             for n in torch.randint(4, 12, (16,), generator=g)]
    tok = build_word_tokenizer(datasets.Dataset.from_dict({"text": texts}))
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                                   tie_word_embeddings=False, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    with open(root / "text.jsonl", "w") as f:
        f.writelines(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts))
    with open(root / "pairs.jsonl", "w") as f:
        f.writelines(json.dumps({"q": t[:9], "a": t[9:]}) + "\n" for t in texts)
    with open(root / "text.txt", "w") as f:  # run_clm's format: plain lines (a blank one in between)
        f.write("\n".join(texts[:8] + [""] + texts[8:]) + "\n")
    return root


def _cli(root, *extra):
    return main(["--model", str(root / "model"), "--steps", "2", *extra])


def test_cli_passes_end_to_end(model_dir, capsys, tmp_path):
    out_json = tmp_path / "report.json"
    assert _cli(model_dir, "--data", str(model_dir / "text.jsonl"), "--report-json", str(out_json)) == 0
    printed = capsys.readouterr().out
    assert "verdict: PASS" in printed and "frozen: embedding + bottom 2 layers" in printed  # default k = half of 4 layers
    saved = json.loads(out_json.read_text())
    assert saved["verdict"] == "PASS" and len(saved["reference"]["losses"]) == 2
    # Disk cache: 2 steps over 4 rows (one batch) = 2 epochs, the second read from the cache.
    assert _cli(model_dir, "--data", str(model_dir / "text.jsonl"), "--cache", "disk",
                "--cache-dir", str(tmp_path / "cache")) == 0
    assert "cache: 4 hits, 4 misses, 4 entries" in capsys.readouterr().out


def test_cli_prompt_completion_and_sequential(model_dir, capsys):
    args = ["--data", str(model_dir / "pairs.jsonl"), "--prompt-column", "q", "--completion-column", "a",
            "--num-frozen-layers", "1"]
    assert _cli(model_dir, *args) == 0
    first = capsys.readouterr().out
    assert _cli(model_dir, *args, "--sequential") == 0
    second = capsys.readouterr().out
    loss_rows = lambda s: re.findall(r"^ +\d+ +\d+ +[\d.]+ +[\d.]+ .*$", s, flags=re.M)  # noqa: E731
    assert "verdict: PASS" in second and len(loss_rows(first)) == 2 and loss_rows(first) == loss_rows(second)


def test_cli_exit_1_on_a_wrong_component(model_dir, monkeypatch, capsys):
    _inject(monkeypatch, lambda model, parts: _shift_output(parts.layers[3]))
    assert _cli(model_dir, "--data", str(model_dir / "text.jsonl")) == 1
    assert "verdict: FAIL" in capsys.readouterr().out


@pytest.mark.parametrize("extra,message", [
    (["--data", "/nonexistent/data.jsonl"], "does not exist"),
    (["--data", "{root}/text.jsonl", "--text-column", "body"], "['text', 'id']"),
    (["--data", "{root}/pairs.jsonl"], "its columns are ['q', 'a']"),
    (["--data", "{root}/text.jsonl", "--num-frozen-layers", "9"], "use a value in 0..4"),
    (["--data", "{root}/text.txt", "--block-size", "1"], "--block-size 1 must be >= 2"),
    (["--data", "{root}/text.txt", "--block-size", "100000"], "fewer than one block of --block-size 100000"),
    (["--data", "{root}/pairs.jsonl", "--prompt-column", "q", "--completion-column", "a", "--block-size", "8"],
     "does not apply to prompt/completion rows"),
    (["--data", "{root}/text.txt", "--prompt-column", "q"], "its columns are ['text']"),
    (["--data", "{root}/empty.txt"], "has no rows"),
    (["--data", "{root}/data.xml"], "unknown file type; use .txt (one example per line), .json"),
])
def test_cli_usage_errors(model_dir, capsys, extra, message):
    (model_dir / "empty.txt").write_text("\n  \n")
    (model_dir / "data.xml").write_text("<rows/>")
    extra = [e.replace("{root}", str(model_dir)) for e in extra]
    assert _cli(model_dir, *extra) == 2
    assert message in capsys.readouterr().err


def test_cli_missing_model_and_bad_choice(capsys, monkeypatch, model_dir):
    assert main(["--model", "/nonexistent/model"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["--model", str(model_dir / "model"), "--dtype", "int4"]) == 2
    assert main(["--model", str(model_dir / "model"), "--blocksize", "8"]) == 2  # an unknown flag: no traceback
    assert "--blocksize" in capsys.readouterr().err
    monkeypatch.setattr(verify_data, "available_bytes", lambda device: 10_000)
    assert _cli(model_dir, "--data", str(model_dir / "text.jsonl")) == 2
    assert "--sequential" in capsys.readouterr().err


def _tokenizer(root):
    return transformers.AutoTokenizer.from_pretrained(root / "model")


def test_txt_one_example_per_line(model_dir, capsys):
    tok = _tokenizer(model_dir)
    lines = [l for l in (model_dir / "text.txt").read_text().splitlines() if l.strip()]
    rows = verify_data.load_rows(str(model_dir / "text.txt"), tok, limit=10)
    assert len(rows) == 10 and rows["input_ids"] == [tok(l)["input_ids"] for l in lines[:10]]  # blank line skipped
    assert _cli(model_dir, "--data", str(model_dir / "text.txt")) == 0
    assert "verdict: PASS" in capsys.readouterr().out


def test_txt_block_size_groups_text_like_run_clm(model_dir, capsys):
    tok = _tokenizer(model_dir)
    with open(model_dir / "text.txt") as f:
        stream = [i for line in f for i in tok(line)["input_ids"]]  # every line, its line break kept
    n = 8
    expected = [stream[i:i + n] for i in range(0, len(stream) - n + 1, n)]
    assert len(expected) >= 5 and len(stream) % n  # the tail is a partial block, dropped
    rows = verify_data.load_rows(str(model_dir / "text.txt"), tok, block_size=n)
    assert rows["input_ids"] == expected and rows["labels"] == expected
    assert verify_data.load_rows(str(model_dir / "text.txt"), tok, block_size=n, limit=3)["input_ids"] == expected[:3]
    # Any text column groups the same way (here the JSONL copy of the same texts, without line breaks).
    jsonl = verify_data.load_rows(str(model_dir / "text.jsonl"), tok, block_size=n)
    assert all(len(r) == n for r in jsonl["input_ids"])
    assert _cli(model_dir, "--data", str(model_dir / "text.txt"), "--block-size", str(n)) == 0
    printed = capsys.readouterr().out
    assert "verdict: PASS" in printed and f"blocks of {n} tokens" in printed


def test_cli_disk_cache_defaults_to_a_temporary_directory(model_dir, capsys, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where mkdtemp creates it
    assert _cli(model_dir, "--data", str(model_dir / "text.jsonl"), "--cache", "disk") == 0
    printed = capsys.readouterr().out
    assert "cache: 4 hits, 4 misses, 4 entries" in printed and "verdict: PASS" in printed
    used = re.search(r"temporary directory \((.+?)\), removed at the end", printed).group(1)
    assert used.startswith(str(tmp_path)) and not os.path.exists(used)
    assert not list(tmp_path.glob("fastfreeze-verify-cache-*"))
