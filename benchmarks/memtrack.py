"""Device-independent memory accounting: bytes autograd saves for backward, and the peak of live tensor bytes, counted from the tensors themselves.

`MemTracker` is a context manager. While active it sees every tensor an op creates (a
TorchDispatchMode), counts each storage once (views share it) until the storage is freed (a weakref
callback on the storage, which PyTorch keeps alive exactly as long as its memory), and records what
autograd packs for backward (``torch.autograd.graph.saved_tensors_hooks``). Nothing depends on the
device or its allocator, so the same numbers come out on CPU and on a GPU for the same ops and dtypes.
Only storages allocated inside count (not parameters, not the batch, not views of them); gradients
created inside do, and are reported apart. Kernel launches recorded through ``csrc_triton._common.launch`` run with
counting paused (the CPU interpreter's own temporaries are not what a GPU kernel allocates).

Usage:
    with MemTracker(model) as mt:
        loss = model(**batch).loss; mt.mark("forward"); loss.backward()
    mt.report()   # {"saved_bytes": ..., "live_at": {"forward": ...}, "peak_bytes": ..., "grad_bytes": ...}
"""
from __future__ import annotations

import gc
import importlib
import itertools
import os
import weakref

import torch
from fastfreeze._hf_compat import dispatch_mode_base, tree_leaves


class _Mode(dispatch_mode_base()):
    def __init__(self, tracker: "MemTracker"):
        super().__init__()
        self.tracker = tracker

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self.tracker.paused:
            # a view, in-place or out= result shares an input's storage: nothing was allocated
            inputs = {id(a.untyped_storage()) for a in tree_leaves((args, kwargs))
                      if isinstance(a, torch.Tensor) and a.device.type != "meta"}
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and (t.device.type == "meta" or id(t.untyped_storage()) not in inputs):
                    self.tracker._track(t)
        return out


class MemTracker:
    """Counts live tensor bytes and saved-for-backward bytes between __enter__ and __exit__."""

    def __init__(self, model: torch.nn.Module | None = None):
        self.model = model
        self.live: dict[int, int] = {}  # key -> bytes, for storages created while tracking (alive now)
        self._key_of: dict[int, int] = {}  # id(storage) -> key, while the storage lives (ids get reused)
        self._keys = itertools.count()
        self.events: list[tuple[int, int]] = []  # (+bytes | -bytes, key) in order, to replay peaks
        self.cur = self.peak = 0
        self.paused = False
        self.marks: dict[str, int] = {}
        self.saved: dict[int, int] = {}
        self._known: set[int] = set()
        self._stack = []

    # ---------------------------------------------------------------- counting
    def _track(self, t: torch.Tensor) -> None:
        if t.device.type == "meta":
            return
        st = t.untyped_storage()
        sid = id(st)
        if sid in self._key_of or sid in self._known or st.nbytes() == 0:
            return
        key, n = next(self._keys), st.nbytes()
        self._key_of[sid] = key
        self.live[key] = n
        self.events.append((n, key))
        self.cur += n
        self.peak = max(self.peak, self.cur)
        weakref.finalize(st, self._free, sid, key)

    def _free(self, sid: int, key: int) -> None:
        self._key_of.pop(sid, None)
        n = self.live.pop(key, None)
        if n is not None:
            self.cur -= n
            self.events.append((-n, key))

    def _pack(self, t: torch.Tensor):
        key = self._key_of.get(id(t.untyped_storage())) if t.device.type != "meta" else None
        if key is not None:  # only storages allocated in the window (not parameters, not the batch)
            self.saved[key] = self.live[key]
        return t

    def mark(self, name: str) -> None:
        """Remember the live bytes now (e.g. at the end of the forward: what is held for backward)."""
        self.marks[name] = self.cur

    # ---------------------------------------------------------------- context
    def __enter__(self) -> "MemTracker":
        if self.model is not None:  # parameters and buffers are never counted as activations
            self._known = {id(t.untyped_storage()) for t in list(self.model.parameters()) + list(self.model.buffers())}
        common = importlib.import_module("csrc_triton._common") if _has_csrc() else None
        if common is not None:
            self._prev_hook = common.LAUNCH_HOOK
            common.LAUNCH_HOOK = self._paused_launch
        hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        hooks.__enter__()
        mode = _Mode(self)
        mode.__enter__()
        self._stack = [hooks, mode, common]
        return self

    def __exit__(self, *exc) -> None:
        hooks, mode, common = self._stack
        mode.__exit__(*exc)
        hooks.__exit__(*exc)
        if common is not None:
            common.LAUNCH_HOOK = self._prev_hook

    def _paused_launch(self, kernel, grid, args, kwargs) -> None:
        self.paused = True
        try:
            kernel[grid](*args, **kwargs)
            if os.environ.get("TRITON_INTERPRET") == "1":
                # Triton's interpreter leaves the launch arguments in a reference cycle (a compiled launch
                # does not): collect it now, or buffers the launcher freed would look alive until the next gc.
                gc.collect(0)  # the cycle is young: a generation-0 pass finds it, at a fraction of the cost
        finally:
            self.paused = False

    # ---------------------------------------------------------------- results
    def grad_keys(self) -> set[int]:
        if self.model is None:
            return set()
        sids = {id(p.grad.untyped_storage()) for p in self.model.parameters() if p.grad is not None}
        return {self._key_of[s] for s in sids if s in self._key_of}

    def peak_excluding(self, keys: set[int]) -> int:
        """Peak of live bytes over the recorded events, leaving out the given storages (e.g. gradients)."""
        cur = peak = 0
        for n, key in self.events:
            if key not in keys:
                cur += n
                peak = max(peak, cur)
        return peak

    def report(self) -> dict:
        grads = self.grad_keys()
        grad_bytes = sum(self.live.get(k, 0) for k in grads)
        return {"saved_bytes": sum(self.saved.values()), "saved_tensors": len(self.saved),
                "live_at": dict(self.marks), "peak_bytes": self.peak,
                "peak_activation_bytes": self.peak_excluding(grads), "grad_bytes": grad_bytes}


class _TrackedStep:
    def __init__(self, trainer, shape: tuple):
        self.trainer, self.shape = trainer, shape
        self.tracker = MemTracker(trainer.model)

    def __enter__(self):
        self.tracker.__enter__()
        return self

    def __exit__(self, *exc):
        self.tracker.__exit__(*exc)
        self.trainer.bench_memory = {**self.tracker.report(), "batch_shape": list(self.shape)}

    def mark(self, what: str) -> None:
        self.tracker.mark(what)


class StepProbe:
    """A bench_train `step_probe`: tracks training step `step` (0-based) of every arm; the report lands in
    the trainer's `bench_memory`, which `train_arms.run_arm` returns as ``memory_step``."""

    def __init__(self, step: int = 1):
        self.step = step

    def __call__(self, index: int, trainer, inputs):
        if index != self.step:
            return None
        key = "input_ids" if "input_ids" in inputs else "inputs_embeds"
        return _TrackedStep(trainer, tuple(inputs[key].shape[:2]))


def _has_csrc() -> bool:
    try:
        importlib.import_module("csrc_triton._common")
        return True
    except Exception:
        return False
