"""`python -m benchmarks.memory`: memory accounting of the training arms, measured against the analytic model (benchmarks/memory/bench.py)."""
import sys

from benchmarks.memory.bench import main

sys.exit(main())
