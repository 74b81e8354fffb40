"""`python -m benchmarks.compat`: the compatibility sweep over every registered causal-LM type (benchmarks/compat/sweep.py)."""
import sys

from benchmarks.compat.sweep import main

sys.exit(main())
