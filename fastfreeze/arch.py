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

from torch import nn


class UnsupportedModelError(ValueError):
    """The model's structure is not one fastfreeze can split into a frozen prefix and a trainable suffix."""


@dataclass(frozen=True)
class FamilySpec:
    """Where one family's parts live. `embedding_side` lists, in call order, the modules the base
    model runs before block 0 (embeddings, position embeddings, embedding dropout)."""

    base: str
    layers: str
    final_norm: str
    head: str
    embedding_side: tuple[str, ...]
    norm: str = "rms"  # "rms" | "rms_offset" (Gemma's 1 + w) | "layer"
    mlp: str = "swiglu"  # "swiglu" | "gelu" | "geglu"
    logit_softcap_attr: str | None = None  # config attribute holding the final logit soft-cap
    notes: str = ""


_LLAMA_LIKE = dict(
    base="model", layers="model.layers", final_norm="model.norm", head="lm_head",
    embedding_side=("model.embed_tokens",),
)

FAMILIES: dict[str, FamilySpec] = {
    "llama": FamilySpec(**_LLAMA_LIKE),
    "mistral": FamilySpec(**_LLAMA_LIKE),
    "qwen2": FamilySpec(**_LLAMA_LIKE, notes="per-layer sliding/full attention from config.layer_types"),
    "qwen3": FamilySpec(**_LLAMA_LIKE, notes="q/k RMSNorm inside attention"),
    "phi3": FamilySpec(**_LLAMA_LIKE, notes="fused qkv and gate_up projections; partial rotary"),
    "gemma2": FamilySpec(**_LLAMA_LIKE, norm="rms_offset", mlp="geglu", logit_softcap_attr="final_logit_softcapping",
                         notes="scaled embedding module; tied head by default"),
    "gemma3_text": FamilySpec(**_LLAMA_LIKE, norm="rms_offset", mlp="geglu",
                              logit_softcap_attr="final_logit_softcapping", notes="scaled embedding module"),
    "gpt_neox": FamilySpec(base="gpt_neox", layers="gpt_neox.layers", final_norm="gpt_neox.final_layer_norm",
                           head="lm_head", embedding_side=("gpt_neox.embed_in", "gpt_neox.emb_dropout"),
                           norm="layer", mlp="gelu", notes="parallel residual; partial rotary"),
    "gpt2": FamilySpec(base="transformer", layers="transformer.h", final_norm="transformer.ln_f", head="lm_head",
                       embedding_side=("transformer.wte", "transformer.wpe", "transformer.drop"),
                       norm="layer", mlp="gelu", notes="absolute position embeddings; tied head"),
}

_NORM_NAMES = ("norm", "final_layer_norm", "ln_f", "norm_f", "final_norm", "final_layernorm")


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


def is_peft_model(model: nn.Module) -> bool:
    return type(model).__module__.startswith("peft")


def check_supported(model: nn.Module) -> None:
    """Refuse, with the fix, models fastfreeze cannot freeze-split: encoder-decoders, non-causal-LMs,
    quantized models and PEFT wrappers (those go through `fastfreeze.peft_support`)."""
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
    if getattr(model, "is_quantized", False) or getattr(model, "hf_quantizer", None) is not None:
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
    side = [(p, _get(model, p)) for p in spec.embedding_side if _get(model, p) is not None]
    head, head_path = _head(model)
    return ModelParts(
        family=family, spec=spec, base=_get(model, spec.base), layers=layers, layers_path=spec.layers,
        final_norm=_get(model, spec.final_norm), final_norm_path=spec.final_norm,
        head=head, head_path=head_path, embedding_side=side,
    )


def _head(model: nn.Module) -> tuple[nn.Module, str]:
    # The head's attribute name moved between transformers versions (GPT-NeoX: embed_out -> lm_head),
    # so ask the model rather than trusting a path.
    head = model.get_output_embeddings()
    return head, next(n for n, m in model.named_modules() if m is head)


def discover(model: nn.Module) -> ModelParts:
    """Generic path for decoder-only HF causal LMs whose blocks form one ModuleList.

    The base model is the child holding that ModuleList; its other children with parameters, or
    dropouts, become the embedding side (declaration order, which HF follows in call order), and a
    child named like a norm becomes the final norm. The prefix runtime then checks by a probe
    forward that this split really is the model's data flow, so a wrong guess fails loudly."""
    n_layers = getattr(model.config, "num_hidden_layers", None)
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
            "Add a FamilySpec for this family to fastfreeze/arch.py:FAMILIES."
        )
    layers_path, layers = candidates[0]
    base_path = layers_path.rsplit(".", 1)[0] if "." in layers_path else ""
    base = _get(model, base_path) if base_path else model
    head, head_path = _head(model)
    final_norm_path, final_norm, side = None, None, []
    for name, child in base.named_children():
        full = f"{base_path}.{name}" if base_path else name
        if child is layers:
            continue
        if name in _NORM_NAMES:
            final_norm_path, final_norm = full, child
        elif any(True for _ in child.parameters()) or isinstance(child, nn.Dropout):
            side.append((full, child))
    if not side:
        raise UnsupportedModelError(f"Found no input embedding in {base_path or type(model).__name__}.")
    norm_kind = "layer" if isinstance(final_norm, nn.LayerNorm) else "rms"
    spec = FamilySpec(base=base_path, layers=layers_path, final_norm=final_norm_path or "", head=head_path,
                      embedding_side=tuple(p for p, _ in side), norm=norm_kind, mlp="unknown",
                      notes="discovered generically")
    return ModelParts(
        family=_model_type(model) or "generic", spec=spec, base=base, layers=layers, layers_path=layers_path,
        final_norm=final_norm, final_norm_path=final_norm_path, head=head, head_path=head_path,
        embedding_side=side,
    )
