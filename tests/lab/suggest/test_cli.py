"""`fastfreeze suggest-k`: the table and JSON from a run folder, the comparison, and errors that name the fix."""
from __future__ import annotations

import json

import pytest
import yaml

from fastfreeze.lab.suggest.cli import main
from fastfreeze.data import build_word_tokenizer
from tests.lab.suggest.test_probe import LAYERS, tiny_model, tiny_task_data

FAST = ["--steps", "3", "--batch-size", "8", "--eval-examples", "0", "--learning-rate", "1e-2"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A folder shaped like a finished continual run: config, data and tokenizer caches, two checkpoints."""
    run = tmp_path_factory.mktemp("run")
    dsd = tiny_task_data()
    tok = build_word_tokenizer(dsd)
    dsd.save_to_disk(str(run / "data-abc"))
    tok.save_pretrained(str(run / "tokenizer-abc"))
    (run / "config.yaml").write_text(yaml.safe_dump({
        "data": {"tokenizer": "word", "max_length": 16},
        "training": {"learning_rate": 1e-2, "per_device_train_batch_size": 8},
    }))
    tiny_model(tok, seed=0).save_pretrained(str(run / "checkpoints" / "pretrain"))
    tiny_model(tok, seed=1).save_pretrained(str(run / "checkpoints" / "trunk" / "task0"))
    return run


def test_run_dir_gives_one_row_per_depth_a_suggestion_and_json(run_dir, tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main([str(run_dir), *FAST, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    for k in range(LAYERS + 1):
        assert f"| k={k} |" in printed
    assert "| none (SEQ) |" in printed and "Suggested k: none; " in printed and "Rule: eligible" in printed
    assert "Hit rate at matched budgets (measured 2026-12-03, five_task_fair seeds 0, 1, 2): 0/3." in printed
    result = json.loads(out.read_text())
    assert [r["k"] for r in result["suggestion"]["rows"]] == [None, *range(LAYERS + 1)]
    assert result["inputs"]["previous"].endswith("pretrain")  # the orthogonality columns are filled
    assert all(r["flat_cos"] is not None for r in result["probe"]["per_layer"])
    assert result["probe"]["settings"]["learning_rate"] == 1e-2 and result["suggestion"]["k"] is None
    assert result["suggestion"]["rule_k"] in range(LAYERS + 1) and result["suggestion"]["hit_rate"]["hits"] == 0


def test_compare_against_a_results_file_and_reuse_a_suggestion(run_dir, tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main([str(run_dir), *FAST, "--output", str(out)]) == 0
    k = json.loads(out.read_text())["suggestion"]["rule_k"]
    arms = {"seq": {"strategy": {"name": "seq"}, "accuracy_matrix": [[0.9, 0.0], [0.3, 0.99]]},
            f"freeze{k}": {"strategy": {"name": "freeze", "num_frozen_layers": k}, "accuracy_matrix": [[0.9, 0.0], [0.6, 0.98]]}}
    res = tmp_path / "results.json"
    res.write_text(json.dumps({"arms": arms}))
    capsys.readouterr()
    out2 = tmp_path / "again.json"
    assert main(["--suggestion", str(out), "--compare", str(res), "--output", str(out2)]) == 0
    printed = capsys.readouterr().out
    assert f"The rule's pick k={k}: among the best arms by ACC (freeze{k})" in printed
    assert json.loads(out2.read_text())["comparison"]["verdict"]["among_best_retention"] is True


@pytest.mark.parametrize("args, fix", [
    (["{missing}"], "is not a folder; pass a continual run's output_dir"),
    ([], "pass all of --model DIR, --data DIR"),
    (["{run}", "--new-task", "0"], "--new-task must be >= 1"),
    (["{run}", "--new-task", "2"], "pass --model DIR"),  # no trunk/task1 checkpoint in this run
    (["{run}", "--old-split", "test", "--data", "{empty}"], "is not a DatasetDict folder"),
    (["{run}", "--steps", "0"], "steps must be >= 1"),
    (["--suggestion", "{missing}"], "pass a JSON written by fastfreeze suggest-k"),
    (["{run}", "--compare", "{config}", *FAST], "is not JSON"),
])
def test_bad_input_exits_2_and_names_the_fix(run_dir, tmp_path, capsys, args, fix):
    (tmp_path / "empty").mkdir()
    subs = {"{run}": str(run_dir), "{missing}": str(tmp_path / "nope"), "{empty}": str(tmp_path / "empty"),
            "{config}": str(run_dir / "config.yaml")}
    assert main([subs.get(a, a) for a in args]) == 2
    assert fix in capsys.readouterr().err


def test_a_run_with_two_data_caches_asks_for_data(run_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    shutil.copytree(run / "data-abc", run / "data-def")
    assert main([str(run), *FAST]) == 2
    err = capsys.readouterr().err
    assert "has 2 data-* folders" in err and "pass --data DIR" in err


def test_a_missing_split_names_the_task_options(run_dir, capsys):
    model = str(run_dir / "checkpoints" / "trunk" / "task0")
    assert main([str(run_dir), "--new-task", "2", "--model", model, *FAST]) == 2
    err = capsys.readouterr().err
    assert "no split(s) ['task2_train']" in err and "--old-task/--new-task" in err


def test_a_stored_probe_takes_other_thresholds(run_dir, tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main([str(run_dir), *FAST, "--output", str(out)]) == 0
    strict = tmp_path / "strict.json"
    assert main(["--suggestion", str(out), "--learn-min", "2.0", "--output", str(strict)]) == 0
    sug = json.loads(strict.read_text())["suggestion"]
    assert sug["k"] is None and sug["rule_k"] == 0 and sug["learn_min"] == 2.0 and "no depth keeps" in sug["rule_reason"]
    assert not any(r["eligible"] for r in sug["rows"])
    assert json.loads(out.read_text())["suggestion"]["learn_min"] == 0.8  # the stored file is left as it was


def test_a_stored_probe_from_before_reads_as_evidence_with_no_k(tmp_path, capsys):
    """The committed fair seed-0 file (written when the command still named a k) prints the table, the hit rate
    and no k; against that seed's matched-budget arms the rule's pick is not among the best."""
    from pathlib import Path

    results = Path(__file__).resolve().parents[3] / "benchmarks" / "results"
    out = tmp_path / "s.json"
    assert main(["--suggestion", str(results / "suggest_k_2026-12-03" / "five_fair_seed0_suggest.json"), "--compare",
                 str(results / "continual_fair_2026-12-03" / "seed0" / "results.json"), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| k=2 | 100.0% | 100.0% | 1.392 | 71% | no |" in printed and "0/3" in printed
    assert "Suggested k: none;" in printed and "The rule's pick k=1: NOT among the best arms by ACC (freeze2)" in printed
    assert json.loads(out.read_text())["suggestion"]["k"] is None
