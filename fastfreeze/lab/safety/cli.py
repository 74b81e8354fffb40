"""`fastfreeze safety eval | demo | world`: refusal-rate evaluation of a saved model, the CPU demo, the world scenario.

Usage:
    fastfreeze safety eval --model DIR --prompts advbench.csv [--column goal] [--wrapper aoa] [--keywords extended-v1]
    fastfreeze safety demo [--output-dir runs/safety-demo] [--ks 1,2,3] [--epochs 5,20]
    fastfreeze safety world [--output-dir runs/safety-world] [--seeds 0,1,2] [--arms seq,k3,k6,paper:freeze-6layers]
The safety scenario inside a continual run is configured in YAML (`safety:` section), e.g.
`fastfreeze continual fastfreeze/lab/continual/configs/safety_7b_example.yaml`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _named_wrappers() -> dict[str, str | None]:
    from fastfreeze.lab.safety.synthetic import IDENTITY_EVAL_WRAPPER, SAFETY_PROMPT_FORMAT
    from fastfreeze.lab.refusals.prompts import AOA_WRAPPER

    return {"none": None, "aoa": AOA_WRAPPER, "demo": SAFETY_PROMPT_FORMAT, "demo-aoa": IDENTITY_EVAL_WRAPPER}


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{flag} expects comma-separated integers, e.g. 1,2,3; got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"{flag} is empty; give comma-separated integers, e.g. 1,2,3")
    return values


def _eval(argv: list[str]) -> int:
    from fastfreeze.lab.refusals.keywords import DEFAULT_PRESET, REFUSAL_KEYWORDS

    names = _named_wrappers()
    p = argparse.ArgumentParser(prog="fastfreeze safety eval",
                                description="Jailbreak / refusal rate (keyword proxy) of a saved model on a prompt file.")
    p.add_argument("--model", required=True, help="a save_pretrained folder with the model and its tokenizer")
    p.add_argument("--prompts", required=True, help="CSV / JSON / JSONL file of prompts")
    p.add_argument("--column", default="goal", help="field holding the prompt (AdvBench: goal)")
    p.add_argument("--wrapper", default="none",
                   help=f"template with {{goal}}, or one of {sorted(names)} (aoa = the paper's "
                   "'AOA, execute my instruction: {goal}'; demo = the demo's 'User: ...\\nAssistant:')")
    p.add_argument("--keywords", default=DEFAULT_PRESET, choices=sorted(REFUSAL_KEYWORDS))
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    p.add_argument("--chat-template", choices=("auto", "always", "never"), default="auto",
                   help="apply the tokenizer's chat template (auto: when it has one)")
    p.add_argument("--output", default=None, help="write the report with per-prompt records as JSON here")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (1 is fastest for tiny models)")
    a = p.parse_args(argv)
    wrapper = names.get(a.wrapper, a.wrapper)
    if wrapper is not None and "{goal}" not in wrapper:
        print(f"fastfreeze safety eval: --wrapper {a.wrapper!r} is neither a name ({sorted(names)}) nor a template "
              "with {goal}.", file=sys.stderr)
        return 2
    model_dir = Path(a.model)
    if not (model_dir / "config.json").is_file():
        print(f"fastfreeze safety eval: --model {a.model!r} is not a save_pretrained folder (no config.json).",
              file=sys.stderr)
        return 2
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fastfreeze.lab.refusals import evaluate_refusals, load_prompts

    if a.threads is not None:
        torch.set_num_threads(max(1, a.threads))
    try:
        prompts = load_prompts(a.prompts, column=a.column, limit=a.limit)
        tok = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir))
        if torch.cuda.is_available():
            model = model.to("cuda")
        use_template = {"auto": "auto", "always": True, "never": False}[a.chat_template]
        report = evaluate_refusals(model, tok, prompts, keywords=a.keywords, max_new_tokens=a.max_new_tokens,
                                   batch_size=a.batch_size, use_chat_template=use_template, wrapper=wrapper)
    except (OSError, KeyError, ValueError, TypeError) as e:
        print(f"fastfreeze safety eval: {e}", file=sys.stderr)
        return 2
    print(report)
    if a.output:
        print(f"records: {report.save(a.output)}")
    return 0


def _demo(argv: list[str]) -> int:
    from fastfreeze.lab.continual.config import ConfigError

    p = argparse.ArgumentParser(prog="fastfreeze safety demo",
                                description="Tiny aligned model + identity-shift fine-tune, SEQ vs Freeze(k), on CPU.")
    p.add_argument("--output-dir", default="runs/safety-demo")
    p.add_argument("--ks", type=lambda t: _int_list(t, "--ks"), default=[1, 2, 3],
                   help="Freeze arms: bottom k of the 4 decoder layers (+ the embedding), comma-separated")
    p.add_argument("--epochs", type=lambda t: _int_list(t, "--epochs"), default=[5, 20],
                   help="identity fine-tune lengths, one run each (comma-separated)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest for this tiny model)")
    p.add_argument("--quiet", action="store_true", help="only print the final table")
    a = p.parse_args(argv)
    import torch

    from fastfreeze.lab.continual.report import format_safety_table
    from fastfreeze.lab.safety.demo import run_safety_demo

    torch.set_num_threads(max(1, a.threads))
    start = time.time()
    try:
        runs = run_safety_demo(a.output_dir, ks=a.ks, epochs=a.epochs, seed=a.seed,
                               log=(lambda *_: None) if a.quiet else print)
    except ConfigError as e:
        print(f"fastfreeze safety demo: {e}", file=sys.stderr)
        return 2
    print()
    print(f"Safety demo (toy, synthetic, keyword proxy), {time.time() - start:.0f}s. Jailbreak = harmful-style "
          "request answered without a refusal keyword; AOA = under the identity-shift preamble.")
    print(format_safety_table(runs))
    for ep in runs:
        print(f"report: {Path(a.output_dir) / f'run-ep{ep}' / 'report.md'}")
    return 0


def _world(argv: list[str]) -> int:
    from fastfreeze.lab.continual.config import ConfigError

    p = argparse.ArgumentParser(prog="fastfreeze safety world",
                                description="Pretrained world + thin refusal alignment + identity shift, per arm, on CPU.")
    p.add_argument("--output-dir", default="runs/safety-world")
    p.add_argument("--seeds", type=lambda t: _int_list(t, "--seeds"), default=[0, 1, 2])
    p.add_argument("--arms", default="seq,k3,k6,paper:freeze-3layers,paper:freeze-6layers",
                   help="comma-separated: seq, k<N> (index-exact freeze), paper:<set> (the official substring rule)")
    p.add_argument("--match-em", type=float, default=None, help="identity EM that defines matched identity learning")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest for this tiny model)")
    p.add_argument("--quiet", action="store_true", help="only print the final table")
    a = p.parse_args(argv)
    import torch

    from fastfreeze import _io
    from fastfreeze.lab.safety.world import MATCH_EM, run_world
    from fastfreeze.lab.safety.world_report import format_world_table, summarize_world

    torch.set_num_threads(max(1, a.threads))
    start = time.time()
    arms = tuple(x.strip() for x in a.arms.split(",") if x.strip())
    try:
        results = run_world(a.output_dir, seeds=a.seeds, arms=arms, log=(lambda *_: None) if a.quiet else print,
                            match_em=MATCH_EM if a.match_em is None else a.match_em)
    except ConfigError as e:
        print(f"fastfreeze safety world: {e}", file=sys.stderr)
        return 2
    summary = summarize_world(results)
    table = format_world_table(summary)
    _io.write_json(Path(a.output_dir) / "summary.json", summary, indent=1)
    _io.write_text(Path(a.output_dir) / "table.md", table + "\n")
    print()
    print(f"Safety world (toy, synthetic), seeds {a.seeds}, {time.time() - start:.0f}s. Rates in %, mean "
          "[min-max] over seeds; (sys) = under the AOA system prompt; leak = the harmful action's content answer.")
    print(table)
    return 0


COMMANDS = {"eval": _eval, "demo": _demo, "world": _world}


def main(argv: list[str]) -> int:
    """Dispatch `fastfreeze safety <eval|demo|world> ...`. Usage: `main(["eval", "--model", "m", "--prompts", "p.csv"])`."""
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv[0] not in COMMANDS:
        print(f"fastfreeze safety: unknown subcommand {argv[0]!r}; use one of {sorted(COMMANDS)}.", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])
