"""The suffix-only floor of bench_train: layers[k:] + norm + head as their own model, and a minimal training loop without Trainer."""
from __future__ import annotations

import torch
from torch import nn

from fastfreeze._hf_compat import attn_implementation, set_attn_implementation


def suffix_model(model: nn.Module, k: int) -> nn.Module:
    """A LlamaForCausalLM made of `model`'s layers[k:], norm, rotary and head (shared modules), fed
    `inputs_embeds`: the model's own forward, mask and loss, with nothing below block k."""
    from transformers import LlamaForCausalLM

    cfg = model.config.__class__.from_dict(model.config.to_dict())
    cfg.num_hidden_layers = model.config.num_hidden_layers - k
    cfg.use_cache = False  # a KV cache would index layers by their original layer_idx (>= L - k)
    with torch.device("meta"):
        suffix = LlamaForCausalLM(cfg)
    suffix.model.layers = nn.ModuleList(model.model.layers[k:])
    suffix.model.norm, suffix.model.rotary_emb, suffix.lm_head = model.model.norm, model.model.rotary_emb, model.lm_head
    w = model.model.embed_tokens.weight
    suffix.model.embed_tokens = nn.Embedding(1, w.shape[1], device=w.device, dtype=w.dtype).requires_grad_(False)
    set_attn_implementation(suffix, attn_implementation(model.config))
    left = [n for n, t in list(suffix.named_parameters()) + list(suffix.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"suffix_model left meta tensors {left[:3]}; the model layout changed")
    return suffix


def minimal_loop(trainer, ctx, spec, hook) -> None:
    """The floor without Trainer's loop: same optimizer, scheduler, data order, clipping; nothing else."""
    from transformers import set_seed

    model = trainer.model.to(ctx.device)
    if spec.ckpt:
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trainer.create_optimizer_and_scheduler(num_training_steps=ctx.max_steps)
    opt, sched = trainer.optimizer, trainer.lr_scheduler
    set_seed(trainer.args.seed)
    loader = trainer.get_train_dataloader()
    params = [p for p in model.parameters() if p.requires_grad]
    autocast = (torch.autocast(ctx.device.type, dtype=torch.bfloat16) if trainer.args.bf16
                else torch.autocast(ctx.device.type, enabled=False))
    model.train()
    hook.start()
    step = 0
    while step < ctx.max_steps:
        for batch in loader:
            batch = {k: v.to(ctx.device, non_blocking=True) for k, v in batch.items()}
            with autocast:
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, trainer.args.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            trainer.bench_losses.append(loss.detach())
            step += 1
            hook.step_end()
            if step >= ctx.max_steps:
                break
