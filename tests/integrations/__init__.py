"""Integration tests: TRL, PEFT, multi-process training."""
