"""Long/short view decomposition terms vs float64 loop references written from the formulas."""

from __future__ import annotations

import math

import pytest
import torch
from loop_refs import Vec, dot, normed, ref_nt_xent  # noqa: F401

from training.losses.longshort import (
    LongShortLoss,
    longshort_loss_terms,
    non_stationary_loss,
    stationary_loss,
)


def ref_stationary(long: list[Vec], short: list[list[Vec]], t: float) -> float:
    k = len(short[0])
    return sum(ref_nt_xent(long, [short[b][j] for b in range(len(long))], t) for j in range(k)) / k


def inputs(batch: int, views: int, dim: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(batch, dim), (batch, views, dim), (batch, dim), (batch, dim)]
    return [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes]


@pytest.mark.parametrize(("batch", "views", "dim"), [(1, 1, 2), (2, 4, 3), (5, 2, 8), (3, 6, 4)])
@pytest.mark.parametrize("t", [0.1, 0.5])
def test_terms_match_loop_reference(batch: int, views: int, dim: int, t: float) -> None:
    ls, ss, ln, an = inputs(batch, views, dim, seed=batch * 7 + views)
    terms = longshort_loss_terms(ls, ss, ln, an, t)
    exp_s = ref_stationary(ls.tolist(), ss.tolist(), t)
    exp_n = ref_nt_xent(ln.tolist(), an.tolist(), t)
    assert math.isclose(float(terms["stationary"]), exp_s, rel_tol=1e-6)
    assert math.isclose(float(terms["non_stationary"]), exp_n, rel_tol=1e-6)
    assert math.isclose(float(stationary_loss(ls, ss, t)), exp_s, rel_tol=1e-6)
    assert math.isclose(float(non_stationary_loss(ln, an, t)), exp_n, rel_tol=1e-6)


def test_module_is_the_weighted_sum() -> None:
    x = inputs(3, 4, 5, seed=0)
    loss = LongShortLoss(temperature=0.2, stationary_weight=0.5, non_stationary_weight=2.0)
    terms = longshort_loss_terms(*x, temperature=0.2)
    expected = 0.5 * float(terms["stationary"]) + 2.0 * float(terms["non_stationary"])
    assert math.isclose(float(loss(*x)), expected, rel_tol=1e-6)


def test_optimisation_lowers_the_loss() -> None:
    params = [p.clone().requires_grad_() for p in inputs(6, 4, 8, seed=1)]
    opt = torch.optim.Adam(params, lr=0.1)
    loss_fn = LongShortLoss()
    with torch.no_grad():
        first = float(loss_fn(*params))
    for _ in range(20):
        opt.zero_grad()
        loss_fn(*params).backward()
        opt.step()
    with torch.no_grad():
        assert float(loss_fn(*params)) < 0.5 * first


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"stationary_weight": -1.0}, "stationary_weight"),
        ({"non_stationary_weight": float("nan")}, "non_stationary_weight"),
    ],
)
def test_bad_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LongShortLoss(**kwargs)


def test_bad_shapes() -> None:
    ls, ss, ln, an = inputs(2, 3, 4, seed=2)
    with pytest.raises(ValueError, match="short must be"):
        stationary_loss(ls, ss[:1])
    with pytest.raises(ValueError, match="B x K x P"):
        stationary_loss(ls, ss[:, 0])
    with pytest.raises(ValueError, match="aggregated"):
        non_stationary_loss(ln, an[:, :3])
    with pytest.raises(TypeError):
        LongShortLoss(0.1)  # hyperparameters are keyword-only
