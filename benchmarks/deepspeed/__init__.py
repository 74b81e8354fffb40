"""Per-rank memory of DeepSpeed ZeRO-1/2/3 under full fine-tuning, the plain freeze and fastfreeze, counted from live tensors."""
