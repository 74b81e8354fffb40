"""Where each model family keeps its embedding, decoder blocks, final norm and LM head (data, not code).

Every supported family is one `FamilySpec` row: attribute paths relative to the `*ForCausalLM`
object. Unknown decoder-only models go through `discover()`, which finds the one ModuleList of
blocks and treats every other child of the base model as either embedding side (before the
blocks) or the final norm. `resolve(model)` returns a `ModelParts` with the live modules.

Usage:
    parts = resolve(model)            # raises UnsupportedModelError with the fix when it can't
    parts.layers[:k], parts.embedding_side, parts.final_norm, parts.head
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from . import _hf_compat
from ._hf_compat import is_peft_model, text_config, zero3_gathered_per_module
from .errors import UnsupportedModelError, meta_weights_refusal
from .trace import eval_mode, probe_inputs, run_model


@dataclass(frozen=True)
class FamilySpec:
    """Where one family's parts live, and what its kernels are (the one family table).

    Parts: attribute paths relative to the `*ForCausalLM` object; `embedding_side` lists, in call
    order, the modules the base model runs before block 0 (embeddings, position embeddings,
    embedding dropout). Kernel facts (`fastfreeze.kernels`): `rms_norm` is the RMSNorm cast order,
    "llama" (``w * x.to(dtype)``) or "gemma" (``(x * (1 + w)).to(dtype)``), None for no RMSNorm
    kernel (LayerNorm families); `swiglu` the MLP projection layout, "split" (gate_proj, up_proj) or
    "fused" (Phi-3's gate_up_proj), None when the MLP is not SwiGLU (GELU, GeGLU); `fused_loss`: the
    CausalLM forward is head -> optional soft-cap -> ForCausalLMLoss, so the fused linear
    cross-entropy can replace it."""

    base: str
    layers: str
    final_norm: str
    head: str
    embedding_side: tuple[str, ...]
    rms_norm: str | None = None
    swiglu: str | None = None
    fused_loss: bool = True
    notes: str = ""


_LLAMA_LIKE = dict(
    base="model", layers="model.layers", final_norm="model.norm", head="lm_head",
    embedding_side=("model.embed_tokens",),
)

FAMILIES: dict[str, FamilySpec] = {
    "llama": FamilySpec(**_LLAMA_LIKE, rms_norm="llama", swiglu="split"),
    "mistral": FamilySpec(**_LLAMA_LIKE, rms_norm="llama", swiglu="split"),
    "qwen2": FamilySpec(**_LLAMA_LIKE, rms_norm="llama", swiglu="split",
                        notes="per-layer sliding/full attention from config.layer_types"),
    "qwen3": FamilySpec(**_LLAMA_LIKE, rms_norm="llama", swiglu="split", notes="q/k RMSNorm inside attention"),
    "phi3": FamilySpec(**_LLAMA_LIKE, rms_norm="llama", swiglu="fused",
                       notes="fused qkv and gate_up projections; partial rotary"),
    "gemma2": FamilySpec(**_LLAMA_LIKE, rms_norm="gemma", notes="GeGLU MLP; scaled embedding module; tied head by "
                         "default; final logit soft-cap"),
    "gemma3_text": FamilySpec(**_LLAMA_LIKE, rms_norm="gemma", notes="GeGLU MLP; scaled embedding module"),
    "gpt_neox": FamilySpec(base="gpt_neox", layers="gpt_neox.layers", final_norm="gpt_neox.final_layer_norm",
                           head="lm_head", embedding_side=("gpt_neox.embed_in", "gpt_neox.emb_dropout"),
                           notes="LayerNorm, GELU MLP; parallel residual; partial rotary"),
    "gpt2": FamilySpec(base="transformer", layers="transformer.h", final_norm="transformer.ln_f", head="lm_head",
                       embedding_side=("transformer.wte", "transformer.wpe", "transformer.drop"),
                       notes="LayerNorm, GELU MLP; absolute position embeddings; tied head"),
}


@dataclass
class ModelParts:
    """The live modules of one model, split the way fastfreeze needs them."""

    family: str
    spec: FamilySpec
    base: nn.Module
    layers: nn.ModuleList
    layers_path: str
    final_norm: nn.Module | None
    final_norm_path: str | None
    head: nn.Module
    head_path: str
    embedding_side: list[tuple[str, nn.Module]] = field(default_factory=list)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def layer_path(self, i: int) -> str:
        return f"{self.layers_path}.{i}"


def _get(model: nn.Module, path: str) -> nn.Module | None:
    obj = model
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _model_type(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", "") or ""


def check_supported(model: nn.Module) -> None:
    """Refuse, with the fix, models fastfreeze cannot freeze-split: encoder-decoders, non-causal-LMs,
    quantized models, and a PEFT wrapper handed to the table directly (`apply_freeze` / the trainers unwrap
    one first, `fastfreeze.adapters`, and split its base model)."""
    cls = type(model).__name__
    if is_peft_model(model):
        raise UnsupportedModelError(
            f"{cls} is a PEFT-wrapped model. Pass the base model to fastfreeze first (freeze, then apply "
            "the adapter to the trainable suffix), or merge the adapter with `model.merge_and_unload()`."
        )
    config = getattr(model, "config", None)
    if config is None:
        raise UnsupportedModelError(f"{cls} has no `.config`; fastfreeze needs a transformers PreTrainedModel.")
    if getattr(config, "is_encoder_decoder", False):
        raise UnsupportedModelError(
            f"{cls} is an encoder-decoder model; fastfreeze freezes the bottom layers of decoder-only causal "
            "LMs. Load an `AutoModelForCausalLM` instead."
        )
    if _hf_compat.is_quantized(model):
        raise UnsupportedModelError(
            f"{cls} is quantized; fastfreeze does not support quantized weights yet. Load it in "
            "bf16/fp16/fp32 (no `quantization_config`)."
        )
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        raise UnsupportedModelError(
            f"{cls} has no LM head (`get_output_embeddings()` is None): it is not a causal LM. "
            "Load the model with `AutoModelForCausalLM.from_pretrained(...)`."
        )


def resolve(model: nn.Module) -> ModelParts:
    """Locate embedding side, blocks, final norm and head of `model` (family table first, then discovery)."""
    check_supported(model)
    family = _model_type(model)
    spec = FAMILIES.get(family)
    if spec is None:
        return discover(model)
    missing = [p for p in (spec.base, spec.layers, *spec.embedding_side[:1]) if _get(model, p) is None]
    if missing:
        raise UnsupportedModelError(
            f"{type(model).__name__} (model_type={family!r}) lacks {missing}; expected the layout of "
            f"{family} in transformers. Is this a custom fork? File an issue with `print(model)`."
        )
    layers = _get(model, spec.layers)
    if not isinstance(layers, nn.ModuleList):
        raise UnsupportedModelError(f"{spec.layers} is {type(layers).__name__}, expected an nn.ModuleList of blocks.")
    head, head_path = _head(model)
    # The table names the parts; which modules run before block 0 is still read off execution order,
    # so a family whose forward changed between transformers versions cannot fool the split.
    side = trace_order(model, spec.layers, head_path).embedding_side
    return ModelParts(
        family=family, spec=spec, base=_get(model, spec.base), layers=layers, layers_path=spec.layers,
        final_norm=_get(model, spec.final_norm), final_norm_path=spec.final_norm,
        head=head, head_path=head_path, embedding_side=[(p, model.get_submodule(p)) for p in side],
    )


def _head(model: nn.Module) -> tuple[nn.Module, str]:
    # The head's attribute name moved between transformers versions (GPT-NeoX: embed_out -> lm_head),
    # so ask the model rather than trusting a path.
    head = model.get_output_embeddings()
    return head, next(n for n, m in model.named_modules() if m is head)


def _find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    n_layers = getattr(text_config(model.config), "num_hidden_layers", None)
    candidates = [
        (name, mod) for name, mod in model.named_modules()
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and (n_layers is None or len(mod) == n_layers)
    ]
    # Nested ModuleLists (e.g. experts inside a block) are not the block list: keep the shallowest.
    candidates = [c for c in candidates if not any(c[0].startswith(o[0] + ".") for o in candidates if o is not c)]
    if len(candidates) != 1:
        found = [c[0] for c in candidates] or "none"
        raise UnsupportedModelError(
            f"Cannot find the decoder blocks of {type(model).__name__} (model_type={_model_type(model)!r}): "
            f"expected one nn.ModuleList of config.num_hidden_layers={n_layers} blocks, found {found}. "
            "Add a FamilySpec for this family to fastfreeze/families.py:FAMILIES."
        )
    return candidates[0]


def discover(model: nn.Module) -> ModelParts:
    """Generic path for decoder-only HF causal LMs whose blocks form one ModuleList.

    Which modules form the embedding side, and which the final norm, is decided by *execution
    order* on a probe forward (see `trace_order`), never by type or name: a module belongs to the
    embedding side only if every call of it ends before block 0 starts."""
    layers_path, layers = _find_blocks(model)
    base_path = layers_path.rsplit(".", 1)[0] if "." in layers_path else ""
    base = _get(model, base_path) if base_path else model
    head, head_path = _head(model)
    order = trace_order(model, layers_path, head_path)
    spec = FamilySpec(base=base_path, layers=layers_path, final_norm=order.final_norm or "", head=head_path,
                      embedding_side=tuple(order.embedding_side), notes="discovered generically")
    return ModelParts(
        family=_model_type(model) or "generic", spec=spec, base=base, layers=layers, layers_path=layers_path,
        final_norm=_get(model, order.final_norm) if order.final_norm else None, final_norm_path=order.final_norm,
        head=head, head_path=head_path, embedding_side=[(p, model.get_submodule(p)) for p in order.embedding_side],
    )


@dataclass
class ExecutionOrder:
    """What a probe forward showed: modules (names) that ran wholly before block 0, and the first
    module with parameters that ran after the last block (the final norm)."""

    embedding_side: list[str]
    final_norm: str | None


def trace_order(model: nn.Module, layers_path: str, head_path: str) -> ExecutionOrder:
    """Run one probe forward with hooks on every module and sort modules by when they ran.

    Refuses models whose blocks do not each run exactly once, in order (looped or shared layers):
    their bottom blocks are not a prefix of the computation."""
    start, end, calls = _record_calls(model)
    n = len(model.get_submodule(layers_path))
    blocks = [f"{layers_path}.{i}" for i in range(n)]
    counts = [calls.get(b, 0) for b in blocks]
    if any(c != 1 for c in counts) or any(start[a] > start[b] for a, b in zip(blocks, blocks[1:])):
        raise UnsupportedModelError(
            f"{type(model).__name__}: the decoder blocks do not each run once, in order, per forward "
            f"(calls per block: {counts}); the bottom blocks are not a prefix of the computation, so they "
            "cannot be frozen as one. Check the model config (looped or shared layers)."
        )
    b0, b_end = start[blocks[0]], end[blocks[-1]]
    skip = (layers_path + ".", head_path)

    def eligible(name):
        inside = name.startswith(skip[0]) or name == head_path or name.startswith(head_path + ".")
        return name in calls and not inside and not layers_path.startswith(name + ".") and name != layers_path

    before = [nm for nm, _ in model.named_modules() if nm and eligible(nm) and end[nm] < b0]
    before = [nm for nm in before if not any(nm.startswith(o + ".") for o in before)]  # outermost only
    side = [nm for nm in before if _has_params(model.get_submodule(nm))
            or isinstance(model.get_submodule(nm), nn.Dropout)]
    emb = model.get_input_embeddings()
    emb_name = next((nm for nm, m in model.named_modules() if m is emb), None)
    owner = next((nm for nm in side if emb_name == nm or (emb_name or "").startswith(nm + ".")), None)
    if owner is None:
        raise UnsupportedModelError(
            f"{type(model).__name__}: the input embedding ({emb_name}) does not run before block 0 on a probe "
            "forward, so it cannot head a frozen prefix."
        )
    side.sort(key=lambda nm: (nm != owner, start[nm]))  # the input embedding's module first, then call order
    after = sorted((nm for nm, _ in model.named_modules() if nm and eligible(nm) and start[nm] > b_end
                    and _has_params(model.get_submodule(nm))), key=start.__getitem__)
    return ExecutionOrder(embedding_side=side, final_norm=after[0] if after else None)


def _record_calls(model: nn.Module) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """One no-grad, eval-mode probe forward with hooks on every named module: (first start tick, last end
    tick, number of calls) per module name."""
    start: dict[str, int] = {}
    end: dict[str, int] = {}
    calls: dict[str, int] = {}
    tick = iter(range(1 << 62))
    handles = []

    def hooks(name):
        def pre(_m, _a):
            calls[name] = calls.get(name, 0) + 1
            start.setdefault(name, next(tick))

        def post(_m, _a, _o):
            end[name] = next(tick)
        return pre, post

    for name, m in model.named_modules():
        if name:
            pre, post = hooks(name)
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        with eval_mode(model), torch.no_grad(), zero3_gathered_per_module(model):  # ZeRO-3 at load: placeholders
            run_model(model, probe_inputs(model))
    finally:
        for h in handles:
            h.remove()
    return start, end, calls


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())
