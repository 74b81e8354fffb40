"""`python -m benchmarks.aot`: the ahead-of-time compile check of every csrc_triton kernel (benchmarks/aot/check.py)."""
import sys

from benchmarks.aot.check import main

sys.exit(main())
