"""`fastfreeze estimate`: parameters, step-time ratios, memory, cache size and when the cache pays, from a model config."""
from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastfreeze estimate",
        description="Predict what freezing the embedding + bottom k layers does to a run, from the model's config "
                    "alone (FLOP and memory models checked against CPU measurements; see docs/cache-sizing.md).")
    p.add_argument("model", help="a config.json path, a model directory, or a Hub id already in the local HF cache")
    p.add_argument("--k", type=int, required=True, help="frozen decoder layers (FreezeConfig.num_frozen_layers)")
    p.add_argument("--seq", type=int, default=2048, help="sequence (packed row) length in tokens (default 2048)")
    p.add_argument("--batch", type=int, default=8, help="rows per device per step (default 8)")
    p.add_argument("--dataset-tokens", type=float, required=True, help="real tokens in the training set (e.g. 5e8)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--dtype", default=None, help="weights/activations dtype (default: the config's, else bfloat16)")
    dev = p.add_mutually_exclusive_group()
    dev.add_argument("--device", default=None, help="a named card: h100, h200, a100, l40s, l4")
    dev.add_argument("--flops", type=float, default=None, help="the device's achieved FLOP/s (measured), e.g. 3.5e14")
    p.add_argument("--mfu", type=float, default=None,
                   help="with --device: achieved / spec-sheet FLOP/s (an assumption; default 0.4)")
    read = p.add_mutually_exclusive_group()
    read.add_argument("--read-gbps", type=float, default=None,
                      help="GB/s the cache's read path delivers boundaries at (default: the rate benchmarks.cache measured, "
                           "printed with its source)")
    read.add_argument("--read-json", default=None,
                      help="a JSON from `python -m benchmarks.cache` run on your machine: use its read path's rate")
    p.add_argument("--write-gbps", type=float, default=None, help="GB/s of cache writes (default: the read rate)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from fastfreeze.estimate import Device, ModelShape, estimate, render
    from fastfreeze.estimate.payoff import DEFAULT_MFU, read_rate_from_benchmark

    if args.mfu is not None and args.device is None:
        raise SystemExit("fastfreeze estimate: --mfu goes with --device (with --flops give the achieved rate itself)")
    try:
        shape = ModelShape.from_config(args.model, seq=args.seq, batch=args.batch, dtype=args.dtype)
        dev = None
        if args.device:
            dev = Device.named(args.device, args.mfu if args.mfu is not None else DEFAULT_MFU)
        elif args.flops:
            dev = Device(f"{args.flops:.3g} FLOP/s (given)", args.flops)
        rate, source = (args.read_gbps * 1e9 if args.read_gbps else None), "given: --read-gbps"
        if args.read_json:
            measured = read_rate_from_benchmark(args.read_json)
            rate, source = measured.bytes_per_s, f"{measured.source}: {args.read_json}"
        est = estimate(shape, args.k, args.dataset_tokens, args.epochs, dev, read_bytes_per_s=rate,
                       write_bytes_per_s=args.write_gbps * 1e9 if args.write_gbps else None, read_source=source)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"fastfreeze estimate: {err}") from None
    print(render(est), end="")
    return 0
