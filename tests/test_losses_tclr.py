"""TCLR: LL and GL losses and their combination vs loop references written from the paper/code."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from loop_refs import Vec, dot, normed, ref_nt_xent  # noqa: F401

from training.losses import TCLRLoss, global_local_loss, local_local_loss, tclr_loss
from training.losses.tclr import tclr_loss_terms


def ref_local_local(z_a: torch.Tensor, z_b: torch.Tensor, t: float, reduction: str) -> float:
    """Loop over videos; per video NT-Xent over its 2N local clips (TCLR eq. 2)."""
    per_video = [ref_nt_xent(z_a[v].tolist(), z_b[v].tolist(), t) for v in range(len(z_a))]
    return sum(per_video) / (len(per_video) if reduction == "mean" else 1)


def ref_global_local_terms(slices: torch.Tensor, dense: torch.Tensor, t: float) -> list[float]:
    """Loop over videos, directions and timesteps: CE of slice t vs local clips (and back)."""
    terms = []
    for v in range(len(slices)):
        s = [normed(x) for x in slices[v].tolist()]
        d = [normed(x) for x in dense[v].tolist()]
        n = len(s)
        for anchors, others in ((s, d), (d, s)):
            for i in range(n):
                denom = sum(math.exp(dot(anchors[i], others[j]) / t) for j in range(n))
                terms.append(-math.log(math.exp(dot(anchors[i], others[i]) / t) / denom))
    return terms


def ref_global_local(slices: torch.Tensor, dense: torch.Tensor, t: float, reduction: str) -> float:
    terms = ref_global_local_terms(slices, dense, t)
    if reduction == "mean":
        return sum(terms) / len(terms)
    return sum(terms) / (2 * len(slices))  # official: sum over timesteps, mean over (video, direction)


def inputs(batch: int, steps: int, seed: int, dim: int = 6) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(batch, dim), (batch, dim)] + [(batch, steps, dim)] * 4
    return [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes]


CASES = [(1, 2, 0.1), (3, 4, 0.1), (4, 3, 0.5), (2, 5, 0.07)]


@pytest.mark.parametrize(("batch", "steps", "t"), CASES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_local_local_matches_reference(batch: int, steps: int, t: float, reduction: str) -> None:
    *_, z_a, z_b = inputs(batch, steps, seed=batch + steps)
    got = float(local_local_loss(z_a, z_b, t, reduction))
    assert math.isclose(got, ref_local_local(z_a, z_b, t, reduction), rel_tol=1e-6)


def test_local_local_negatives_are_same_video_only() -> None:
    # Adding more videos must not change a video's own loss: other videos are not negatives.
    *_, z_a, z_b = inputs(3, 4, seed=7)
    alone = local_local_loss(z_a[:1], z_b[:1])
    together = local_local_loss(z_a, z_b, reduction="sum") - local_local_loss(
        z_a[1:], z_b[1:], reduction="sum"
    )
    assert torch.allclose(alone, together)


@pytest.mark.parametrize(("batch", "steps", "t"), CASES)
@pytest.mark.parametrize("reduction", ["mean", "official"])
def test_global_local_matches_reference(batch: int, steps: int, t: float, reduction: str) -> None:
    _, _, slices, _, dense, _ = inputs(batch, steps, seed=10 * batch + steps)
    got = float(global_local_loss(slices, dense, t, reduction))
    assert math.isclose(got, ref_global_local(slices, dense, t, reduction), rel_tol=1e-6)
    if reduction == "official":
        paper = float(global_local_loss(slices, dense, t, "mean"))
        assert math.isclose(got, steps * paper, rel_tol=1e-9)


def ref_tclr(args: list[torch.Tensor], t: float, weighting: str) -> float:
    g_a, g_b, s_a, s_b, l_a, l_b = args
    slices, local = {"a": s_a, "b": s_b}, {"a": l_a, "b": l_b}
    ic = ref_nt_xent(g_a.tolist(), g_b.tolist(), t)
    pairs = list(itertools.product("ab", repeat=2))
    if weighting == "paper":
        ll = ref_local_local(l_a, l_b, t, "mean")
        gl = sum(ref_global_local(slices[x], local[y], t, "mean") for x, y in pairs) / 4
        return ic + ll + gl
    n = l_a.shape[1]
    clips = [(x, i) for x in "ab" for i in range(n)]
    # Official loss_ic1: NT-Xent over the batch for every ordered pair of distinct local clips, / 4 (N = 4).
    ic1 = (
        sum(
            ref_nt_xent(local[x][:, i].tolist(), local[y][:, j].tolist(), t)
            for (x, i), (y, j) in itertools.permutations(clips, 2)
        )
        / n
    )
    ll = ref_local_local(l_a, l_b, t, "sum")
    gl = sum(ref_global_local(slices[x], local[y], t, "official") for x, y in pairs)
    return ic + ic1 + ll + gl


@pytest.mark.parametrize(("batch", "steps", "t"), [(2, 4, 0.1), (3, 3, 0.2)])
@pytest.mark.parametrize("weighting", ["paper", "official"])
def test_tclr_matches_reference(batch: int, steps: int, t: float, weighting: str) -> None:
    args = inputs(batch, steps, seed=batch * steps)
    got = float(tclr_loss(*args, temperature=t, weighting=weighting))
    assert math.isclose(got, ref_tclr(args, t, weighting), rel_tol=1e-6)
    module = TCLRLoss(temperature=t, weighting=weighting)
    assert math.isclose(float(module(*args)), got, rel_tol=1e-12)
    terms = tclr_loss_terms(*args, temperature=t, weighting=weighting)
    assert set(terms) == ({"ic", "ll", "gl"} | ({"ic_local"} if weighting == "official" else set()))


@pytest.mark.parametrize("weighting", ["paper", "official"])
def test_optimisation_lowers_loss(weighting: str) -> None:
    leaves = [x.requires_grad_(True) for x in inputs(4, 4, seed=3, dim=12)]
    loss_fn = TCLRLoss(temperature=0.2, weighting=weighting)
    opt = torch.optim.SGD(leaves, lr=0.05 if weighting == "official" else 0.5)
    start = loss_fn(*leaves).item()
    for _ in range(20):
        opt.zero_grad()
        loss = loss_fn(*leaves)
        loss.backward()
        opt.step()
    assert loss_fn(*leaves).item() < 0.8 * start


def test_ll_and_gl_optimisation_lowers_loss() -> None:
    _, _, s, _, d, d2 = (x.requires_grad_(True) for x in inputs(3, 4, seed=5, dim=12))
    opt = torch.optim.SGD([s, d, d2], lr=0.5)
    start = (local_local_loss(d, d2) + global_local_loss(s, d)).item()
    for _ in range(20):
        opt.zero_grad()
        (local_local_loss(d, d2) + global_local_loss(s, d)).backward()
        opt.step()
    assert (local_local_loss(d, d2) + global_local_loss(s, d)).item() < 0.7 * start


def test_validation_errors() -> None:
    z = F.normalize(torch.randn(2, 4, 3), dim=-1)
    with pytest.raises(ValueError, match="reduction"):
        local_local_loss(z, z, reduction="official")
    with pytest.raises(ValueError, match="reduction"):
        global_local_loss(z, z, reduction="sum")
    with pytest.raises(ValueError, match="temperature"):
        local_local_loss(z, z, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        TCLRLoss(temperature=-0.1)
    with pytest.raises(ValueError, match="weighting"):
        TCLRLoss(weighting="both")
    with pytest.raises(ValueError, match="B x N x D"):
        local_local_loss(z[0], z[0])
    with pytest.raises(ValueError, match="must match"):
        global_local_loss(z, z[:, :3])
