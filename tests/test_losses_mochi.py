"""MoCHi loss: against a float64 loop reference fed the same draws, drawing, gradients,
optimisation and validation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.losses.mochi import MochiDraws, MoCHiLoss, draw_mochi, hardest_negatives, mochi_loss


def _unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def _dot(u: list[float], v: list[float]) -> float:
    return sum(x * y for x, y in zip(u, v))


def _reference(q, k, queue, t, num_hard, pair_idx, pair_coef, query_idx, query_coef) -> float:
    """MoCHi (Kalantidis et al. 2020, Sec. 4) per query, from plain lists."""
    total = 0.0
    for i, qi in enumerate(q):
        sims = [_dot(qi, n) for n in queue]
        order = sorted(range(len(queue)), key=lambda j: -sims[j])[: min(num_hard, len(queue))]
        hardest = [queue[j] for j in order]
        synthetic = []
        for (a_pos, b_pos), a in zip(pair_idx[i], pair_coef[i]):
            n_a, n_b = hardest[a_pos], hardest[b_pos]
            synthetic.append(_unit([a * x + (1 - a) * y for x, y in zip(n_a, n_b)]))
        for pos, b in zip(query_idx[i], query_coef[i]):
            synthetic.append(_unit([b * x + (1 - b) * y for x, y in zip(qi, hardest[pos])]))
        logits = [_dot(qi, k[i]) / t] + [s / t for s in sims] + [_dot(qi, h) / t for h in synthetic]
        top = max(logits)
        total += top + math.log(sum(math.exp(x - top) for x in logits)) - logits[0]
    return total / len(q)


def _inputs(b: int, d: int, k: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    key = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    queue = F.normalize(torch.randn(k, d, generator=g, dtype=torch.float64), dim=1)
    return q, key, queue


@pytest.mark.parametrize(
    "b,d,k,num_hard,s,s2,t",
    [
        (2, 4, 8, 3, 4, 2, 0.2),
        (4, 8, 16, 5, 6, 3, 0.07),
        (3, 5, 6, 10, 5, 0, 0.5),  # N clamped to the queue size
        (5, 3, 12, 1, 2, 4, 0.2),  # N = 1: mixing the hardest with itself
        (3, 6, 10, 4, 0, 0, 0.2),  # no synthetic points: plain MoCo
    ],
)
def test_matches_float64_reference(b, d, k, num_hard, s, s2, t):
    q, key, queue = _inputs(b, d, k, seed=b + d + k)
    n = min(num_hard, k)
    draws = draw_mochi(b, n, s, s2, generator=torch.Generator().manual_seed(1))
    draws = MochiDraws(draws.pair_idx, draws.pair_coef.double(), draws.query_idx, draws.query_coef.double())
    ours = mochi_loss(q, key, queue, t, num_hard=num_hard, num_mix=s, num_query_mix=s2, draws=draws)
    ref = _reference(
        q.tolist(), key.tolist(), queue.tolist(), t, num_hard,
        draws.pair_idx.tolist(), draws.pair_coef.tolist(), draws.query_idx.tolist(), draws.query_coef.tolist(),
    )  # fmt: skip
    assert ours.item() == pytest.approx(ref, rel=1e-6)


def test_generator_draws_are_reproducible_and_in_range():
    a = draw_mochi(4, 5, 6, 3, query_mix_max=0.5, generator=torch.Generator().manual_seed(3))
    b = draw_mochi(4, 5, 6, 3, query_mix_max=0.5, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert a.pair_idx.shape == (4, 6, 2) and a.query_idx.shape == (4, 3)
    assert int(a.pair_idx.max()) < 5 and int(a.query_idx.max()) < 5 and int(a.pair_idx.min()) >= 0
    assert 0 <= float(a.pair_coef.min()) and float(a.pair_coef.max()) <= 1
    assert 0 <= float(a.query_coef.min()) and float(a.query_coef.max()) <= 0.5
    q, key, queue = _inputs(4, 8, 16, seed=0)
    x = mochi_loss(q, key, queue, num_hard=5, num_mix=6, num_query_mix=3, generator=torch.Generator().manual_seed(3))
    y = mochi_loss(q, key, queue, num_hard=5, num_mix=6, num_query_mix=3, draws=a)
    assert x.item() == pytest.approx(y.item(), rel=1e-12)


def test_hardest_negatives_are_sorted_by_similarity():
    q, _, queue = _inputs(3, 4, 9, seed=5)
    idx = hardest_negatives(q, queue, 4)
    sims = q @ queue.t()
    for i in range(3):
        expected = sorted(range(9), key=lambda j: -sims[i, j].item())[:4]
        assert idx[i].tolist() == expected
    assert hardest_negatives(q, queue, 100).shape == (3, 9)


def test_synthetic_points_are_harder_than_easy_negatives():
    # Extra negatives built from the hardest keys raise the loss above plain MoCo's.
    q, key, queue = _inputs(4, 8, 32, seed=2)
    g = torch.Generator().manual_seed(0)
    plain = mochi_loss(q, key, queue, num_hard=4, num_mix=0, num_query_mix=0)
    mixed = mochi_loss(q, key, queue, num_hard=4, num_mix=16, num_query_mix=8, generator=g)
    assert mixed > plain


def test_gradient_flows_only_into_the_query():
    q, key, queue = _inputs(3, 6, 10, seed=4)
    q.requires_grad_(), key.requires_grad_(), queue.requires_grad_()
    mochi_loss(q, key, queue, num_hard=4, num_mix=3, num_query_mix=3, generator=torch.Generator().manual_seed(0)).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert key.grad is None and queue.grad is None


def test_gradient_matches_reference_with_synthetic_points_as_constants():
    # The synthetic points are detached: the gradient w.r.t. q is that of the logits with h fixed.
    q, key, queue = _inputs(2, 4, 6, seed=6)
    draws = draw_mochi(2, 3, 2, 2, generator=torch.Generator().manual_seed(2))
    draws = MochiDraws(draws.pair_idx, draws.pair_coef.double(), draws.query_idx, draws.query_coef.double())
    leaf = q.clone().requires_grad_()
    mochi_loss(leaf, key, queue, 0.2, num_hard=3, num_mix=2, num_query_mix=2, draws=draws).backward()
    eps = 1e-6
    for i in range(2):
        for j in range(4):
            # central differences of the reference with the synthetic points frozen at q
            plus, minus = q.clone(), q.clone()
            plus[i, j] += eps
            minus[i, j] -= eps
            frozen = [_frozen_loss(x, q, key, queue, draws) for x in (plus, minus)]
            assert leaf.grad[i, j].item() == pytest.approx((frozen[0] - frozen[1]) / (2 * eps), rel=1e-5, abs=1e-8)


def _frozen_loss(q_live, q_mix, key, queue, draws) -> float:
    """Reference loss where ``q_live`` enters the logits but ``q_mix`` chooses and builds the mixes."""
    total = 0.0
    ql, qm, kl, nl = q_live.tolist(), q_mix.tolist(), key.tolist(), queue.tolist()
    for i in range(len(ql)):
        sims = [_dot(qm[i], n) for n in nl]
        hardest = [nl[j] for j in sorted(range(len(nl)), key=lambda j: -sims[j])[:3]]
        synthetic = [
            _unit([a * x + (1 - a) * y for x, y in zip(hardest[p0], hardest[p1])])
            for (p0, p1), a in zip(draws.pair_idx[i].tolist(), draws.pair_coef[i].tolist())
        ]
        synthetic += [
            _unit([b * x + (1 - b) * y for x, y in zip(qm[i], hardest[p])])
            for p, b in zip(draws.query_idx[i].tolist(), draws.query_coef[i].tolist())
        ]
        logits = [_dot(ql[i], kl[i]) / 0.2] + [_dot(ql[i], n) / 0.2 for n in nl] + [_dot(ql[i], h) / 0.2 for h in synthetic]
        total += math.log(sum(math.exp(x) for x in logits)) - logits[0]
    return total / len(ql)


def test_optimisation_lowers_the_loss():
    q, key, queue = _inputs(8, 16, 64, seed=0)
    raw = q.float().clone().requires_grad_()
    key, queue = key.float(), queue.float()
    opt = torch.optim.Adam([raw], lr=0.05)
    losses = []
    for step in range(20):
        opt.zero_grad()
        g = torch.Generator().manual_seed(step)
        loss = mochi_loss(F.normalize(raw, dim=1), key, queue, num_hard=16, num_mix=16, num_query_mix=4, generator=g)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_module_and_registry():
    loss = MoCHiLoss(num_hard=4, num_mix=2, num_query_mix=1)
    assert isinstance(loss, MoCHiLoss) and "num_hard=4" in repr(loss)
    q, key, queue = _inputs(3, 4, 8, seed=1)
    draws = draw_mochi(3, 4, 2, 1, generator=torch.Generator().manual_seed(0))
    expected = mochi_loss(q, key, queue, 0.2, num_hard=4, num_mix=2, num_query_mix=1, draws=draws)
    assert loss(q, key, queue, draws=draws).item() == pytest.approx(expected.item())
    with pytest.raises(TypeError):
        MoCHiLoss(0.2)  # hyperparameters are keyword-only


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_hard=0), "num_hard"),
        (dict(num_mix=-1), "num_mix"),
        (dict(num_query_mix=-2), "num_query_mix"),
        (dict(query_mix_max=1.5), "query_mix_max"),
        (dict(temperature=-1.0), "temperature"),
    ],
)
def test_hyperparameter_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MoCHiLoss(**kwargs)
    q, key, queue = _inputs(2, 3, 4, seed=0)
    with pytest.raises(ValueError, match=match):
        mochi_loss(q, key, queue, **kwargs)


def test_draw_validation():
    q, key, queue = _inputs(2, 3, 4, seed=0)
    good = draw_mochi(2, 3, 2, 1, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="pair_idx"):
        mochi_loss(q, key, queue, num_hard=3, draws=good._replace(pair_idx=good.pair_idx + 3))
    with pytest.raises(ValueError, match="query_coef"):
        mochi_loss(q, key, queue, num_hard=3, draws=good._replace(query_coef=good.query_coef[:1]))
    with pytest.raises(ValueError, match="shape mismatch"):
        mochi_loss(q, key[:1], queue)
