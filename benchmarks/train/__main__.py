"""`python -m benchmarks.train`: the end-to-end training benchmark (benchmarks/train/bench.py)."""
import sys

from benchmarks.train.bench import main

sys.exit(main())
