"""`python -m benchmarks.deepspeed`: per-rank DeepSpeed ZeRO memory table (benchmarks/deepspeed/memory.py)."""
import sys

from benchmarks.deepspeed.memory import main

sys.exit(main())
