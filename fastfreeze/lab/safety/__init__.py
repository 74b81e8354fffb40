"""The safety experiments in one place: synthetic identity-shift data and demo, the safety world and `fastfreeze safety`.

- `synthetic.py` / `demo.py`: the safety demo (identity shift after safety alignment, refusal rate per arm);
- `world_data.py` / `world.py` / `world_eval.py` / `world_report.py`: the safety world (data, runs,
  evaluation, the table);
- `cli.py`: `fastfreeze safety eval | demo | world`.
Refusal measurement itself is `fastfreeze.lab.refusals` (the continual runner uses it too).
"""
