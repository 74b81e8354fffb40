"""Benchmarks, one subpackage per concern; each runs as `python -m benchmarks.<concern>` (gpu/: `bash benchmarks/gpu/suite.sh`).

    train/    end-to-end training: FastFreeze against full fine-tuning, naive freezing (+ Liger) and the
              suffix-only floor; the FLOP model (`python -m benchmarks.train.flop_model`) and plots
              (`python -m benchmarks.train.plot`)
    memory/   bytes saved for backward and held, counted from the tensors, against the analytic model (runs train/'s arms)
    kernels/  csrc_triton ops against torch eager, torch.compile and Liger-Kernel
    aot/      every csrc_triton kernel compiled for real GPU architectures on a CPU machine
    compat/   every registered causal-LM type trained by FastFreezeTrainer like the plain recipe
    gpu/      the one-GPU suite: kernel tests, kernels/, train/, an FSDP check, one verdict line per target
    memtrack.py  the memory instrument all of them count bytes with (tensor-level, device-independent)
    results/  committed results

Imports go one way, checked by `lint-imports` (pyproject.toml): gpu > aot | compat | kernels > memory > train >
memtrack, all on fastfreeze; the package never imports benchmarks, and only tests/benchmarks/ does.
"""
