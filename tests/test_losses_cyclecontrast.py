"""CycleContrast: cycle-back term and total loss vs loop references, draws, gradients, validation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.losses.cyclecontrast import (
    CycleContrastLoss,
    cycle_back_loss,
    cycle_contrast_terms,
    pick_candidates,
    split_queue,
)


def unit(*shape: int, g: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def reference_cycle(
    u, queue, candidates, perm, support_size, index, temperature, nn_temperature, same_video=None
) -> float:
    """Soft NN over the allowed support entries, then CE of (own candidate | other negatives)."""
    u, queue, candidates, perm, index = (
        u.tolist(),
        queue.tolist(),
        candidates.tolist(),
        perm.tolist(),
        index.tolist(),
    )
    support, negatives = perm[:support_size], perm[support_size:]
    total = 0.0
    for b, ub in enumerate(u):
        mine = [j for j in range(len(queue)) if same_video is not None and bool(same_video[b][j])]
        sup = [j for j in support if j not in mine]
        exps = [math.exp(dot(ub, queue[j]) / nn_temperature) for j in sup]
        weights = [e / sum(exps) for e in exps]
        v = [sum(w * queue[j][d] for w, j in zip(weights, sup)) for d in range(len(ub))]
        norm = math.sqrt(sum(x * x for x in v))
        v = [x / norm for x in v]
        pos = math.exp(dot(v, candidates[b][index[b]]) / temperature)
        neg = sum(math.exp(dot(v, queue[j]) / temperature) for j in negatives if j not in mine)
        total += -math.log(pos / (pos + neg))
    return total / len(u)


def reference_moco(q, positives, queue, temperature: float) -> float:
    total = 0.0
    for qi, ki in zip(q.tolist(), positives):
        pos = math.exp(dot(qi, ki) / temperature)
        neg = sum(math.exp(dot(qi, kj) / temperature) for kj in queue.tolist())
        total += -math.log(pos / (pos + neg))
    return total / len(q)


SIZES = [(1, 1, 2, 1), (3, 1, 9, 4), (5, 3, 16, 5), (4, 2, 12, 11)]  # B, C, K, S


@pytest.mark.parametrize("b,c,k,s", SIZES)
@pytest.mark.parametrize("temperature,nn_temperature", [(0.07, None), (0.2, 0.5)])
def test_cycle_back_matches_loop_reference(
    b: int, c: int, k: int, s: int, temperature: float, nn_temperature
) -> None:
    g = torch.Generator().manual_seed(b * 1000 + k)
    u, queue, cands = unit(b, 6, g=g), unit(k, 6, g=g), unit(b, c, 6, g=g)
    perm, index = torch.randperm(k, generator=g), torch.randint(c, (b,), generator=g)
    nn_t = temperature if nn_temperature is None else nn_temperature
    expected = reference_cycle(u, queue, cands, perm, s, index, temperature, nn_t)
    got = cycle_back_loss(
        u,
        queue,
        cands,
        support_size=s,
        temperature=temperature,
        nn_temperature=nn_temperature,
        perm=perm,
        candidate_index=index,
    )
    assert math.isclose(float(got), expected, rel_tol=1e-6)


@pytest.mark.parametrize("b,c,k,s", SIZES[1:])
def test_own_video_keys_leave_support_and_negatives(b: int, c: int, k: int, s: int) -> None:
    g = torch.Generator().manual_seed(7 + k)
    u, queue, cands = unit(b, 6, g=g), unit(k, 6, g=g), unit(b, c, 6, g=g)
    perm, index = torch.randperm(k, generator=g), torch.randint(c, (b,), generator=g)
    same = torch.rand(b, k, generator=g) < 0.3
    same[:, perm[0]] = False  # every query keeps one support entry
    expected = reference_cycle(u, queue, cands, perm, s, index, 0.1, 0.3, same)
    got = cycle_back_loss(
        u,
        queue,
        cands,
        support_size=s,
        temperature=0.1,
        nn_temperature=0.3,
        perm=perm,
        candidate_index=index,
        same_video=same,
    )
    assert math.isclose(float(got), expected, rel_tol=1e-6)
    all_mine = torch.zeros(b, k, dtype=torch.bool)
    all_mine[0, perm[:s]] = True
    with pytest.raises(ValueError, match="no support entry"):
        cycle_back_loss(
            u, queue, cands, support_size=s, perm=perm, candidate_index=index, same_video=all_mine
        )


@pytest.mark.parametrize("b,c,k,s", SIZES)
@pytest.mark.parametrize("weight", [0.1, 1.0, 0.0])
def test_total_loss_matches_reference(b: int, c: int, k: int, s: int, weight: float) -> None:
    g = torch.Generator().manual_seed(b + 10 * k)
    q, u = unit(b, 6, g=g), unit(b, 6, g=g)
    cands, cycle_cands = unit(b, c, 6, g=g), unit(b, c, 6, g=g)
    queue, cycle_queue = unit(k + 3, 6, g=g), unit(k, 6, g=g)
    perm, index = torch.randperm(k, generator=g), torch.randint(c, (b,), generator=g)
    moco = reference_moco(q, [cands[i, index[i]].tolist() for i in range(b)], queue, 0.07)
    cycle = reference_cycle(u, cycle_queue, cycle_cands, perm, s, index, 0.07, 0.07)
    terms = cycle_contrast_terms(
        q,
        u,
        cands,
        cycle_cands,
        queue,
        cycle_queue,
        support_size=s,
        cycle_weight=weight,
        perm=perm,
        candidate_index=index,
    )
    assert math.isclose(float(terms["moco"]), moco, rel_tol=1e-6)
    assert math.isclose(float(terms["cycle"]), cycle, rel_tol=1e-6)
    assert math.isclose(float(terms["loss"]), moco + weight * cycle, rel_tol=1e-6)
    module = CycleContrastLoss(support_size=s, cycle_weight=weight)
    got = module(q, u, cands, cycle_cands, queue, cycle_queue, perm=perm, candidate_index=index)
    assert math.isclose(float(got), moco + weight * cycle, rel_tol=1e-6)


def test_draws_come_from_the_generator_in_order() -> None:
    g = torch.Generator().manual_seed(0)
    q, u, cands, cycle_cands = unit(4, 6, g=g), unit(4, 6, g=g), unit(4, 3, 6, g=g), unit(4, 3, 6, g=g)
    queue, cycle_queue = unit(10, 6, g=g), unit(12, 6, g=g)
    draws = torch.Generator().manual_seed(42)
    perm, index = torch.randperm(12, generator=draws), torch.randint(3, (4,), generator=draws)
    explicit = cycle_contrast_terms(
        q, u, cands, cycle_cands, queue, cycle_queue, support_size=5, perm=perm, candidate_index=index
    )
    drawn = cycle_contrast_terms(
        q,
        u,
        cands,
        cycle_cands,
        queue,
        cycle_queue,
        support_size=5,
        generator=torch.Generator().manual_seed(42),
    )
    assert torch.equal(explicit["loss"], drawn["loss"])
    alone = cycle_back_loss(
        u, cycle_queue, cycle_cands, support_size=5, generator=torch.Generator().manual_seed(42)
    )
    assert torch.equal(alone, explicit["cycle"])


def test_gradient_reaches_queries_only() -> None:
    g = torch.Generator().manual_seed(1)
    q, u = unit(3, 6, g=g).requires_grad_(), unit(3, 6, g=g).requires_grad_()
    cands, cycle_cands = unit(3, 2, 6, g=g).requires_grad_(), unit(3, 2, 6, g=g).requires_grad_()
    queue, cycle_queue = unit(8, 6, g=g).requires_grad_(), unit(8, 6, g=g).requires_grad_()
    CycleContrastLoss(support_size=3)(
        q, u, cands, cycle_cands, queue, cycle_queue, generator=torch.Generator().manual_seed(0)
    ).backward()
    assert q.grad is not None and u.grad is not None and u.grad.abs().sum() > 0
    assert all(t.grad is None for t in (cands, cycle_cands, queue, cycle_queue))


def test_optimisation_lowers_loss() -> None:
    g = torch.Generator().manual_seed(2)
    q = torch.randn(8, 16, generator=g, dtype=torch.float64, requires_grad=True)
    u = torch.randn(8, 16, generator=g, dtype=torch.float64, requires_grad=True)
    cands, cycle_queue, queue = unit(8, 1, 16, g=g), unit(64, 16, g=g), unit(64, 16, g=g)
    cycle_queue[:8] = cands[:, 0]  # each candidate has a twin in the support set: the cycle can close
    perm = torch.arange(64)
    loss_fn = CycleContrastLoss(support_size=32, temperature=0.2, cycle_weight=1.0)

    def loss() -> torch.Tensor:
        return loss_fn(
            F.normalize(q, dim=1),
            F.normalize(u, dim=1),
            cands,
            cands,
            queue,
            cycle_queue,
            perm=perm,
            candidate_index=torch.zeros(8, dtype=torch.long),
        )

    opt = torch.optim.Adam([q, u], lr=0.1)
    start = float(loss().detach())
    for _ in range(20):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert float(loss().detach()) < 0.6 * start


def test_validation() -> None:
    with pytest.raises(ValueError, match="support_size"):
        CycleContrastLoss(support_size=0)
    with pytest.raises(ValueError, match="temperature"):
        CycleContrastLoss(temperature=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        CycleContrastLoss(nn_temperature=0.0)
    with pytest.raises(ValueError, match="cycle_weight"):
        CycleContrastLoss(cycle_weight=-0.1)
    with pytest.raises(TypeError):
        CycleContrastLoss(16)  # keyword-only
    with pytest.raises(ValueError, match="support_size must be < the cycle queue size"):
        split_queue(4, 4)
    with pytest.raises(ValueError, match="permutation"):
        split_queue(4, 2, torch.tensor([0, 0, 1, 2]))
    with pytest.raises(ValueError, match="candidate index"):
        pick_candidates(torch.zeros(2, 3, 4), torch.tensor([0, 3]))
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="same_video"):
        cycle_back_loss(
            unit(2, 4, g=g),
            unit(6, 4, g=g),
            unit(2, 1, 4, g=g),
            support_size=2,
            same_video=torch.zeros(2, 5, dtype=torch.bool),
        )
