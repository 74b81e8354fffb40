"""Run one seed of five_task_fair with 1 torch thread: python run_seed.py SEED OUT_DIR (from the repo root)."""
import sys, time, torch
torch.set_num_threads(1)
from fastfreeze.lab.continual.config import ContinualConfig
from fastfreeze.lab.continual.runner import run_continual
seed, out = int(sys.argv[1]), sys.argv[2]
cfg = ContinualConfig.from_yaml("fastfreeze/lab/continual/configs/five_task_fair.yaml")
cfg.seed, cfg.output_dir = seed, out
t0 = time.time()
run_continual(cfg)
print(f"WALL {time.time() - t0:.1f}s")
