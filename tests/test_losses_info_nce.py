"""SimCLR NT-Xent: equality with a loop reference, optimisation, validation, registry."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import InfoNCELoss, TCLRLoss, info_nce_loss


def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    """SimCLR eq. 1 with Python loops: l(i, j) = -log exp(s_ij/t) / sum_{k != i} exp(s_ik/t)."""
    z = [[a / math.sqrt(sum(b * b for b in v)) for a in v] for v in torch.cat([z1, z2]).tolist()]
    n = len(z1)

    def sim(i: int, j: int) -> float:
        return sum(a * b for a, b in zip(z[i], z[j])) / temperature

    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        denom = sum(math.exp(sim(i, k)) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(sim(i, pos)) / denom)
    return total / (2 * n)


@pytest.mark.parametrize("batch", [1, 2, 5, 8])
@pytest.mark.parametrize("temperature", [0.07, 0.1, 0.5, 1.0])
def test_matches_loop_reference(batch: int, temperature: float) -> None:
    g = torch.Generator().manual_seed(batch * 100 + int(temperature * 100))
    z1 = torch.randn(batch, 6, generator=g, dtype=torch.float64)
    z2 = torch.randn(batch, 6, generator=g, dtype=torch.float64)
    got = info_nce_loss(z1, z2, temperature)
    assert got.dtype == torch.float64
    assert math.isclose(float(got), reference_nt_xent(z1, z2, temperature), rel_tol=1e-6, abs_tol=1e-12)
    # Symmetric in the two views and invariant to the embeddings' scale (normalised inside).
    assert torch.allclose(info_nce_loss(z2, z1, temperature), got)
    assert torch.allclose(info_nce_loss(3 * z1, 0.5 * z2, temperature), got)


def test_positive_pair_matters() -> None:
    z = torch.randn(6, 8, dtype=torch.float64)
    aligned = info_nce_loss(z, z + 0.01 * torch.randn_like(z))
    shuffled = info_nce_loss(z, z[torch.tensor([1, 2, 3, 4, 5, 0])])
    assert aligned < shuffled


def test_optimisation_lowers_loss() -> None:
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(8, 16, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(8, 16, generator=g, dtype=torch.float64, requires_grad=True)
    loss_fn = InfoNCELoss(temperature=0.2)
    opt = torch.optim.SGD([z1, z2], lr=0.5)
    start = loss_fn(z1, z2).item()
    for _ in range(20):
        opt.zero_grad()
        loss = loss_fn(z1, z2)
        loss.backward()
        opt.step()
    assert loss_fn(z1, z2).item() < 0.7 * start


@pytest.mark.parametrize("temperature", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_temperature(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(temperature=temperature)
    with pytest.raises(ValueError, match="temperature"):
        info_nce_loss(torch.randn(2, 3), torch.randn(2, 3), temperature)


def test_shape_errors() -> None:
    with pytest.raises(ValueError):
        info_nce_loss(torch.randn(2, 3), torch.randn(3, 3))
    with pytest.raises(ValueError):
        info_nce_loss(torch.randn(2, 3, 4), torch.randn(2, 3, 4))


def test_loss_modules_validate_their_hyperparameters() -> None:
    loss = InfoNCELoss(temperature=0.3)
    assert loss.temperature == 0.3
    with pytest.raises(ValueError, match="temperature"):
        TCLRLoss(temperature=-1.0)
