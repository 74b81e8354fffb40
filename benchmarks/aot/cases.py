"""The shapes the AOT check compiles for: each case calls csrc_triton's own launchers on meta tensors and records their launches.

Nothing runs and no memory is used: every op is called through its public entry point (or, for the
fused loss, the `_run` launcher both of its public paths call) with meta tensors, while
`csrc_triton._common.LAUNCH_HOOK` records each ``(kernel, grid, args, kwargs)`` instead of launching.
benchmarks/aot/check.py then hands those exact arguments to Triton's own binder, so the specialization it
compiles is the one the JIT would build on a GPU for the same tensors (no hand-written signatures).

Pointer alignment: the caching allocator on CUDA returns blocks aligned to 512 bytes, so a tensor's
data pointer is modelled as ``512 * n + storage_offset * element_size`` (views keep their offset).
"""
from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, field

import torch

# Hidden sizes of the families fastfreeze swaps kernels into (Llama, Mistral, Qwen2/3, Gemma, Phi-3).
HIDDEN = {896: "Qwen2-0.5B", 1536: "Qwen2-1.5B", 2048: "Llama-3.2-1B", 2304: "Gemma-2-2B",
          3072: "Llama-3.2-3B/Phi-3-mini", 3584: "Qwen2-7B/Gemma-2-9B", 4096: "Llama-3-8B/Mistral-7B",
          5120: "Qwen2.5-14B", 8192: "Llama-3-70B"}
HEAD_NORM = {128: "Qwen3 q/k norm", 256: "Gemma-3 q/k norm"}  # RMSNorm over head_dim
INTERMEDIATE = {4864: "Qwen2-0.5B", 8192: "Llama-3.2-1B", 8960: "Qwen2-1.5B", 9216: "Gemma-2-2B",
                14336: "Llama-3-8B", 18944: "Qwen2-7B", 28672: "Llama-3-70B"}
VOCAB = {32000: "Llama-2/Mistral", 32064: "Phi-3", 128256: "Llama-3", 151936: "Qwen2", 256000: "Gemma",
         262144: "Gemma-3"}
HEAD_DIM = (64, 128, 256)
UNALIGNED = {"hidden": (897, 4097), "intermediate": (11009,), "vocab": (32001, 50257)}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
TOKENS = 4096  # rows per launch (aligned); unaligned cases use TOKENS - 1


@dataclass
class Launch:
    kernel: object
    grid: tuple
    args: tuple
    kwargs: dict


@dataclass
class Case:
    """One call of a launcher: op, what it models, and the launches it made."""

    op: str
    label: str
    aligned: bool
    launches: list = field(default_factory=list)


class _Ptr:
    """What Triton's binder reads from a tensor argument: its dtype and data pointer."""

    def __init__(self, t: torch.Tensor):
        self.dtype = t.dtype
        self._ptr = 512 * 4096 + t.storage_offset() * t.element_size()

    def data_ptr(self) -> int:
        return self._ptr


def as_bindable(args: tuple) -> tuple:
    return tuple(_Ptr(a) if isinstance(a, torch.Tensor) else a for a in args)


@contextlib.contextmanager
def recording(out: list):
    common = importlib.import_module("csrc_triton._common")
    previous = common.LAUNCH_HOOK
    common.LAUNCH_HOOK = lambda kernel, grid, args, kwargs: out.append(Launch(kernel, tuple(grid), args, dict(kwargs)))
    try:
        yield
    finally:
        common.LAUNCH_HOOK = previous


def _meta(*shape, dtype, grad=False):
    return torch.empty(*shape, dtype=dtype, device="meta", requires_grad=grad)


def _record(op: str, label: str, aligned: bool, fn) -> Case:
    case = Case(op, label, aligned)
    with recording(case.launches):
        fn()
    return case


# ------------------------------------------------------------------------------------------ per op
def rms_cases(hidden: int, xdt, wdt, rows: int, aligned: bool, label: str) -> list[Case]:
    import csrc_triton as ct

    out = []
    for mode in ("llama", "gemma"):
        tag = f"{label} {mode}"

        def infer():
            with torch.no_grad():
                ct.rms_norm(_meta(rows, hidden, dtype=xdt), _meta(hidden, dtype=wdt), 1e-6, mode)

        def train(gx, gw):
            x, w = _meta(rows, hidden, dtype=xdt, grad=gx), _meta(hidden, dtype=wdt, grad=gw)
            y = ct.rms_norm(x, w, 1e-6, mode)
            torch.autograd.backward([y], [torch.empty_like(y)])

        out.append(_record("rms_norm", f"{tag} forward-only", aligned, infer))
        for gx, gw, what in ((True, True, "dx+dw"), (True, False, "dx"), (False, True, "dw")):
            out.append(_record("rms_norm", f"{tag} train {what}", aligned, lambda gx=gx, gw=gw: train(gx, gw)))
    return out


def swiglu_cases(inter: int, dt, rows: int, aligned: bool, label: str) -> list[Case]:
    import csrc_triton as ct

    def run(fused: bool, gg: bool, gu: bool):
        if fused:  # Phi-3: one [.., 2I] projection, split into [gate | up] views
            gate, up = _meta(rows, 2 * inter, dtype=dt, grad=True).chunk(2, dim=-1)
        else:
            gate, up = _meta(rows, inter, dtype=dt, grad=gg), _meta(rows, inter, dtype=dt, grad=gu)
        y = ct.swiglu(gate, up)
        y.backward(torch.empty_like(y))

    out = []
    for gg, gu, what in ((True, True, "dg+du"), (True, False, "dg"), (False, True, "du")):
        out.append(_record("swiglu", f"{label} split {what}", aligned, lambda gg=gg, gu=gu: run(False, gg, gu)))
    out.append(_record("swiglu", f"{label} fused gate_up", aligned, lambda: run(True, True, True)))
    return out


def rope_cases(head_dim: int, dt, aligned: bool, label: str, rotary_dim: int | None = None) -> list[Case]:
    import csrc_triton as ct

    rd = rotary_dim or head_dim
    bsz, seq, heads, kv = 2, 2048, 32, 8

    def run():
        q = _meta(bsz, seq, heads, head_dim, dtype=dt).transpose(1, 2).requires_grad_()
        k = _meta(bsz, seq, kv, head_dim, dtype=dt).transpose(1, 2).requires_grad_()
        cos, sin = _meta(bsz, seq, rd, dtype=dt), _meta(bsz, seq, rd, dtype=dt)
        q2, k2 = ct.apply_rope(q, k, cos, sin)
        torch.autograd.backward([q2, k2], [torch.empty_like(q2), torch.empty_like(k2)])

    return [_record("rope", f"{label} fwd+bwd", aligned, run)]


def lce_cases(vocab: int, hidden: int, dt, rows: int, aligned: bool, label: str) -> list[Case]:
    lce = importlib.import_module("csrc_triton.linear_cross_entropy")

    def run(softcap, train):
        h, w = _meta(rows, hidden, dtype=dt), _meta(vocab, hidden, dtype=dt)
        labels = _meta(rows, dtype=torch.int64)
        scale = _meta((), dtype=torch.float32) if train else None
        lce._run(h, w, None, labels, scale, lce.RunOptions(softcap=softcap, need_dx=train, need_dw=train))

    out = []
    for softcap in (None, 30.0):
        for train in (True, False):
            what = ("train" if train else "forward-only") + (" softcap" if softcap else "")
            out.append(_record("linear_cross_entropy", f"{label} {what}", aligned,
                               lambda s=softcap, t=train: run(s, t)))
    return out


# ------------------------------------------------------------------------------------------ matrices
def _rms_dtypes(full: bool):
    pairs = [("bf16", "bf16"), ("fp16", "fp16"), ("fp32", "fp32"), ("bf16", "fp32")]
    return pairs if full else [("bf16", "bf16"), ("fp32", "fp32")]


def full_matrix() -> list[Case]:
    """Every family size, dtype and launcher path the issue lists (the benchmark: python -m benchmarks.aot)."""
    cases = []
    for hidden, name in {**HIDDEN, **HEAD_NORM}.items():
        for xd, wd in _rms_dtypes(True):
            rows = TOKENS * (8 if hidden in HEAD_NORM else 1)
            cases += rms_cases(hidden, DTYPES[xd], DTYPES[wd], rows, True, f"H={hidden} ({name}) x {xd} w {wd}")
    for hidden in UNALIGNED["hidden"]:
        for xd, wd in _rms_dtypes(True):
            cases += rms_cases(hidden, DTYPES[xd], DTYPES[wd], TOKENS - 1, False, f"H={hidden} (odd) x {xd} w {wd}")
    for dname, dt in DTYPES.items():
        for inter, name in INTERMEDIATE.items():
            cases += swiglu_cases(inter, dt, TOKENS, True, f"I={inter} ({name}) {dname}")
        for inter in UNALIGNED["intermediate"]:
            cases += swiglu_cases(inter, dt, TOKENS - 1, False, f"I={inter} (odd) {dname}")
        for hd in HEAD_DIM:
            cases += rope_cases(hd, dt, True, f"head_dim={hd} {dname}")
        cases += rope_cases(128, dt, True, f"head_dim=128 rotary 32 (partial) {dname}", rotary_dim=32)
        cases += rope_cases(80, dt, False, f"head_dim=80 rotary 20 (odd half) {dname}", rotary_dim=20)
        for vocab, name in VOCAB.items():
            cases += lce_cases(vocab, 4096, dt, TOKENS, True, f"V={vocab} ({name}) {dname}")
        for vocab in UNALIGNED["vocab"]:
            cases += lce_cases(vocab, 4096, dt, TOKENS - 1, False, f"V={vocab} (odd) {dname}")
    return cases


def ci_matrix() -> list[Case]:
    """A representative subset for CI: each kernel's launcher paths at one aligned and one odd shape."""
    bf, fp32 = DTYPES["bf16"], DTYPES["fp32"]
    cases = rms_cases(4096, bf, bf, TOKENS, True, "H=4096 x bf16 w bf16")
    cases += [c for c in rms_cases(896, fp32, fp32, TOKENS, True, "H=896 x fp32 w fp32") if "llama" in c.label]
    cases += [c for c in rms_cases(4097, bf, bf, TOKENS - 1, False, "H=4097 (odd) x bf16 w bf16")
              if "llama" in c.label and "dx+dw" in c.label]
    cases += swiglu_cases(14336, bf, TOKENS, True, "I=14336 bf16")
    cases += swiglu_cases(11009, bf, TOKENS - 1, False, "I=11009 (odd) bf16")[:1]
    cases += rope_cases(128, bf, True, "head_dim=128 bf16")
    cases += lce_cases(128256, 4096, bf, TOKENS, True, "V=128256 bf16")
    cases += lce_cases(50257, 4096, bf, TOKENS - 1, False, "V=50257 (odd) bf16")[:1]
    return cases
