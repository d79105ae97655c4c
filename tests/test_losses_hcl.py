"""HCL loss: against a float64 loop reference of the official ``criterion``, gradients,
optimisation, edge cases and hyperparameter validation."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses.hcl import HCLLoss, hcl_loss


def _reference(z1: list[list], z2: list[list], t: float, tau_plus: float, beta: float, estimator: str):
    """``joshr17/HCL`` ``image/main.py::criterion`` written out per element.

    Entries may be floats or 0-d float64 tensors (then the result carries gradients); only
    scalar arithmetic is used.
    """
    exp = math.exp if isinstance(z1[0][0], float) else torch.exp
    log = math.log if isinstance(z1[0][0], float) else torch.log

    def unit(v):
        norm = sum(x * x for x in v) ** 0.5
        return [x / norm for x in v]

    b = len(z1)
    out = [unit(v) for v in z1] + [unit(v) for v in z2]
    dot = [[sum(x * y for x, y in zip(u, v)) for v in out] for u in out]
    total = 0.0
    for i in range(2 * b):
        p = (i + b) % (2 * b)
        pos = exp(dot[i][p] / t)
        negs = [exp(dot[i][j] / t) for j in range(2 * b) if j not in (i, p)]
        if estimator == "easy":
            ng = sum(negs)
        else:
            n = 2 * b - 2
            imp = [exp(beta * log(x)) for x in negs]
            reweight = sum(w * x for w, x in zip(imp, negs)) / (sum(imp) / len(imp))
            ng = (-tau_plus * n * pos + reweight) / (1 - tau_plus)
            floor = n * math.e ** (-1 / t)
            ng = ng if ng > floor else floor + 0.0 * ng  # clamp: no gradient below the floor
        total = total + -log(pos / (pos + ng))
    return total / (2 * b)


def _views(b: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g, dtype=torch.float64), torch.randn(b, d, generator=g, dtype=torch.float64)


@pytest.mark.parametrize(
    "b,d,t,tau_plus,beta,estimator",
    [
        (2, 3, 0.5, 0.1, 1.0, "hard"),
        (4, 8, 0.5, 0.1, 1.0, "hard"),
        (5, 6, 0.2, 0.3, 2.0, "hard"),
        (6, 4, 0.07, 0.05, 6.0, "hard"),
        (3, 5, 1.0, 0.0, 0.0, "hard"),
        (4, 8, 0.5, 0.1, 1.0, "easy"),
        (7, 3, 0.1, 0.5, 0.5, "easy"),
    ],
)
def test_matches_float64_reference(b, d, t, tau_plus, beta, estimator):
    z1, z2 = _views(b, d, seed=b * 10 + d)
    ours = hcl_loss(z1, z2, t, tau_plus, beta, estimator)
    assert ours.dtype == torch.float64
    ref = _reference(z1.tolist(), z2.tolist(), t, tau_plus, beta, estimator)
    assert ours.item() == pytest.approx(ref, rel=1e-6)


def test_clamp_is_applied_when_debiasing_overshoots():
    # Views identical and far from the rest: tau_plus N pos dominates, so Ng hits the floor.
    z = torch.eye(4, dtype=torch.float64)
    t, tau_plus = 0.5, 0.9
    n = 6
    floor = n * math.exp(-1 / t)
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + floor))
    assert hcl_loss(z, z, t, tau_plus, 1.0).item() == pytest.approx(expected, rel=1e-9)
    assert _reference(z.tolist(), z.tolist(), t, tau_plus, 1.0, "hard") == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("b,beta,tau_plus", [(3, 1.0, 0.1), (4, 2.0, 0.2)])
def test_gradients_match_reference_including_through_the_weights(b, beta, tau_plus):
    d, t = 4, 0.5
    z1, z2 = _views(b, d, seed=7)
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    hcl_loss(a1, a2, t, tau_plus, beta).backward()
    r1 = [[x.clone().requires_grad_() for x in row] for row in z1.unbind()]
    r2 = [[x.clone().requires_grad_() for x in row] for row in z2.unbind()]
    _reference(r1, r2, t, tau_plus, beta, "hard").backward()
    g1 = torch.stack([torch.stack([x.grad for x in row]) for row in r1])
    g2 = torch.stack([torch.stack([x.grad for x in row]) for row in r2])
    torch.testing.assert_close(a1.grad, g1, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(a2.grad, g2, rtol=1e-6, atol=1e-12)


def test_stable_where_the_official_formula_overflows_in_float32():
    z1, z2 = _views(8, 16, seed=3)
    t, beta = 0.02, 6.0  # exp((beta + 1) / t) = e^350: inf in float32 (and float64)
    loss = hcl_loss(z1.float(), z2.float(), t, 0.1, beta)
    assert torch.isfinite(loss)
    ref = hcl_loss(z1, z2, t, 0.1, beta)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-4)


def test_half_inputs_and_autocast_give_a_float32_loss():
    z1, z2 = _views(4, 8, seed=1)
    loss = hcl_loss(z1.half(), z2.half(), 0.1)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the similarities must not drop to 16 bits
        amp = hcl_loss(z1.float(), z2.float(), 0.1)
    assert amp.dtype == torch.float32
    assert amp.item() == pytest.approx(hcl_loss(z1, z2, 0.1).item(), rel=1e-5)


def test_optimisation_lowers_the_loss():
    z1, z2 = _views(8, 16, seed=0)
    z1, z2 = z1.float().requires_grad_(), z2.float().requires_grad_()
    opt = torch.optim.Adam([z1, z2], lr=0.05)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = hcl_loss(z1, z2)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_module_and_registry():
    loss = HCLLoss(beta=0.5)
    assert isinstance(loss, HCLLoss) and "beta=0.5" in repr(loss)
    z1, z2 = _views(3, 4, seed=2)
    assert loss(z1, z2).item() == pytest.approx(hcl_loss(z1, z2, 0.5, 0.1, 0.5).item())
    with pytest.raises(TypeError):
        HCLLoss(0.5)  # hyperparameters are keyword-only


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(beta=-0.1), "beta"),
        (dict(beta=float("inf")), "beta"),
        (dict(tau_plus=1.0), "tau_plus"),
        (dict(tau_plus=-0.1), "tau_plus"),
        (dict(temperature=0.0), "temperature"),
        (dict(estimator="medium"), "estimator"),
    ],
)
def test_hyperparameter_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HCLLoss(**kwargs)
    z1, z2 = _views(2, 3, seed=0)
    with pytest.raises(ValueError, match=match):
        hcl_loss(z1, z2, **kwargs)


def test_shape_validation():
    z1, z2 = _views(4, 3, seed=0)
    with pytest.raises(ValueError, match="same shape"):
        hcl_loss(z1, z2[:3])
    with pytest.raises(ValueError, match="at least 2"):
        hcl_loss(z1[:1], z2[:1])
    with pytest.raises(ValueError, match="B x D"):
        hcl_loss(z1[0], z2[0])
