"""MoCo: queue loss vs a loop reference, symmetric form, KeyQueue, momentum, shuffle-BN."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from training.losses import MoCoLoss, moco_loss, symmetric_moco_loss
from training.methods.momentum import momentum_update, split_batch_forward
from training.methods.queue import KeyQueue


def unit(*shape: int, g: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def reference_moco(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> float:
    """MoCo eq. 1 with loops: -log exp(q.k+/T) / (exp(q.k+/T) + sum_j exp(q.k_j/T)), batch mean."""

    def dot(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b))

    total = 0.0
    for qi, ki in zip(q.tolist(), k.tolist()):
        pos = math.exp(dot(qi, ki) / temperature)
        neg = sum(math.exp(dot(qi, kj) / temperature) for kj in queue.tolist())
        total += -math.log(pos / (pos + neg))
    return total / len(q)


@pytest.mark.parametrize("batch", [1, 4, 7])
@pytest.mark.parametrize("queue_size", [1, 5, 32])
@pytest.mark.parametrize("temperature", [0.07, 0.2, 1.0])
def test_matches_loop_reference(batch: int, queue_size: int, temperature: float) -> None:
    g = torch.Generator().manual_seed(batch * 1000 + queue_size)
    q, k, queue = unit(batch, 8, g=g), unit(batch, 8, g=g), unit(queue_size, 8, g=g)
    got = moco_loss(q, k, queue, temperature)
    assert math.isclose(float(got), reference_moco(q, k, queue, temperature), rel_tol=1e-6)


def test_symmetric_is_mean_of_cross_terms() -> None:
    g = torch.Generator().manual_seed(1)
    q1, k1, q2, k2 = (unit(5, 8, g=g) for _ in range(4))
    queue = unit(16, 8, g=g)
    expected = 0.5 * (reference_moco(q1, k2, queue, 0.1) + reference_moco(q2, k1, queue, 0.1))
    assert math.isclose(float(symmetric_moco_loss(q1, k1, q2, k2, queue, 0.1)), expected, rel_tol=1e-6)
    module = MoCoLoss(temperature=0.1, symmetric=True)
    assert math.isclose(float(module(q1, k1, queue, q2, k2)), expected, rel_tol=1e-6)
    with pytest.raises(ValueError, match="q2 and k2"):
        module(q1, k1, queue)


def test_optimisation_lowers_loss_and_keys_get_no_gradient() -> None:
    g = torch.Generator().manual_seed(2)
    q = torch.randn(8, 16, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(8, 16, generator=g, dtype=torch.float64, requires_grad=True)
    queue = unit(64, 16, g=g)
    loss_fn = MoCoLoss(temperature=0.2)

    def loss() -> torch.Tensor:
        return loss_fn(F.normalize(q, dim=1), F.normalize(k, dim=1), queue)

    opt = torch.optim.SGD([q], lr=1.0)
    start = loss().item()
    for _ in range(20):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    assert k.grad is None  # keys are stop-gradient in MoCo
    assert loss().item() < 0.7 * start


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_bad_temperature(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        MoCoLoss(temperature=temperature)
    with pytest.raises(ValueError, match="temperature"):
        MoCoLoss(temperature=temperature)


def test_queue_init_and_wraparound() -> None:
    q1 = KeyQueue(10, 4, generator=torch.Generator().manual_seed(0))
    q2 = KeyQueue(10, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(q1.keys, q2.keys)
    assert torch.allclose(q1.keys.norm(dim=1), torch.ones(10))
    written = []
    for step in range(5):  # 3 does not divide 10: writes wrap mid-batch
        batch = torch.full((3, 4), float(step))
        batch[:, 0] = torch.arange(3) + 10 * step
        q1.enqueue(batch)
        written.extend(batch.unbind(0))
    assert int(q1.ptr) == 15 % 10
    # Slot i holds the newest key written to position i (written key number n goes to n % 10).
    for slot in range(10):
        newest = max(n for n in range(len(written)) if n % 10 == slot)
        assert torch.equal(q1.keys[slot], written[newest])
    # A batch larger than the queue keeps its newest K keys in ring order.
    big = torch.arange(13 * 4, dtype=torch.float32).view(13, 4)
    q2.enqueue(big)
    for n in range(3, 13):
        assert torch.equal(q2.keys[n % 10], big[n])
    assert int(q2.ptr) == 3
    with pytest.raises(ValueError):
        q2.enqueue(torch.zeros(2, 5))
    with pytest.raises(ValueError):
        KeyQueue(0, 4)


def test_queue_state_dict_round_trip_resumes_exactly() -> None:
    queue = KeyQueue(8, 3)
    queue.enqueue(torch.ones(5, 3))
    state = {k: v.clone() for k, v in queue.state_dict().items()}
    assert set(state) == {"keys", "ptr"}
    resumed = KeyQueue(8, 3, generator=torch.Generator().manual_seed(123))
    resumed.load_state_dict(state)
    nxt = torch.randn(5, 3)
    queue.enqueue(nxt)
    resumed.enqueue(nxt)
    assert torch.equal(queue.keys, resumed.keys) and int(queue.ptr) == int(resumed.ptr) == 2
    assert torch.equal(resumed(), resumed.keys)


def small_net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def test_momentum_update_formula() -> None:
    torch.manual_seed(0)
    online, target = small_net(), small_net()
    online.train()
    online(torch.randn(8, 4))  # moves the online BN running stats
    before = {k: v.clone() for k, v in target.state_dict().items()}
    momentum_update(online, target, 0.9)
    on_params = dict(online.named_parameters())
    for name, p in target.named_parameters():
        assert torch.allclose(p, 0.9 * before[name] + 0.1 * on_params[name])
    for name, b in target.named_buffers():
        assert torch.equal(b, dict(online.named_buffers())[name])
    momentum_update(online, target, 0.0)
    for name, p in target.named_parameters():
        assert torch.equal(p, on_params[name])
    with pytest.raises(ValueError, match="momentum"):
        momentum_update(online, target, 1.5)
    with pytest.raises(ValueError, match="same parameter"):
        momentum_update(online, nn.Linear(4, 3), 0.9)


@pytest.mark.parametrize("groups", [1, 2, 3, 4])
def test_split_batch_forward_matches_manual_groups(groups: int) -> None:
    torch.manual_seed(0)
    net = small_net().double().train()
    x = torch.randn(8, 4, dtype=torch.float64)
    perm = torch.randperm(8)
    got = split_batch_forward(net, x, groups, perm)
    # Manual: each group of the shuffled batch through the net on its own, results placed back.
    expected = torch.empty_like(got)
    for idx in perm.tensor_split(groups):
        expected[idx] = net(x[idx])
    assert torch.allclose(got, expected)
    if groups > 1:  # per-group BN statistics differ from whole-batch ones
        assert not torch.allclose(got, net(x))
    # The identity permutation with one group is the plain forward, order preserved.
    assert torch.allclose(split_batch_forward(net, x, 1, torch.arange(8)), net(x))


def test_split_batch_forward_restores_order_in_eval_mode() -> None:
    net = small_net().double().eval()  # sample-wise: the output must not depend on the shuffle
    x = torch.randn(9, 4, dtype=torch.float64)
    assert torch.allclose(split_batch_forward(net, x, 3), net(x))
    with pytest.raises(ValueError, match="groups"):
        split_batch_forward(net, x, 10)
    with pytest.raises(ValueError, match="permutation"):
        split_batch_forward(net, x, 2, torch.zeros(9, dtype=torch.long))
