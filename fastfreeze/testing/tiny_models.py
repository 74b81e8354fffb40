"""Tiny random-init causal LMs of any registered model type: what the compatibility sweep and the tests train.

The package itself never builds one. It lives here, not in benchmarks/ or tests/, because both of those
import it and neither may import the other (the import contracts in pyproject.toml), as torch keeps
its shared test scaffolding in torch.testing.

`tiny_config(model_type)` shrinks the type's default config generically, by field name (hidden
size, layers, heads, experts, vocabulary, positions, dropouts, per-layer lists), into a model small
enough to train a few steps on one CPU core. Knowledge of single model types is kept to the few
settings a field-name rule cannot derive (`_TYPE_OVERRIDES`).

Usage:
    cfg = tiny_config("llama"); model = build_model(cfg, seed=0)
"""
from __future__ import annotations

import dataclasses

import torch
from transformers import CONFIG_MAPPING, AutoModelForCausalLM

from fastfreeze._hf_compat import set_config_attn_implementation

HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM = 64, 4, 4, 2, 16
INTERMEDIATE, EXPERT_INTERMEDIATE, VOCAB, POSITIONS = 128, 32, 128, 64
EXPERTS, EXPERTS_PER_TOKEN = 4, 2

# Field name -> tiny value, applied when the field exists and its default is not None (a None
# default usually means "derive it from the others", which the config then does from our values).
_SET = {
    **dict.fromkeys(("hidden_size", "n_embd", "d_model", "n_embed", "embed_dim", "hidden_dim", "model_dim",
                     "dim", "word_embed_proj_dim", "embedding_size", "lru_width", "cross_attention_hidden_size",
                     "backbone_hidden_size", "emb_dim", "input_embedding_size"),
                    HIDDEN),
    **dict.fromkeys(("num_hidden_layers", "n_layer", "n_layers", "num_layers", "decoder_layers"), LAYERS),
    **dict.fromkeys(("num_attention_heads", "n_head", "n_heads", "num_heads", "decoder_attention_heads",
                     "swa_num_attention_heads", "index_n_heads", "indexer_n_heads"), HEADS),
    **dict.fromkeys(("num_key_value_heads", "n_kv_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num",
                     "swa_num_key_value_heads", "indexer_kv_heads"), KV_HEADS),
    **dict.fromkeys(("head_dim", "kv_channels", "d_head", "dim_head", "swa_head_dim",
                     "index_head_dim", "indexer_head_dim", "v_head_dim", "qk_head_dim"), HEAD_DIM),
    **dict.fromkeys(("intermediate_size", "ffn_dim", "n_inner", "d_ff", "ffn_hidden_size", "decoder_ffn_dim",
                     "dim_ff", "dff", "d_inner", "intermediate_size_mlp", "dense_intermediate_size",
                     "prefix_dense_intermediate_size", "feed_forward_size"), INTERMEDIATE),
    **dict.fromkeys(("moe_intermediate_size", "shared_expert_intermediate_size", "shared_intermediate_size",
                     "expert_ffn_hidden_size", "moe_shared_expert_intermediate_size",
                     "shared_experts_intermediate_size"), EXPERT_INTERMEDIATE),
    **dict.fromkeys(("vocab_size", "vocab_size_per_layer_input", "unpadded_vocab_size", "output_vocab_size"), VOCAB),
    **dict.fromkeys(("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "seq_length",
                     "max_sequence_length", "context_length", "original_max_position_embeddings",
                     "max_target_positions"), POSITIONS),
    **dict.fromkeys(("q_lora_rank", "o_lora_rank"), 32),
    **dict.fromkeys(("kv_lora_rank",), 16),
    **dict.fromkeys(("qk_rope_head_dim", "qk_nope_head_dim"), 8),
    **dict.fromkeys(("hidden_size_per_layer_input", "laurel_rank", "ple_embed_dim", "loop_gate_rank",
                     "gated_norm_rank", "moe_latent_size", "router_hidden_size"), 8),
    **dict.fromkeys(("state_size", "mamba_d_state", "ssm_state_size"), 8),
    **dict.fromkeys(("linear_num_value_heads", "linear_num_key_heads", "linear_num_heads", "mamba_n_heads",
                     "n_mamba_heads", "mamba_num_heads"), 4),
    **dict.fromkeys(("linear_key_head_dim", "linear_value_head_dim", "linear_head_dim"), 16),
    **dict.fromkeys(("mamba_n_groups", "n_groups", "mamba_ngroups"), 1),
    **dict.fromkeys(("mamba_chunk_size", "chunk_size"), 16),
    **dict.fromkeys(("sliding_window", "sliding_window_size", "attention_window_size", "window_size",
                     "local_attention_window_len"), 8),
    **dict.fromkeys(("first_k_dense_replace", "num_dense_layers", "moe_layer_start_index"), 1),
    **dict.fromkeys(("num_kv_shared_layers",), 0),
    **dict.fromkeys(("num_mtp_layers", "num_nextn_predict_layers"), 0),
    **dict.fromkeys(("n_group", "topk_group"), 1),
    **dict.fromkeys(("index_topk",), 8),
    **dict.fromkeys(("rotary_dim",), 8),
}
# Counts capped at a maximum (a smaller default stays).
_CAP = {
    **dict.fromkeys(("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts", "num_experts_total",
                     "zero_expert_num"), EXPERTS),
    **dict.fromkeys(("num_experts_per_tok", "moe_top_k", "num_experts_per_token", "experts_per_token", "moe_topk",
                     "top_k_experts", "moe_k", "num_selected_experts"), EXPERTS_PER_TOKEN),
    **dict.fromkeys(("n_shared_experts", "num_shared_experts", "moe_num_shared_experts"), 1),
    **dict.fromkeys(("altup_num_inputs",), 2),
}
# Small, type-specific settings no field-name rule can derive (kept short on purpose).
_TYPE_OVERRIDES: dict[str, dict] = {
    "mamba2": {"num_heads": 8, "head_dim": 16},  # num_heads * head_dim must equal expand * hidden_size
    "gpt_neo": {"attention_types": [[["global", "local"], LAYERS // 2]]},
    "lfm2_moe": {"layer_types": ["conv", "full_attention"] * (LAYERS // 2)},  # no default in the config
    # axial position shape must multiply to the (fixed, 12-token) training length
    "reformer": {"axial_pos_embds_dim": [16, 48], "axial_pos_shape": [3, 4], "max_position_embeddings": 12,
                 "attn_layers": ["local", "lsh"] * 2, "local_attn_chunk_length": 4, "lsh_attn_chunk_length": 4,
                 "num_hashes": 1},
    # the default leaves the sparse indexer unsized although its layer_types use it
    "qwen4_exp_text": {"indexer_budget": 8, "indexer_compress_ratio": 2, "indexer_n_heads": HEADS,
                       "indexer_kv_heads": 1, "indexer_head_dim": HEAD_DIM},
    # the default config carries no RoPE parameters for the layer type its attention looks up
    "cohere_compass_text": {"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 10000.0}}},
}
_TOKEN_IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
_SUBCONFIG_FIELDS = ("text_config", "attn_config", "ffn_config", "decoder_config", "global_config",
                     "encoder_config", "patcher_config", "decoder")
MULTIMODAL_SUBCONFIGS = ("vision_config", "audio_config", "vq_config", "audio_encoder_config", "audio_encoder",
                         "depth_decoder_config", "text_encoder", "vision_encoder", "speech_config")
# Registered as causal LMs, but their forward is built around non-text inputs.
MULTIMODAL_TYPES = ("fuyu",)


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _is_dropout(name: str) -> bool:
    return "dropout" in name or "pdrop" in name or name.endswith("layerdrop") or name in ("dropout_p", "drop_rate")


def _shrink_layer_list(values: list, n: int) -> list:
    """A per-layer list cut to n entries that keeps every kind of layer and alternates them, so the
    frozen bottom and the trainable top both hold each kind (a hybrid model keeps attention and SSM)."""
    distinct: list = []
    for v in values:
        if v not in distinct:
            distinct.append(v)
    return [distinct[i % len(distinct)] for i in range(n)]


def _values(cls) -> dict:
    """Field values of the default config (what __post_init__ derived), else the field defaults."""
    fields = {f.name: _default(f) for f in dataclasses.fields(cls)}
    try:
        inst = cls().to_dict()
    except Exception:
        return fields
    return {name: inst.get(name, d) for name, d in fields.items()}


# None defaults some model code cannot handle (it reads them unconditionally).
_FILL_IF_NONE = {"head_dim": HEAD_DIM, "num_key_value_heads": KV_HEADS, "num_experts_per_tok": EXPERTS_PER_TOKEN,
                 "n_routed_experts": EXPERTS, "moe_intermediate_size": EXPERT_INTERMEDIATE, "n_shared_experts": 1}
_EXPERT_FIELDS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")


def shrink_fields(cls, overrides: dict | None = None) -> dict:
    """Keyword arguments that make config class `cls` tiny (dataclass fields only)."""
    kwargs: dict = {}
    if not dataclasses.is_dataclass(cls):
        return kwargs
    values = _values(cls)
    n_default = None
    for name in ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "decoder_layers"):
        if isinstance(values.get(name), int):
            n_default = values[name]
            break
    has_experts = any(values.get(n) for n in _EXPERT_FIELDS) or "num_experts_per_tok" in values
    for name, d in values.items():
        if d is dataclasses.MISSING:
            continue
        if name in _SET and d is not None and not isinstance(d, bool):
            if isinstance(d, (list, tuple)) and d and all(isinstance(x, int) for x in d):
                kwargs[name] = [_SET[name]] * LAYERS  # a per-layer size list
            elif isinstance(d, (int, float)):
                kwargs[name] = _SET[name]
        elif name in _CAP and isinstance(d, int) and not isinstance(d, bool) and d > _CAP[name]:
            kwargs[name] = _CAP[name]
        elif name in _FILL_IF_NONE and d is None and (name in ("head_dim", "num_key_value_heads") or has_experts):
            kwargs[name] = _FILL_IF_NONE[name]
        elif _is_dropout(name) and isinstance(d, float) and not isinstance(d, bool):
            kwargs[name] = 0.0
        elif name in _TOKEN_IDS and d is not None:
            kwargs[name] = [_TOKEN_IDS[name]] if isinstance(d, list) else _TOKEN_IDS[name]
        elif name in _SUBCONFIG_FIELDS and d is not None and hasattr(d, "to_dict"):
            kwargs[name] = shrink_fields(type(d))
        elif n_default and n_default != LAYERS and isinstance(d, (list, tuple)) and len(d) == n_default:
            kwargs[name] = _shrink_layer_list(list(d), LAYERS)
    if "qk_rope_head_dim" in values and "head_dim" in values:
        kwargs["head_dim"] = kwargs.get("qk_rope_head_dim", values["qk_rope_head_dim"])  # MLA: rope part
    if "kv_lora_rank" in values and "num_key_value_heads" in values:
        kwargs["num_key_value_heads"] = kwargs.get("num_attention_heads", HEADS)  # MLA: one latent per head
    # Mamba heads must tile the expanded width exactly: n_heads * head_dim == expand * hidden.
    expand = next((values[n] for n in ("mamba_expand", "expand") if isinstance(values.get(n), (int, float))), 2)
    n_heads = next((kwargs[n] for n in ("mamba_n_heads", "n_mamba_heads", "mamba_num_heads") if n in kwargs), None)
    for name in ("mamba_d_head", "mamba_head_dim", "mamba_headdim"):
        if name in values and n_heads:
            kwargs[name] = int(expand * HIDDEN) // n_heads
    if values.get("mamba_d_ssm") is not None:
        kwargs["mamba_d_ssm"] = int(expand * HIDDEN)
    kwargs.update(overrides or {})
    return kwargs


def config_class(model_type: str):
    return CONFIG_MAPPING[model_type]


def tiny_config(model_type: str):
    """The tiny fp32 eager-attention config of `model_type` (raises whatever the config raises)."""
    cls = config_class(model_type)
    kwargs = shrink_fields(cls, _TYPE_OVERRIDES.get(model_type))
    # Sub-configs given as dicts are built by the parent; shrink the ones left at their defaults too.
    cfg = cls(**kwargs)
    for name in _SUBCONFIG_FIELDS:
        sub = getattr(cfg, name, None) if name in getattr(cfg, "sub_configs", {}) else None
        if sub is not None and name not in kwargs and hasattr(sub, "to_dict"):
            kwargs[name] = shrink_fields(type(sub))
            cfg = cls(**kwargs)
    if hasattr(cfg, "is_decoder") and not getattr(cfg, "is_encoder_decoder", False):
        cfg.is_decoder = True  # encoder architectures registered as causal LMs run as decoders
    if hasattr(cfg, "use_cache"):
        cfg.use_cache = False
    set_config_attn_implementation(cfg, "eager")
    return cfg


def text_config(cfg):
    get = getattr(cfg, "get_text_config", None)
    try:
        return get() if callable(get) else cfg
    except Exception:
        return cfg


def not_applicable_reason(model_type: str, cfg=None) -> str | None:
    """Why `model_type` is outside fastfreeze's scope (encoder-decoder, multimodal), or None. Without
    `cfg` it judges from the config class alone (before a tiny config is even built)."""
    cls = config_class(model_type)
    if cfg is not None and getattr(cfg, "is_encoder_decoder", False):
        return "encoder-decoder"
    if cfg is None and dataclasses.is_dataclass(cls):
        field = {f.name: f for f in dataclasses.fields(cls)}.get("is_encoder_decoder")
        if field is not None and _default(field) is True:
            return "encoder-decoder"
    subs = set(getattr(cfg if cfg is not None else cls, "sub_configs", {}) or {})
    mm = sorted(subs & set(MULTIMODAL_SUBCONFIGS))
    if mm:
        return f"multimodal ({', '.join(mm)})"
    if model_type in MULTIMODAL_TYPES:
        return "multimodal (image inputs)"
    return None


def build_model(cfg, seed: int = 0):
    """A random-init fp32 causal LM from `cfg`, seeded, eager attention."""
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    except (TypeError, ValueError) as e:
        if "attn_implementation" not in str(e):
            raise
        model = AutoModelForCausalLM.from_config(cfg)
    model = model.float()
    set_config_attn_implementation(model.config, "eager")  # also where it cannot be switched later
    if hasattr(model, "set_default_language"):  # X-MOD: the language adapter to run
        cfg_ = model.config
        lang = getattr(cfg_, "default_language", None) or next(iter(getattr(cfg_, "languages", None) or []), None)
        if lang:
            model.set_default_language(lang)
    return model
