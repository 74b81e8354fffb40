"""Keys of the boundary cache: a content hash per example, and the fingerprint of the prefix that scopes them.

The boundary hidden state of an example is the input of the first trainable decoder layer for the
example's real (non-pad) tokens, an ``[n_tokens, hidden]`` tensor. It depends only on the token ids,
the position ids and the frozen prefix, so it is keyed by the content of the first two
(:func:`example_key`) inside a store scoped by a hash of the third (:func:`prefix_fingerprint`).

Usage::

    fp = prefix_fingerprint(frozen_named_tensors, config=model.config.to_dict(), dtype="bfloat16")
    key = example_key(ids[mask], positions[mask])  # one example's real tokens

The stores live in :mod:`fastfreeze.cache.store` (memory) and :mod:`fastfreeze.cache.disk`; the data
path in :mod:`fastfreeze.cache.collator`; opening and wiring into training in :mod:`fastfreeze.cache.wiring`.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import struct
from typing import Iterable

import torch

from .._hf_compat import zero3_gathered, zero3_partitioned

try:  # a torch built without distributed has no DTensor (and nothing sharded)
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover
    DTensor = None

__all__ = ["example_key", "library_versions", "prefix_fingerprint"]

_KEY_VERSION = b"fastfreeze-key-v1"
_FP_VERSION = b"fastfreeze-prefix-fp-v1"
_HASH_CHUNK_BYTES = 64 << 20  # device->host copy granularity when fingerprinting


def _as_int64_bytes(t: torch.Tensor) -> bytes:
    return t.detach().to(device="cpu", dtype=torch.int64).contiguous().numpy().tobytes()


def example_key(input_ids: torch.Tensor, position_ids: torch.Tensor) -> str:
    """Content hash (blake2b-128, hex) of one example's real token ids and their position ids.

    Usage: ``key = example_key(torch.tensor([5, 9, 2]), torch.arange(3))``
    """
    if not isinstance(input_ids, torch.Tensor) or not isinstance(position_ids, torch.Tensor):
        raise TypeError("example_key expects two 1-D integer tensors (input_ids, position_ids)")
    if input_ids.dim() != 1 or position_ids.dim() != 1 or input_ids.numel() != position_ids.numel():
        raise ValueError(
            f"example_key expects 1-D input_ids and position_ids of equal length, got shapes "
            f"{tuple(input_ids.shape)} and {tuple(position_ids.shape)}; pass one example's real tokens"
        )
    if input_ids.is_floating_point() or position_ids.is_floating_point():
        raise TypeError("example_key expects integer tensors; got a floating-point tensor")
    h = hashlib.blake2b(_KEY_VERSION, digest_size=16)
    # The length prefix makes the (ids, positions) split unambiguous.
    h.update(struct.pack("<q", input_ids.numel()))
    h.update(_as_int64_bytes(input_ids))
    h.update(_as_int64_bytes(position_ids))
    return h.hexdigest()


def cpu_ids_and_positions(
    input_ids: torch.Tensor, position_ids: torch.Tensor | None, who: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated int64 CPU copies of ``input_ids`` [B, T] and their positions [B, T] (``arange(T)`` when None).

    How `segments.segment_batch` reads positions: the one way HF decoders do.
    Usage: ``ids, pos = cpu_ids_and_positions(input_ids, None, "segment_batch")``
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids)
        raise ValueError(f"{who} expects input_ids of shape [B, T], got {shape}")
    b, t = input_ids.shape
    ids = input_ids.detach().to(device="cpu", dtype=torch.int64)
    if position_ids is None:
        return ids, torch.arange(t, dtype=torch.int64).expand(b, t)
    if position_ids.dim() == 1:
        position_ids = position_ids.unsqueeze(0)
    if position_ids.shape[-1] != t or position_ids.shape[0] not in (1, b):
        raise ValueError(f"position_ids shape {tuple(position_ids.shape)} does not match input_ids {(b, t)}")
    return ids, position_ids.detach().to(device="cpu", dtype=torch.int64).expand(b, t)


def _json_default(obj):
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, torch.dtype):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return repr(obj)


def _is_dtensor(t: torch.Tensor) -> bool:
    return DTensor is not None and isinstance(t, DTensor)


def _hash_tensor(name: str, t: torch.Tensor) -> bytes:
    if t.device.type == "meta":
        raise ValueError(
            f"prefix_fingerprint: tensor {name!r} is on the meta device (weights not loaded); "
            "fingerprint the model after its weights are materialized"
        )
    h = hashlib.sha256()
    h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
    flat = t.detach().reshape(-1)
    step = max(1, _HASH_CHUNK_BYTES // max(1, flat.element_size()))
    for start in range(0, flat.numel(), step):
        chunk = flat[start : start + step].to("cpu").contiguous()
        # Raw bytes of any dtype (bf16 included): hash the uint8 view, numpy has no bf16.
        h.update(chunk.view(torch.uint8).numpy())
    return h.digest()


def prefix_fingerprint(named_tensors: Iterable[tuple[str, torch.Tensor]], **facts) -> str:
    """Hex hash of every frozen tensor (name, dtype, shape, bytes) plus ``facts`` (sorted JSON).

    Put everything the boundary state depends on in ``facts``: model config dict, compute dtype,
    attn_implementation, kernel set, ``library_versions()``, num_frozen_layers. Deterministic across
    processes; the tensor order does not matter (sorted by name). DTensor shards (FSDP2) are hashed
    as their full tensor (a collective: every rank must call this), so the fingerprint is the
    unsharded model's on every rank. Cost: one sha256 pass over the
    bytes on CPU, tensors hashed in parallel threads (GPU tensors copied to host in 64 MiB chunks):
    measured 0.8 GiB/s on 2 busy CPU cores, i.e. ~2.5 s for a 1B-parameter bf16 prefix; compute it
    once per run, not per step.

    Usage: ``fp = prefix_fingerprint(frozen.named_parameters(), config=cfg.to_dict(), dtype="bf16")``
    """
    items = sorted(((str(n), t) for n, t in named_tensors), key=lambda nt: nt[0])
    for name, t in items:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"prefix_fingerprint: {name!r} is a {type(t).__name__}, not a tensor")
    # Sharded (DTensor, e.g. FSDP2) tensors are hashed as the full tensor, so every rank and an
    # unsharded copy of the model agree; gathering one is a collective, so it happens here, in one
    # thread, one tensor at a time, in the sorted order every rank shares.
    digests = {name: _hash_tensor(name, t.full_tensor()) for name, t in items if _is_dtensor(t)}
    for name, t in items:  # DeepSpeed ZeRO-3 partitions: the same, one parameter gathered at a time
        if zero3_partitioned(t):
            with zero3_gathered([t]):
                digests[name] = _hash_tensor(name, t.detach())
    local = [(name, t) for name, t in items if name not in digests]
    workers = min(8, os.cpu_count() or 1, max(1, len(local)))
    # hashlib releases the GIL on large buffers, so threads give real parallelism.
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        digests.update(zip([n for n, _ in local], pool.map(lambda nt: _hash_tensor(*nt), local)))
    digests = [digests[name] for name, _ in items]
    h = hashlib.sha256(_FP_VERSION)
    h.update(struct.pack("<q", len(items)))
    for d in digests:
        h.update(d)
    h.update(json.dumps(facts, sort_keys=True, default=_json_default).encode())
    return h.hexdigest()[:32]


def library_versions() -> dict[str, str]:
    """Versions of the libraries that can change numerics (a ready-made fingerprint fact)."""
    out = {"torch": torch.__version__, "cuda": str(torch.version.cuda)}
    for mod in ("transformers", "triton", "flash_attn"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # not installed or broken: record absence, it is a fact too
            out[mod] = "none"
    return out
