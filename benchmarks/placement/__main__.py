"""`python -m benchmarks.placement`: the run_clm.py loading pattern on CPU, per arm (benchmarks/placement/bench.py)."""
import sys

from benchmarks.placement.bench import main

sys.exit(main())
