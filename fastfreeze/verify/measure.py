"""What `verify` measures besides losses: step time, peak memory, whether two copies fit, weight snapshots.

Usage:
    with PeakMemory(cuda=False) as mem: trainer.train()       # mem.peak: bytes above the start
    initial = WeightStore(model.named_parameters(remove_duplicate=False), path="/tmp/w.safetensors")
"""
from __future__ import annotations

import ctypes
import os
import statistics
import threading
import time

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import TrainerCallback

from ..config import FreezeConfig
from ..families import resolve
from .report import VerifyError

__all__ = ["PeakMemory", "StepTimer", "WeightStore", "available_bytes", "check_fits_twice"]


class StepTimer(TrainerCallback):
    """Wall time between consecutive optimizer-step ends (data, forward, backward, optimizer)."""

    def __init__(self, cuda: bool):
        self.cuda, self.last, self.times = cuda, None, []

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_step_begin(self, args, state, control, **kw):
        if self.last is None:
            self.last = self._now()

    def on_step_end(self, args, state, control, **kw):
        now = self._now()
        self.times.append(now - self.last)
        self.last = now

    def median(self) -> float:
        steady = self.times[1:] or self.times  # the first step pays for warm-up (allocator, kernel compiles)
        return statistics.median(steady) if steady else float("nan")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss


def _malloc_trim() -> None:
    # Hand freed heap pages back to the OS, so the arm that runs second does not look smaller only
    # because it reuses pages the first arm left in the allocator (glibc only; a no-op elsewhere).
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory above the starting point: CUDA max allocated, or resident set size sampled every 5 ms."""

    def __init__(self, cuda: bool):
        self.cuda, self.peak, self._stop = cuda, 0, threading.Event()

    def __enter__(self):
        _malloc_trim()  # the caller has already collected garbage (gc.collect is slow in big processes)
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = self.top = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.top = max(self.top, _rss_bytes())

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.top, _rss_bytes()) - self.base
        return False


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return psutil.virtual_memory().available


def _bytes(params) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def check_fits_twice(model: nn.Module, config: FreezeConfig, device: torch.device) -> None:
    """A second copy of the weights + gradients and two Adam moments of the trainable part must fit
    (+ the reference's trained weights, kept on CPU, when CPU is also the training device)."""
    parts = resolve(model)
    frozen = {id(p) for _, m in (parts.embedding_side if config.freeze_embeddings else []) for p in m.parameters()}
    frozen |= {id(p) for layer in parts.layers[: config.num_frozen_layers] for p in layer.parameters()}
    params = list(model.parameters())
    need = _bytes(params) + (3 if device.type == "cuda" else 4) * _bytes(p for p in params if id(p) not in frozen)
    have = available_bytes(device)
    if need > 0.9 * have:
        raise VerifyError(
            f"two copies of the model do not fit: a second copy + gradients + optimizer state needs ~"
            f"{need / 2 ** 30:.2f} GiB, {have / 2 ** 30:.2f} GiB is available on {device.type}. Rerun with "
            "--sequential (verify(..., sequential=True)): the two arms then run one after the other from the "
            "initial weights saved to a temporary directory.")


class WeightStore:
    """Tensors by parameter name, kept in memory (as given, or cloned to CPU) or in a safetensors file.

    Tied names (one tensor under two names) are stored once. Usage:
        initial = WeightStore(model.named_parameters(remove_duplicate=False), path="/tmp/w.safetensors")
        initial.get("lm_head.weight")  # a CPU tensor
    """

    def __init__(self, named, path: str | None = None, clone: bool = False):
        named = list(named)
        self.names = {n for n, _ in named}
        canonical: dict[int, str] = {}
        self.alias = {n: canonical.setdefault(id(t), n) for n, t in named}  # before detach(): new objects
        named = [(n, t.detach()) for n, t in named]
        self.path, self.tensors = path, None
        if path is None:
            self.tensors = {n: t.cpu().clone() if clone else t for n, t in named}
        else:
            save_file({n: t.cpu().contiguous() for n, t in named if self.alias[n] == n}, path)

    def get(self, name: str) -> torch.Tensor:
        if self.tensors is not None:
            return self.tensors[name].cpu()
        with safe_open(self.path, "pt", device="cpu") as f:
            return f.get_tensor(self.alias[name])

    @torch.no_grad()
    def restore(self, model: nn.Module, tied_head: tuple | None) -> None:
        """Copy the stored weights back into `model` in place (all trainable again), first re-tying a
        head that an arm untied: `tied_head` = (head module, the shared weight Parameter)."""
        if tied_head is not None:
            module, weight = tied_head
            module.weight = weight
        params = list(model.named_parameters())
        if self.tensors is not None:
            for n, p in params:
                p.copy_(self.tensors[n])
        else:
            with safe_open(self.path, "pt", device="cpu") as f:
                for n, p in params:
                    p.copy_(f.get_tensor(self.alias[n]))
        for _, p in params:
            p.requires_grad_(True)
