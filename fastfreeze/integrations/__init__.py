"""Where you already train: TRL's SFTTrainer (`trl`), PEFT adapters on the suffix (`peft`), FSDP / DeepSpeed settings (`distributed`).

Usage:
    from fastfreeze import FastFreezeSFTTrainer                       # fastfreeze.integrations.trl
    LoraConfig(target_modules=[...], **fastfreeze.integrations.peft.suffix_lora_kwargs(model, k))
    TrainingArguments(fsdp="full_shard auto_wrap", fsdp_config=fastfreeze.integrations.distributed.fsdp_config(model))
"""
