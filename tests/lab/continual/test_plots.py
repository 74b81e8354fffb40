"""fastfreeze.lab.continual.plots: PNGs of a run, written atomically; a plot with nothing to show is not written."""
from __future__ import annotations

from fastfreeze.lab.continual.plots import plot_accuracy_matrices, plot_dense, plot_orthogonality

PNG = b"\x89PNG\r\n\x1a\n"


def test_each_plot_writes_a_png_or_says_there_is_nothing(tmp_path):
    arms = {"seq": {"accuracy_matrix": [[0.8, None], [0.3, 0.9]], "dense": None, "orthogonality": None}}
    plot_accuracy_matrices(arms, tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes().startswith(PNG)
    assert plot_dense(arms, tmp_path / "d.png") is False and not (tmp_path / "d.png").exists()
    assert plot_orthogonality(arms, tmp_path / "o.png") is False
    arms["seq"]["dense"] = {"history": [{"step": 0, "exact_match": 0.8, "first_token": 0.9},
                                        {"step": 5, "exact_match": 0.4, "first_token": 0.6}]}
    arms["seq"]["orthogonality"] = {"windows": [[0, 5], [5, 10]], "rows": [
        {"layer": "emb", "component": "embedding", "frozen": False, "mean_cos": 0.2, "random_cos": 0.1},
        {"layer": "0", "component": "mlp.up_proj", "frozen": False, "mean_cos": 0.4, "random_cos": 0.1}]}
    assert plot_dense(arms, tmp_path / "d.png") and (tmp_path / "d.png").read_bytes().startswith(PNG)
    assert plot_orthogonality(arms, tmp_path / "o.png") and (tmp_path / "o.png").read_bytes().startswith(PNG)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png", "m.png", "o.png"]  # no temporary left
