"""Update orthogonality on constructed updates; the recovery subset; EWC penalty and replay mixing."""
import pytest
import torch

from fastfreeze.lab.continual.diagnostics import principal_cosines, top_subspace, update_orthogonality

NAME = "model.layers.0.self_attn.q_proj.weight"


def _rank1(u, v):
    return torch.outer(u, v)


def test_same_direction_updates_have_cosine_one_and_orthogonal_have_zero():
    n = 16
    e = torch.eye(n)
    w0 = {NAME: torch.zeros(n, n)}
    w1 = {NAME: _rank1(e[0], e[1])}
    same = {NAME: w1[NAME] + 3 * _rank1(e[0], e[2])}  # same output direction e0
    orth = {NAME: w1[NAME] + _rank1(e[5], e[1])}  # new output direction e5
    r_same = update_orthogonality(w0, w1, same)[0]
    r_orth = update_orthogonality(w0, w1, orth)[0]
    assert (r_same["layer"], r_same["component"]) == ("0", "self_attn.q_proj")
    assert r_same["mean_cos"] == pytest.approx(1.0) and r_same["rank_1"] == 1
    assert r_orth["mean_cos"] == pytest.approx(0.0, abs=1e-9)
    assert r_orth["random_cos"] == pytest.approx((1 / n) ** 0.5)


def test_unmoved_matrix_is_reported_frozen():
    w = {NAME: torch.randn(8, 8)}
    row = update_orthogonality(w, w, {NAME: w[NAME] + 1})[0]
    assert row["frozen"] and row["mean_cos"] is None


def test_top_subspace_keeps_energy_fraction():
    d = torch.diag(torch.tensor([10.0, 1.0, 0.1, 0.0]))
    assert top_subspace(d, 0.98).shape[1] == 1  # 100/101.01 = 0.99 >= 0.98
    assert top_subspace(d, 0.999).shape[1] == 2
    q, _ = torch.linalg.qr(torch.randn(6, 3, dtype=torch.float64))
    assert torch.allclose(principal_cosines(q, q), torch.ones(3, dtype=torch.float64))
