"""`python -m benchmarks.cache`: disk-cache read throughput vs the prefix's tokens/s (benchmarks/cache/read.py)."""
import sys

from benchmarks.cache.read import main

sys.exit(main())
