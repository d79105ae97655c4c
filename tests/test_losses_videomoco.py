"""VideoMoCo: decayed queue loss vs a loop reference, aged queue, frame dropping, gradient routing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from training.augment.frame_drop import drop_frames
from training.losses.videomoco import DecayedMoCoLoss, decayed_moco_loss, route_adversarial_gradient
from training.methods.queue import AgedKeyQueue


def unit(*shape: int, g: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def reference_decayed(q, k, queue, ages, decay: float, temperature: float) -> float:
    """VideoMoCo: -log exp(q.k/T) / (exp(q.k/T) + sum_j exp(t^a_j q.n_j / T)), batch mean."""

    def dot(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b))

    total = 0.0
    for qi, ki in zip(q.tolist(), k.tolist()):
        pos = math.exp(dot(qi, ki) / temperature)
        neg = sum(
            math.exp(decay**a * dot(qi, nj) / temperature) for nj, a in zip(queue.tolist(), ages.tolist())
        )
        total += -math.log(pos / (pos + neg))
    return total / len(q)


@pytest.mark.parametrize("batch,queue_size", [(1, 1), (3, 7), (6, 32)])
@pytest.mark.parametrize("decay", [0.99999, 0.9, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_decayed_loss_matches_loop_reference(
    batch: int, queue_size: int, decay: float, temperature: float
) -> None:
    g = torch.Generator().manual_seed(batch * 100 + queue_size)
    q, k, queue = unit(batch, 8, g=g), unit(batch, 8, g=g), unit(queue_size, 8, g=g)
    ages = torch.randint(0, 40, (queue_size,), generator=g)
    expected = reference_decayed(q, k, queue, ages, decay, temperature)
    got = decayed_moco_loss(q, k, queue, ages, decay, temperature)
    assert math.isclose(float(got), expected, rel_tol=1e-6)
    module = DecayedMoCoLoss(decay=decay, temperature=temperature)
    assert math.isclose(float(module(q, k, queue, ages)), expected, rel_tol=1e-6)


def test_decay_one_is_plain_moco() -> None:
    from training.losses.moco import moco_loss

    g = torch.Generator().manual_seed(3)
    q, k, queue = unit(4, 8, g=g), unit(4, 8, g=g), unit(16, 8, g=g)
    ages = torch.randint(0, 1000, (16,), generator=g)
    assert torch.allclose(decayed_moco_loss(q, k, queue, ages, 1.0, 0.1), moco_loss(q, k, queue, 0.1))


def test_optimisation_lowers_decayed_loss() -> None:
    g = torch.Generator().manual_seed(4)
    q = torch.randn(8, 16, generator=g, dtype=torch.float64, requires_grad=True)
    k, queue = unit(8, 16, g=g), unit(64, 16, g=g)
    ages = torch.arange(64)
    loss_fn = DecayedMoCoLoss(decay=0.99, temperature=0.2)
    opt = torch.optim.Adam([q], lr=0.1)
    start = float(loss_fn(F.normalize(q, dim=1), k, queue, ages).detach())
    for _ in range(20):
        opt.zero_grad()
        loss_fn(F.normalize(q, dim=1), k, queue, ages).backward()
        opt.step()
    assert float(loss_fn(F.normalize(q, dim=1), k, queue, ages).detach()) < 0.3 * start


def test_hyperparameter_and_shape_validation() -> None:
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="decay"):
            DecayedMoCoLoss(decay=bad)
    with pytest.raises(ValueError, match="temperature"):
        DecayedMoCoLoss(temperature=0.0)
    with pytest.raises(TypeError):
        DecayedMoCoLoss(0.9)  # hyperparameters are keyword-only
    g = torch.Generator().manual_seed(0)
    q, queue = unit(2, 4, g=g), unit(5, 4, g=g)
    with pytest.raises(ValueError, match="ages"):
        decayed_moco_loss(q, q, queue, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="shape mismatch"):
        decayed_moco_loss(q, q[:1], queue, torch.zeros(5, dtype=torch.long))


def test_aged_queue_follows_the_official_age_rule_and_is_state() -> None:
    queue = AgedKeyQueue(6, 3, generator=torch.Generator().manual_seed(0))
    assert queue.ages.tolist() == [0] * 6  # official count starts at zero
    g = torch.Generator().manual_seed(1)
    for step, n in enumerate([2, 2, 3, 8]):
        keys = unit(n, 3, g=g).float()
        before = queue.ages.clone()
        slots = queue.written_slots(n)
        queue.enqueue(keys)
        written = keys[-6:]
        assert torch.equal(queue.keys[slots], written), step  # slots match KeyQueue's writes
        expected = before + 1
        expected[slots] = 1
        assert torch.equal(queue.ages, expected), step
    state = queue.state_dict()
    assert {"keys", "ptr", "ages"} <= set(state)
    fresh = AgedKeyQueue(6, 3)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.ages, queue.ages)


def reference_drop(x: torch.Tensor, scores: torch.Tensor, drop: int) -> list:
    """Loops: frames with the ``drop`` smallest scores become the mean over (C, H, W)."""
    out = x.tolist()
    b, c, t, h, w = x.shape
    for i in range(b):
        order = sorted(range(t), key=lambda j: scores[i][j].item())
        for j in order[:drop]:
            values = [x[i, ch, j, y, z].item() for ch in range(c) for y in range(h) for z in range(w)]
            mean = sum(values) / len(values)
            for ch in range(c):
                for y in range(h):
                    for z in range(w):
                        out[i][ch][j][y][z] = mean
    return out


@pytest.mark.parametrize(
    "shape,drop", [((2, 3, 4, 3, 3), 1), ((1, 2, 8, 2, 5), 2), ((3, 1, 5, 4, 4), 0), ((2, 3, 6, 2, 2), 6)]
)
def test_drop_frames_forward_and_straight_through_backward(shape: tuple, drop: int) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    scores = torch.randn(shape[0], shape[2], generator=g, dtype=torch.float64, requires_grad=True)
    out = drop_frames(x, scores, drop)
    assert torch.allclose(
        out, torch.tensor(reference_drop(x.detach(), scores.detach(), drop), dtype=torch.float64)
    )
    upstream = torch.randn(*shape, generator=g, dtype=torch.float64)
    (out * upstream).sum().backward()
    b, c, t, h, w = shape
    expected = [
        [
            sum(upstream[i, ch, j, y, z].item() for ch in range(c) for y in range(h) for z in range(w))
            for j in range(t)
        ]
        for i in range(b)
    ]
    assert torch.allclose(scores.grad, torch.tensor(expected, dtype=torch.float64))
    assert x.grad is None  # as the official VideoTopk: no gradient to the image


def test_drop_frames_validation() -> None:
    x = torch.zeros(2, 3, 4, 2, 2)
    with pytest.raises(ValueError, match="drop"):
        drop_frames(x, torch.zeros(2, 4), 5)
    with pytest.raises(ValueError, match="scores"):
        drop_frames(x, torch.zeros(2, 3), 1)


class _Scorer(nn.Module):
    """A toy generator: per-frame means -> linear -> softmax over frames."""

    def __init__(self, t: int) -> None:
        super().__init__()
        self.fc = nn.Linear(t, t).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(x.mean(dim=(1, 3, 4))), dim=1)


@pytest.mark.parametrize("weight", [100.0, 3.0])
def test_routed_loss_gives_each_part_its_own_objective(weight: float) -> None:
    torch.manual_seed(0)
    b, c, t, s, d = 4, 3, 6, 4, 8
    gen = _Scorer(t)
    enc = nn.Sequential(nn.Flatten(), nn.Linear(c * t * s * s, d)).double()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(b, c, t, s, s, generator=g, dtype=torch.float64)
    k, queue, ages = unit(b, d, g=g), unit(10, d, g=g), torch.arange(10)

    def objectives() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fake = drop_frames(x, gen(x), 2)
        q_fake = F.normalize(enc(fake), dim=1)
        with torch.no_grad():
            q_real = F.normalize(enc(x), dim=1)
        contrastive = decayed_moco_loss(q_fake, k, queue, ages, 0.9, 0.1)
        return contrastive, -weight * F.l1_loss(q_fake, q_real), fake

    contrastive, adversarial, fake = objectives()
    enc_params, gen_params = list(enc.parameters()), list(gen.parameters())
    want_enc = torch.autograd.grad(contrastive, enc_params, retain_graph=True)
    want_gen = torch.autograd.grad(contrastive + adversarial, gen_params)
    contrastive, adversarial, fake = objectives()
    routed = route_adversarial_gradient(contrastive, adversarial, fake)
    assert torch.equal(routed.detach(), contrastive.detach())  # the logged value is the contrastive loss
    routed.backward()
    for p, want in zip(enc_params, want_enc):
        assert torch.allclose(p.grad, want, rtol=1e-9, atol=1e-12)
    for p, want in zip(gen_params, want_gen):
        assert torch.allclose(p.grad, want, rtol=1e-9, atol=1e-12)
    assert any(w.abs().sum() > 0 for w in want_gen)


def test_routing_without_generator_is_identity() -> None:
    loss = torch.tensor(2.0, requires_grad=True)
    assert route_adversarial_gradient(loss, torch.tensor(1.0), torch.zeros(3)) is loss
    with pytest.raises(ValueError, match="scalars"):
        route_adversarial_gradient(torch.zeros(2), torch.tensor(1.0), torch.zeros(3))
