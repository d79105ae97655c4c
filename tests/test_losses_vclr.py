"""VCLR loss terms vs float64 loop references written from the official formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.augment.segment_order import OrderShuffle, order_permutations
from training.losses.vclr import (
    VCLRLoss,
    order_features,
    seco_inter_loss,
    seco_intra_loss,
    vclr_loss_terms,
)

Vec = list[float]


def dot(a: Vec, b: Vec) -> float:
    return sum(x * y for x, y in zip(a, b))


def ce_first(scores: list[float], t: float) -> float:
    """-log softmax(scores / t)[0]."""
    exps = [math.exp(s / t) for s in scores]
    return -math.log(exps[0] / sum(exps))


def ref_inter(q, ks, k1, k2, queue, t) -> float:
    rows = []
    for k in (ks, k1, k2):  # row order does not change a mean
        for i in range(len(q)):
            rows.append(ce_first([dot(q[i], k[i])] + [dot(q[i], n) for n in queue], t))
    return sum(rows) / len(rows)


def ref_intra(q, ks, k1, k2, t) -> float:
    rows = [ce_first([dot(q[i], ks[i]), dot(q[i], k[i])], t) for k in (k1, k2) for i in range(len(q))]
    return sum(rows) / len(rows)


def ref_moco(q, k, queue, t) -> float:
    rows = [ce_first([dot(q[i], k[i])] + [dot(q[i], n) for n in queue], t) for i in range(len(q))]
    return sum(rows) / len(rows)


def ref_ce(logits: list[list[float]], labels: list[int]) -> float:
    rows = [-math.log(math.exp(r[y]) / sum(math.exp(v) for v in r)) for r, y in zip(logits, labels)]
    return sum(rows) / len(rows)


def unit(*shape: int, g: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def case(batch: int, dim: int, queue: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "inter": tuple(unit(batch, dim, g=g) for _ in range(4)),
        "intra": tuple(unit(batch, dim, g=g) for _ in range(4)),
        "inter_queue": unit(queue, dim, g=g),
        "segment_q": unit(batch, dim, g=g),
        "segment_k": unit(batch, dim, g=g),
        "segment_queue": unit(queue + 1, dim, g=g),
        "order_logits": torch.randn(batch, 4, generator=g, dtype=torch.float64),
        "order_labels": torch.randint(4, (batch,), generator=g),
    }


SIZES = [(1, 3, 1), (2, 4, 5), (4, 8, 16), (7, 5, 3)]


@pytest.mark.parametrize(("batch", "dim", "queue"), SIZES)
@pytest.mark.parametrize(("t", "t_intra"), [(0.1, 0.1), (0.07, 0.5)])
def test_terms_match_loop_reference(batch: int, dim: int, queue: int, t: float, t_intra: float) -> None:
    x = case(batch, dim, queue, seed=batch * 10 + dim)
    terms = vclr_loss_terms(**x, temperature=t, temperature_intra=t_intra)
    lists = {k: [v.tolist() for v in x[k]] for k in ("inter", "intra")}
    expected = {
        "inter": ref_inter(*lists["inter"], x["inter_queue"].tolist(), t),
        "intra": ref_intra(*lists["intra"], t_intra),
        "order": ref_ce(x["order_logits"].tolist(), x["order_labels"].tolist()),
        "segment": ref_moco(x["segment_q"].tolist(), x["segment_k"].tolist(), x["segment_queue"].tolist(), t),
    }
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert math.isclose(float(terms[name]), value, rel_tol=1e-6), name
    assert math.isclose(float(seco_inter_loss(*x["inter"], x["inter_queue"], t)), expected["inter"], rel_tol=1e-6)
    assert math.isclose(float(seco_intra_loss(*x["intra"], t_intra)), expected["intra"], rel_tol=1e-6)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (0.5, 2.0, 0.0, 3.0)])
def test_module_is_the_weighted_sum(weights: tuple[float, ...]) -> None:
    x = case(3, 6, 4, seed=1)
    names = ("inter", "intra", "order", "segment")
    loss = VCLRLoss(**{f"{n}_weight": w for n, w in zip(names, weights)})
    terms = vclr_loss_terms(**x)
    expected = sum(w * float(terms[n]) for n, w in zip(names, weights))
    assert math.isclose(float(loss(**x)), expected, rel_tol=1e-6)


def test_gradients_reach_queries_only() -> None:
    x = case(3, 6, 4, seed=2)
    q = x["inter"][0].clone().requires_grad_()
    k = x["inter"][1].clone().requires_grad_()
    seco_inter_loss(q, k, *x["inter"][2:], x["inter_queue"]).backward()
    assert q.grad is not None and k.grad is None


@pytest.mark.parametrize(("batch", "segments", "dim"), [(1, 3, 2), (2, 3, 4), (3, 4, 3)])
@pytest.mark.parametrize("norm", ["feature", "official"])
def test_order_features_match_reference(batch: int, segments: int, dim: int, norm: str) -> None:
    z = torch.randn(batch, segments, dim, generator=torch.Generator().manual_seed(batch), dtype=torch.float64)
    zl = z.tolist()
    expected = []
    for b in range(batch):
        row = []
        for s in range(segments):
            if norm == "feature":
                n = math.sqrt(sum(v * v for v in zl[b][s]))
            else:
                n = None
            for d in range(dim):
                if norm == "official":
                    n = math.sqrt(sum(zl[b][j][d] ** 2 for j in range(segments)))
                row.append(zl[b][s][d] / n)
        expected.append(row)
    got = order_features(z, norm).tolist()
    for r_got, r_exp in zip(got, expected):
        assert all(math.isclose(a, e, rel_tol=1e-9) for a, e in zip(r_got, r_exp))


def test_shuffled_orders_exclude_identity_and_reversal() -> None:
    assert order_permutations(3).tolist() == [[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1]]
    perms4 = order_permutations(4).tolist()
    assert len(perms4) == 22 and [0, 1, 2, 3] not in perms4 and [3, 2, 1, 0] not in perms4


def test_order_shuffle_draw_labels_and_apply() -> None:
    shuffle = OrderShuffle.draw(64, torch.Generator().manual_seed(0))
    again = OrderShuffle.draw(64, torch.Generator().manual_seed(0))
    assert torch.equal(shuffle.perm_q, again.perm_q) and torch.equal(shuffle.labels, again.labels)
    ident, rev = [0, 1, 2], [2, 1, 0]
    for pq, pk, y in zip(shuffle.perm_q.tolist(), shuffle.perm_k.tolist(), shuffle.labels.tolist()):
        assert y == (pq != ident) + 2 * (pk != ident)
        assert pq != rev and pk != rev
    assert set(shuffle.labels.tolist()) == {0, 1, 2, 3}
    x = torch.arange(2 * 3 * 2).reshape(2, 3, 2)
    perm = torch.tensor([[2, 0, 1], [0, 1, 2]])
    out = OrderShuffle.apply(x, perm)
    for b in range(2):
        for i in range(3):
            assert out[b, i].tolist() == x[b, perm[b, i]].tolist()


def test_explicit_flags_give_the_official_labels() -> None:
    flags_q = torch.tensor([False, True, False, True])
    flags_k = torch.tensor([False, False, True, True])
    choice = torch.tensor([0, 1, 2, 3])
    s = OrderShuffle.from_flags(flags_q, flags_k, choice, choice)
    assert s.labels.tolist() == [0, 1, 2, 3]
    assert s.perm_q.tolist() == [[0, 1, 2], [1, 0, 2], [0, 1, 2], [2, 0, 1]]
    assert s.perm_k.tolist() == [[0, 1, 2], [0, 1, 2], [1, 2, 0], [2, 0, 1]]


def test_optimisation_lowers_the_loss() -> None:
    x = case(6, 8, 12, seed=3)
    params = {
        "inter": x["inter"][0].clone().requires_grad_(),
        "intra": x["intra"][0].clone().requires_grad_(),
        "segment": x["segment_q"].clone().requires_grad_(),
        "logits": x["order_logits"].clone().requires_grad_(),
    }
    opt = torch.optim.Adam(params.values(), lr=0.1)
    loss_fn = VCLRLoss()

    def loss() -> torch.Tensor:
        y = dict(x)
        y["inter"] = (F.normalize(params["inter"], dim=1), *x["inter"][1:])
        y["intra"] = (F.normalize(params["intra"], dim=1), *x["intra"][1:])
        y["segment_q"] = F.normalize(params["segment"], dim=1)
        y["order_logits"] = params["logits"]
        return loss_fn(**y)

    with torch.no_grad():
        first = float(loss())
    for _ in range(20):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    with torch.no_grad():
        assert float(loss()) < 0.7 * first


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature_intra": -1.0}, "temperature"),
        ({"order_weight": -0.5}, "order_weight"),
        ({"segment_weight": float("nan")}, "segment_weight"),
    ],
)
def test_bad_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        VCLRLoss(**kwargs)


def test_bad_inputs() -> None:
    x = case(2, 4, 3, seed=4)
    with pytest.raises(ValueError, match="norm"):
        order_features(torch.zeros(2, 3, 4), "segments")
    with pytest.raises(ValueError, match="num_segments"):
        order_permutations(2)
    with pytest.raises(ValueError, match="query's shape"):
        seco_intra_loss(x["intra"][0], x["intra"][1][:1], *x["intra"][2:])
    with pytest.raises(ValueError, match="queue"):
        seco_inter_loss(*x["inter"], torch.zeros(3, 5))
    with pytest.raises(ValueError, match="order"):
        vclr_loss_terms(**{**x, "order_logits": torch.zeros(2, 3)})
    with pytest.raises(TypeError):
        VCLRLoss(0.1)  # hyperparameters are keyword-only
