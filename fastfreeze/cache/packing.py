"""The install-time check behind per-document cache entries: packed documents must not see each other.

A packed (padding-free) row holds several documents, told apart only by ``position_ids`` restarting
at each (no ``attention_mask``). The cache keys each document by its own tokens and positions, which
is exact only if the model's attention implementation keeps the documents apart. This runs the
frozen prefix on one packed probe row and on each of its documents alone and compares the boundary
of every document; a difference refuses the per-document cache (packed rows are then keyed whole,
which is always exact) with the reason.

Usage: ``reason = packed_documents_refusal(prefix)   # None: documents may be cached one by one``
"""
from __future__ import annotations

import torch

from .._hf_compat import attn_implementation, text_config
from ..prefix import FrozenPrefix
from ..tolerance import rel_diff, tolerance
from ..trace import eval_mode

__all__ = ["packed_documents_refusal"]

_DOC_LENGTHS = (5, 7, 3)


def packed_documents_refusal(prefix: FrozenPrefix) -> str | None:
    """Why documents of a packed row cannot be cached one by one on this model (None: they can).

    Runs the prefix 1 + len(_DOC_LENGTHS) times on a few tokens; skipped (refused, with the reason)
    when the prefix weights are sharded or not materialized, since a lone rank cannot run it then."""
    params = list(prefix.parameters())
    if not params:
        return "the prefix has no parameters to run the packed-document check with"
    p0 = params[0]
    if p0.device.type == "meta" or prefix.sharded():
        return ("the prefix weights are sharded or on the meta device when the cache opens, so the packed-document "
                "check could not run; packed rows are keyed whole")
    model = prefix.model
    vocab = int(getattr(text_config(model.config), "vocab_size", 0) or 0)
    if vocab < 3:
        return "the model config has no vocab_size to build the packed-document probe row from"
    g = torch.Generator().manual_seed(11)
    docs = [torch.randint(1, vocab, (n,), generator=g) for n in _DOC_LENGTHS]
    device = p0.device
    ids = torch.cat(docs).unsqueeze(0).to(device)
    pos = torch.cat([torch.arange(n) for n in _DOC_LENGTHS]).unsqueeze(0).to(device)
    with prefix.uncounted(), eval_mode(model):
        try:
            packed = prefix.compute_boundary(input_ids=ids, position_ids=pos)[0]
            alone = [prefix.compute_boundary(input_ids=d.unsqueeze(0).to(device),
                                             position_ids=torch.arange(d.numel(), device=device).unsqueeze(0))[0]
                     for d in docs]
        except Exception as err:  # a forward that needs more than ids and positions: no per-document entries
            return f"the packed-document check could not run the prefix ({type(err).__name__}: {err}); packed rows are keyed whole"
    # Attending across documents changes a boundary by O(1); a long packed row against a short one, rounding.
    tol = tolerance(packed.dtype)
    worst = max(rel_diff(p, a) for p, a in zip(packed.split(list(_DOC_LENGTHS)), alone))
    if worst > tol:
        return (f"attention implementation {attn_implementation(model.config)!r} lets the documents of a packed row "
                f"(position_ids restarting, no attention_mask) see each other (boundary of a document packed vs "
                f"alone differs by {worst:.1e} > {tol:.0e}), so packed rows are keyed whole; use sdpa, eager or "
                "flash_attention_2, which keep packed documents apart")
    return None
