"""benchmarks/cache/read.py runs end to end on a few rows and reports the read path against raw reads of the same bytes."""
import json

import pytest

from benchmarks.cache import read as bench_cache_read


def test_smoke(tmp_path):
    assert bench_cache_read.main(["--examples", "8", "--seq", "16", "--batch", "4", "--rounds", "2", "--tag", "t",
                                  "--out", str(tmp_path), "--workdir", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "cache_read_t.json").read_text())["result"]
    assert res["tokens_per_pass"] == 8 * 16 and res["bytes_per_pass"] == 8 * 16 * 512 * 4
    assert set(res["GBps"]) == set(bench_cache_read.ARMS) and all(v > 0 for v in res["GBps"].values())
    assert all(len(s) == 2 for s in res["seconds"].values())
    assert res["torch_threads"] == 1 and res["pinned"] is False
    assert len(res["loadavg_before"]) == 3 and len(res["loadavg_after"]) == 3
    # The fractions are the medians' ratios (rates from the same medians), not separately computed numbers.
    assert res["read_path_vs_memcpy"] == pytest.approx(res["GBps"]["read_path"] / res["GBps"]["memcpy"])
    assert res["read_path_vs_fromfile"] == pytest.approx(res["GBps"]["read_path"] / res["GBps"]["fromfile"])
    assert res["read_path_GBps"] == res["GBps"]["read_path"]
    text = (tmp_path / "cache_read_t.md").read_text()
    assert "read path = " in text and "Load average" in text


def test_raw_arms_read_every_byte(tmp_path, monkeypatch):
    """memcpy and fromfile move exactly the bytes the read path serves (a short read would inflate the raw rate)."""
    moved = []
    real_memmove, real_fromfile = bench_cache_read.ctypes.memmove, bench_cache_read.np.fromfile
    monkeypatch.setattr(bench_cache_read.ctypes, "memmove", lambda d, s, n: moved.append(("memcpy", n)) or real_memmove(d, s, n))
    monkeypatch.setattr(bench_cache_read.np, "fromfile",
                        lambda fn, dtype: (lambda a: moved.append(("fromfile", a.nbytes)) or a)(real_fromfile(fn, dtype=dtype)))
    res = bench_cache_read.run(8, 16, 4, 1, str(tmp_path))
    for arm in ("memcpy", "fromfile"):
        # one round, and the fromfile arm runs twice (warm and cold)
        assert sum(n for a, n in moved if a == arm) == res["bytes_per_pass"] * (2 if arm == "fromfile" else 1)


def test_pin_needs_cuda(tmp_path):
    if bench_cache_read.torch.cuda.is_available():
        pytest.skip("CUDA present: --pin is valid here")
    with pytest.raises(SystemExit):
        bench_cache_read.main(["--pin", "--out", str(tmp_path)])
