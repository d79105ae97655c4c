"""CrossCLR loss vs a loop reference written from the formula (paper and official variants)."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses.crossclr import (
    CrossCLRLoss,
    crossclr_loss,
    influential_mask,
    input_connectivity,
)

Vec = list[float]


def dot(a: Vec, b: Vec) -> float:
    return sum(x * y for x, y in zip(a, b))


def normed(v: Vec) -> Vec:
    n = math.sqrt(dot(v, v))
    return [x / n for x in v]


def ref_direction(anchors, others, inputs, queue, queue_inputs, t, lam, threshold, kappa, variant):
    """Weighted loss of one modality, one anchor and one candidate at a time."""
    a = [normed(v) for v in anchors]
    o = [normed(v) for v in others]
    cands = a + [normed(v) for v in queue]
    feats = inputs + queue_inputs
    if variant == "paper":
        feats = [normed(f) for f in feats]
    n, b = len(cands), len(a)
    conn = [sum(dot(feats[i], feats[j]) for j in range(n) if j != i) / (n - 1) for i in range(n)]
    scale = max(abs(c) for c in conn)
    influential = [c / scale >= threshold for c in conn]
    losses = []
    for i in range(b):
        denom = sum(math.exp(dot(a[i], o[k]) / t) for k in range(b))
        for j in range(n):
            if influential[j]:
                continue
            s = dot(a[i], cands[j]) / t
            if variant == "paper":
                if j != i:
                    denom += lam * math.exp(s)
            else:
                denom += math.exp(lam * (0.0 if j == i else s))
        losses.append(-(dot(a[i], o[i]) / t - math.log(denom)))
    total = sum(abs(c) for c in conn[:b])
    w = [math.exp(conn[i] / total / kappa) for i in range(b)]
    return sum(w[i] * losses[i] for i in range(b)) / sum(w)


def ref_crossclr(x, y, xi, yi, qx, qy, qxi, qyi, **kw):
    return 0.5 * (ref_direction(x, y, xi, qx, qxi, **kw) + ref_direction(y, x, yi, qy, qyi, **kw))


def rand(*shape: int, seed: int, positive: bool = False) -> torch.Tensor:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x.abs() if positive else x


@pytest.mark.parametrize("b,k,d,px,py", [(2, 0, 3, 4, 5), (4, 6, 8, 6, 3), (8, 16, 16, 10, 12), (5, 3, 4, 2, 2)])
@pytest.mark.parametrize("variant", ["paper", "official"])
@pytest.mark.parametrize("threshold,positive", [(0.9, True), (0.5, False)])
def test_matches_the_reference(b, k, d, px, py, variant, threshold, positive):
    x, y = rand(b, d, seed=1), rand(b, d, seed=2)
    xi, yi = rand(b, px, seed=3, positive=positive), rand(b, py, seed=4, positive=positive)
    qx, qy = rand(k, d, seed=5), rand(k, d, seed=6)
    qxi, qyi = rand(k, px, seed=7, positive=positive), rand(k, py, seed=8, positive=positive)
    kw = dict(t=0.1, lam=0.8, threshold=threshold, kappa=0.05, variant=variant)
    ref = ref_crossclr(x.tolist(), y.tolist(), xi.tolist(), yi.tolist(), qx.tolist(), qy.tolist(), qxi.tolist(),
                       qyi.tolist(), **kw)
    queues = dict(queue_x=qx, queue_y=qy, queue_x_inputs=qxi, queue_y_inputs=qyi) if k else {}
    loss = crossclr_loss(x, y, xi, yi, temperature=0.1, negative_weight=0.8, score_threshold=threshold,
                         weight_temperature=0.05, variant=variant, **queues)
    assert loss.item() == pytest.approx(ref, rel=1e-6)
    module = CrossCLRLoss(temperature=0.1, score_threshold=threshold, weight_temperature=0.05,
                         variant=variant)
    assert module(x, y, xi, yi, **queues).item() == pytest.approx(ref, rel=1e-6)


def test_paper_defaults_match_the_reference():
    x, y, xi, yi = rand(6, 8, seed=10), rand(6, 8, seed=11), rand(6, 5, seed=12, positive=True), rand(6, 7, seed=13)
    ref = ref_crossclr(x.tolist(), y.tolist(), xi.tolist(), yi.tolist(), [], [], [], [], t=0.03, lam=0.8,
                       threshold=0.9, kappa=0.0035, variant="paper")
    assert CrossCLRLoss()(x, y, xi, yi).item() == pytest.approx(ref, rel=1e-6)


def test_the_most_connected_samples_are_pruned():
    base = torch.tensor([1.0, 0.0, 0.0])
    feats = torch.stack([base, base + 0.01, base + 0.02, torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])])
    conn = input_connectivity(feats)
    assert influential_mask(conn, 0.9).tolist() == [True, True, True, False, False]
    assert not influential_mask(conn, 1.01).any()


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_optimising_the_embeddings_lowers_the_loss(variant):
    torch.manual_seed(0)
    x, y = torch.randn(8, 16, requires_grad=True), torch.randn(8, 16, requires_grad=True)
    xi, yi = torch.rand(8, 12), torch.rand(8, 6)
    qx, qy, qxi, qyi = torch.randn(10, 16), torch.randn(10, 16), torch.rand(10, 12), torch.rand(10, 6)
    opt = torch.optim.Adam([x, y], lr=0.05)

    def loss_fn() -> torch.Tensor:
        return crossclr_loss(x, y, xi, yi, queue_x=qx, queue_y=qy, queue_x_inputs=qxi, queue_y_inputs=qyi,
                             temperature=0.1, variant=variant)

    first = loss_fn().item()
    for _ in range(20):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    assert loss_fn().item() < 0.5 * first


def test_hyperparameters_and_shapes_are_validated():
    with pytest.raises(ValueError, match="temperature"):
        CrossCLRLoss(temperature=0)
    with pytest.raises(ValueError, match="temperature"):
        CrossCLRLoss(weight_temperature=-1.0)
    with pytest.raises(ValueError, match="negative_weight"):
        CrossCLRLoss(negative_weight=-0.1)
    with pytest.raises(ValueError, match="score_threshold"):
        CrossCLRLoss(score_threshold=0.0)
    with pytest.raises(ValueError, match="variant"):
        CrossCLRLoss(variant="coot")
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="shape mismatch"):
        crossclr_loss(x, torch.randn(2, 4), torch.randn(3, 2), torch.randn(2, 2))
    with pytest.raises(ValueError, match="queue"):
        crossclr_loss(x, x, torch.randn(3, 2), torch.randn(3, 2), queue_x=torch.randn(5, 4))
