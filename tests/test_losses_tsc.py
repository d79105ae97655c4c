"""KCL / TSC: losses, positive sampling, targets, centres and assignment vs loop references."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from training.losses.tsc import (
    KCLLoss,
    TSCLoss,
    assign_targets,
    generate_targets,
    kcl_loss,
    sample_class_positives,
    target_uniformity_loss,
    tsc_loss,
    tsc_loss_terms,
    update_class_centres,
)

Vec = list[float]


def dot(a: Vec, b: Vec) -> float:
    return sum(x * y for x, y in zip(a, b))


def normed(v: Vec) -> Vec:
    n = math.sqrt(dot(v, v))
    return [x / n for x in v]


def ref_tsc(q, k, queue, pos, targets, target_idx, t, lam, normalization):
    """TSC paper eq. 5 (or the official normalisation), one anchor at a time, in float64."""
    total_class, total_target = 0.0, 0.0
    for i in range(len(q)):
        others = [k[i]] + queue + (targets or [])
        logits = [dot(q[i], v) / t for v in others]
        log_denom = math.log(sum(math.exp(z) for z in logits))
        positives = [0] + [1 + j for j in pos[i] if j >= 0]
        class_sum = sum(logits[j] - log_denom for j in positives)
        if targets is None:
            total_class += -class_sum / len(positives)
            continue
        target_lp = logits[1 + len(queue) + target_idx[i]] - log_denom
        if normalization == "paper":
            total_class += -class_sum / len(positives)
            total_target += -lam * target_lp
        else:
            total_class += -class_sum / (len(positives) + 1)
            total_target += -lam * target_lp / (len(positives) + 1)
    return total_class / len(q), total_target / len(q)


def unit(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("b,n_queue,d,n_cls,k", [(3, 5, 4, 2, 2), (6, 12, 8, 3, 3), (4, 20, 16, 5, 6)])
@pytest.mark.parametrize("normalization", ["paper", "official"])
def test_tsc_matches_the_reference(b, n_queue, d, n_cls, k, normalization):
    q, key, queue, targets = unit(b, d, seed=1), unit(b, d, seed=2), unit(n_queue, d, seed=3), unit(n_cls, d, seed=4)
    g = torch.Generator().manual_seed(5)
    labels = torch.randint(0, n_cls, (b,), generator=g)
    queue_labels = torch.randint(-1, n_cls, (n_queue,), generator=g)
    pos = sample_class_positives(labels, queue_labels, k, g)
    sigma = torch.randperm(n_cls, generator=g)
    terms = tsc_loss_terms(q, key, queue, pos, targets=targets, target_index=sigma[labels], temperature=0.1,
                           target_weight=0.2, normalization=normalization)
    ref_class, ref_target = ref_tsc(q.tolist(), key.tolist(), queue.tolist(), pos.tolist(), targets.tolist(),
                                    sigma[labels].tolist(), 0.1, 0.2, normalization)
    assert terms["loss_class"].item() == pytest.approx(ref_class, rel=1e-6)
    assert terms["loss_target"].item() == pytest.approx(ref_target, rel=1e-6)
    assert terms["loss"].item() == pytest.approx(ref_class + ref_target, rel=1e-6)
    # the wrapper with explicit draws, and the module, give the same value
    value = tsc_loss(q, key, queue, labels, queue_labels, targets, sigma, positive_index=pos, temperature=0.1,
                     normalization=normalization)
    module = TSCLoss(temperature=0.1, normalization=normalization)
    assert value.item() == pytest.approx(ref_class + ref_target, rel=1e-6)
    assert module(q, key, queue, labels, queue_labels, targets, sigma, positive_index=pos).item() == pytest.approx(
        value.item(), rel=1e-12)


@pytest.mark.parametrize("b,n_queue,d,k", [(2, 3, 4, 1), (5, 10, 8, 6), (8, 30, 16, 4)])
def test_kcl_matches_the_reference(b, n_queue, d, k):
    q, key, queue = unit(b, d, seed=6), unit(b, d, seed=7), unit(n_queue, d, seed=8)
    g = torch.Generator().manual_seed(9)
    labels, queue_labels = torch.randint(0, 3, (b,), generator=g), torch.randint(0, 3, (n_queue,), generator=g)
    pos = sample_class_positives(labels, queue_labels, k, g)
    ref, _ = ref_tsc(q.tolist(), key.tolist(), queue.tolist(), pos.tolist(), None, None, 0.07, 0.0, "paper")
    assert kcl_loss(q, key, queue, labels, queue_labels, positive_index=pos).item() == pytest.approx(ref, rel=1e-6)
    assert KCLLoss(num_positive=k)(q, key, queue, labels, queue_labels,
                                              positive_index=pos).item() == pytest.approx(ref, rel=1e-6)
    # drawn from a generator when not passed: the same generator state gives the same draw
    a = kcl_loss(q, key, queue, labels, queue_labels, num_positive=k, generator=torch.Generator().manual_seed(3))
    b2 = kcl_loss(q, key, queue, labels, queue_labels, num_positive=k, generator=torch.Generator().manual_seed(3))
    assert a.item() == b2.item()


def test_positive_sampling_is_same_class_distinct_and_uniform():
    queue_labels = torch.tensor([0, 1, 0, -1, 0, 2, 0, 0, 1])  # class 0 at 0, 2, 4, 6, 7
    labels = torch.tensor([0] * 20000 + [1, 2, 3])
    pos = sample_class_positives(labels, queue_labels, 2, torch.Generator().manual_seed(0))
    assert pos.shape == (20003, 2)
    head = pos[:20000]
    assert bool((head[:, 0] != head[:, 1]).all())
    counts = torch.bincount(head.reshape(-1), minlength=9).tolist()
    for j in (0, 2, 4, 6, 7):
        assert counts[j] / 20000 == pytest.approx(2 / 5, abs=0.02)
    assert sum(counts[j] for j in (1, 3, 5, 8)) == 0
    assert sorted(pos[20000].tolist()) == [1, 8]  # class 1 has exactly two entries
    assert pos[20001].tolist() == [5, -1] and pos[20002].tolist() == [-1, -1]  # fewer than k; none


@pytest.mark.parametrize("c,d", [(2, 3), (5, 8), (7, 4)])
def test_uniformity_matches_the_reference(c, d):
    t = torch.randn(c, d, generator=torch.Generator().manual_seed(c), dtype=torch.float64)
    rows = [normed(v) for v in t.tolist()]
    ref = sum(math.log(sum(math.exp(dot(a, b) / 0.07) for b in rows)) for a in rows) / c
    assert target_uniformity_loss(t).item() == pytest.approx(ref, rel=1e-6)


def test_generated_targets_spread_like_a_simplex():
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    targets = generate_targets(4, 16, steps=600, lr=0.05, generator=g())
    assert targets.shape == (4, 16) and torch.allclose(targets.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.equal(targets, generate_targets(4, 16, steps=600, lr=0.05, generator=g()))
    start = generate_targets(4, 16, steps=0, generator=g())
    assert target_uniformity_loss(targets) < target_uniformity_loss(start)
    cos = targets @ targets.t()
    off = cos[~torch.eye(4, dtype=torch.bool)]
    assert float(off.max()) == pytest.approx(-1 / 3, abs=1e-3)  # regular simplex: every pair at -1/(C-1)


def test_class_centres_follow_the_reference():
    centres = unit(3, 4, seed=10)
    q, labels = unit(6, 4, seed=11), torch.tensor([0, 2, 0, 2, 2, 0])
    new = update_class_centres(centres, q, labels, momentum=0.9)
    for c in range(3):
        members = [q[i].tolist() for i in range(6) if int(labels[i]) == c]
        if not members:
            assert new[c].tolist() == centres[c].tolist()
            continue
        mean = normed([sum(col) / len(members) for col in zip(*members)])
        expect = normed([0.9 * a + 0.1 * b for a, b in zip(centres[c].tolist(), mean)])
        assert new[c].tolist() == pytest.approx(expect, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("c", [2, 4, 5])
def test_hungarian_assignment_is_the_best_permutation(c):
    centres, targets = unit(c, 6, seed=20 + c), unit(c, 6, seed=30 + c)
    sigma = assign_targets(centres, targets).tolist()
    score = [[dot(a, b) for b in targets.tolist()] for a in centres.tolist()]
    best = max(itertools.permutations(range(c)), key=lambda p: sum(score[i][p[i]] for i in range(c)))
    assert sigma == list(best)


@pytest.mark.parametrize("name", ["kcl", "tsc"])
def test_optimising_the_queries_lowers_the_loss(name):
    torch.manual_seed(0)
    key, queue, targets = unit(8, 16, seed=40).float(), unit(32, 16, seed=41).float(), unit(4, 16, seed=42).float()
    labels, queue_labels = torch.arange(8) % 4, torch.arange(32) % 4
    pos = sample_class_positives(labels, queue_labels, 6, torch.Generator().manual_seed(1))
    sigma = torch.tensor([2, 0, 3, 1])
    raw = torch.randn(8, 16, requires_grad=True)
    opt = torch.optim.Adam([raw], lr=0.05)

    def loss_fn() -> torch.Tensor:
        q = F.normalize(raw, dim=1)
        if name == "kcl":
            return kcl_loss(q, key, queue, labels, queue_labels, positive_index=pos)
        return tsc_loss(q, key, queue, labels, queue_labels, targets, sigma, positive_index=pos)

    first = loss_fn().item()
    for _ in range(20):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    assert loss_fn().item() < 0.7 * first


def test_hyperparameters_and_inputs_are_validated():
    with pytest.raises(ValueError, match="num_positive"):
        KCLLoss(num_positive=-1)
    with pytest.raises(ValueError, match="temperature"):
        KCLLoss(temperature=0.0)
    with pytest.raises(ValueError, match="target_weight"):
        TSCLoss(target_weight=-0.1)
    with pytest.raises(ValueError, match="normalization"):
        TSCLoss(normalization="both")
    with pytest.raises(ValueError, match="num_classes"):
        generate_targets(0, 4)
    with pytest.raises(ValueError, match="momentum"):
        update_class_centres(unit(2, 3, seed=0), unit(2, 3, seed=1), torch.tensor([0, 1]), momentum=1.5)
    q, queue = unit(2, 4, seed=0), unit(3, 4, seed=1)
    with pytest.raises(ValueError, match="positive_index"):
        tsc_loss_terms(q, q, queue, torch.tensor([[3], [0]]))
    with pytest.raises(ValueError, match="target_index"):
        tsc_loss_terms(q, q, queue, torch.tensor([[0], [1]]), targets=unit(2, 4, seed=2))
