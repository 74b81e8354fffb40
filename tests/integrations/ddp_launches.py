"""Repeat the DDP test's torchrun launches N times and count failures: `python -m tests.integrations.ddp_launches 50`.

Launch i runs scenario i mod 4 of tests/integrations/ddp_worker.py (a fresh process group each, as
tests/integrations/test_distributed.py launches them); a launch that exits non-zero (an abort in
C++ teardown shows as a signal exit) or times out is counted and its stderr tail printed. The
summary line is what benchmarks/results/ddp_launches_<date>.txt records.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time

from tests.integrations.ddp_worker import SCENARIOS
from tests.integrations.test_distributed import WORKER, launch


def main(launches: int) -> int:
    failures, start = 0, time.time()
    for i in range(launches):
        scenario = SCENARIOS[i % len(SCENARIOS)]
        with tempfile.TemporaryDirectory() as out:
            t0 = time.time()
            try:
                proc = launch(WORKER, out, scenario)
                rc, tail = proc.returncode, proc.stderr[-2000:]
            except subprocess.TimeoutExpired as err:
                rc, tail = "timeout", str(err.stderr or "")[-2000:]
        failures += rc != 0
        print(f"launch {i + 1:3d} {scenario:26s} rc={rc} {time.time() - t0:5.1f}s", flush=True)
        if rc != 0:
            print(tail, flush=True)
    print(f"SUMMARY: {launches} consecutive launches ({len(SCENARIOS)} scenarios in turn), {failures} failed, "
          f"{time.time() - start:.0f} s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50))
