"""`python -m benchmarks.kernels`: the csrc_triton kernels against torch, torch.compile and Liger-Kernel (benchmarks/kernels/bench.py)."""
import sys

from benchmarks.kernels.bench import main

sys.exit(main())
