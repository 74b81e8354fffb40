"""benchmarks/cache/read.py runs end to end on a few rows and reports both sides of the comparison."""
import json

from benchmarks.cache import read as bench_cache_read


def test_smoke(tmp_path):
    assert bench_cache_read.main(["--examples", "8", "--seq", "16", "--batch", "4", "--rounds", "1", "--tag", "t",
                                  "--out", str(tmp_path), "--workdir", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "cache_read_t.json").read_text())["result"]
    assert res["tokens_per_pass"] == 8 * 16 and res["bytes_per_pass"] == 8 * 16 * 512 * 4
    for key in ("prefix_tokens_per_s", "cold_read_tokens_per_s", "warm_read_tokens_per_s"):
        assert res[key] > 0
    assert "vs prefix" in (tmp_path / "cache_read_t.md").read_text()
