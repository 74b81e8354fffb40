"""The lab: what reproduces and extends the paper on top of the library; it imports the library, never the reverse.

The Biography generator itself is library data (`fastfreeze.data.biography`): `fastfreeze verify` uses it as its
offline default corpus, and the library may not import the lab. The Biography experiments are `continual/`.

- `refusals/`   refusal-rate measurement of greedy responses (keywords or your judge);
- `continual/`  the continual-learning runner: configs, training arms, evaluation, budgets and early stop,
                recovery and orthogonality, reports and plots, the demo and its shipped checkpoint, and the
                `fastfreeze continual | demo | recover | orthogonality` commands;
- `suggest/`    suggest-k: probe the next task with each depth frozen (`fastfreeze suggest-k`);
- `safety/`     the safety experiments: synthetic data, the safety demo, the safety world (data, runs,
                evaluation, report) and `fastfreeze safety`.
"""
