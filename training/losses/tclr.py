"""TCLR's temporal contrastive losses: instance (IC), local-local (LL) and global-local (GL).

Dave et al., "TCLR: Temporal Contrastive Learning for Video Representation", CVIU 2022
(Sec. 3). Official code: ``DAVEISHAN/TCLR`` @ ``850efa94``, ``tclr_pretraining/
train_gen_all_step.py::train_epoch`` and ``contrastive_loss/global_local_temporal_contrastive.py``.

Shapes: ``B`` videos, ``N`` timesteps (4 in the paper), ``D`` embedding dim. Per video there
is one global (sparse) clip and ``N`` local (dense) clips tiling its span, each in two
augmentations ``a`` and ``b``. The global clip's feature map is cut into ``N`` temporal slices
(``slices``, ``B x N x D``) that are matched with the ``N`` local clips (``local``).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.checks import check_choice, check_shape, check_temperature
from training.losses.info_nce import info_nce_loss
from training.losses.nt_xent import nt_xent_rows

LL_REDUCTIONS = ("mean", "sum")
GL_REDUCTIONS = ("mean", "official")
WEIGHTINGS = ("paper", "official")


def local_local_loss(z_a: Tensor, z_b: Tensor, temperature: float = 0.1, reduction: str = "mean") -> Tensor:
    """Local-local temporal contrastive loss (TCLR eq. 2): NT-Xent within each video.

    For each video the ``2N`` local-clip embeddings ``[z_a[v]; z_b[v]]`` form one NT-Xent
    problem: the positive of clip ``(t, a)`` is ``(t, b)`` and the negatives are the other
    ``2N - 2`` clips of the *same* video (other timesteps, both augmentations), which makes
    the features distinct across time. Each video's loss is the mean over its ``2N`` rows.

    Args:
        z_a: ``B x N x D`` local clips, augmentation a (L2-normalised here).
        z_b: ``B x N x D`` the same local clips, augmentation b.
        temperature: ``tau > 0`` (TCLR 0.1).
        reduction: ``"mean"`` over videos (paper) or ``"sum"`` over videos (official code,
            whose weight grows with the batch size).

    Returns:
        Scalar loss.
    """
    check_temperature(temperature)
    check_choice("reduction", reduction, LL_REDUCTIONS)
    check_shape("z_a", z_a, 3, "B x N x D")
    per_video = nt_xent_rows(z_a, z_b, temperature).mean(dim=1)  # B
    return per_video.mean() if reduction == "mean" else per_video.sum()


def global_local_loss(
    slices: Tensor, dense: Tensor, temperature: float = 0.1, reduction: str = "mean"
) -> Tensor:
    """Global-local temporal contrastive loss (TCLR eq. 3): match slices to local clips in time.

    Per video, ``S = slices @ dense^T / tau`` (``N x N``); slice ``t`` of the global clip's
    feature map must pick local clip ``t`` among the video's ``N`` local clips (rows of ``S``),
    and local clip ``t`` must pick slice ``t`` (rows of ``S^T``): cross-entropy with the
    diagonal as label in both directions. Only timesteps of the same video are negatives.

    Args:
        slices: ``B x N x D`` per-timestep slices of the global clip (L2-normalised here).
        dense: ``B x N x D`` time-pooled local clips (L2-normalised here).
        temperature: ``tau > 0`` (TCLR 0.1).
        reduction: ``"mean"`` over videos, timesteps and both directions (paper), or
            ``"official"``: sum over timesteps, mean over (video, direction), as the official
            ``CE(reduction='sum') / (2B)`` (= ``N`` times the paper value).

    Returns:
        Scalar loss.
    """
    check_temperature(temperature)
    check_choice("reduction", reduction, GL_REDUCTIONS)
    check_shape("slices", slices, 3, "B x N x D")
    if slices.shape != dense.shape:
        raise ValueError(f"slices and dense must match, got {tuple(slices.shape)} and {tuple(dense.shape)}")
    b, n, _ = slices.shape
    s = F.normalize(slices, dim=-1) @ F.normalize(dense, dim=-1).transpose(1, 2) / temperature
    logits = torch.cat([s, s.transpose(1, 2)], dim=0).reshape(2 * b * n, n)
    labels = torch.arange(n, device=s.device).repeat(2 * b)
    if reduction == "mean":
        return F.cross_entropy(logits, labels)
    return F.cross_entropy(logits, labels, reduction="sum") / (2 * b)


def tclr_loss_terms(
    global_a: Tensor,
    global_b: Tensor,
    slices_a: Tensor,
    slices_b: Tensor,
    local_a: Tensor,
    local_b: Tensor,
    temperature: float = 0.1,
    weighting: str = "paper",
) -> dict[str, Tensor]:
    """The TCLR loss terms, unweighted sums of which give :func:`tclr_loss`.

    ``weighting="paper"`` (TCLR eq. 4, ``L = L_IC + L_LL + L_GL``, each a mean):
        - ``ic = info_nce(global_a, global_b)``, NT-Xent across videos on time-pooled global clips;
        - ``ll = local_local_loss(local_a, local_b, reduction="mean")``;
        - ``gl`` = mean over the 4 augmentation pairs ``(x, y) in {a,b}^2`` of
          ``global_local_loss(slices_x, local_y, reduction="mean")``.

    ``weighting="official"`` (``train_epoch`` of the official code, ``loss = ic2 + ic1 + LL + GL``):
        - ``ic = info_nce(global_a, global_b)`` (``loss_ic2``);
        - ``ic_local`` (``loss_ic1``): ``sum over ordered pairs (x, t) != (y, u)`` of the ``2N``
          local clips of ``info_nce(local_x[:, t], local_y[:, u])``, divided by ``N`` (the code
          divides by 4 with ``N = 4``). Different timesteps of one video are positives here;
          with ``N = 4`` this is 56 terms / 4 = 14 x the mean NT-Xent;
        - ``ll = local_local_loss(local_a, local_b, reduction="sum")`` (summed over videos);
        - ``gl`` = sum over the 4 augmentation pairs of
          ``global_local_loss(slices_x, local_y, reduction="official")``.

    Args:
        global_a, global_b: ``B x D`` time-pooled global (sparse) clips, augmentations a/b.
        slices_a, slices_b: ``B x N x D`` per-timestep slices of the global clip feature map.
        local_a, local_b: ``B x N x D`` time-pooled local (dense) clips, timestep ``t`` of each
            video covering slice ``t`` of its global clip.
        temperature: ``tau > 0`` for every term (TCLR 0.1).
        weighting: ``"paper"`` or ``"official"``.

    Returns:
        Dict of scalar terms: ``ic``, ``ll``, ``gl`` and, for ``"official"``, ``ic_local``.
    """
    check_temperature(temperature)
    check_choice("weighting", weighting, WEIGHTINGS)
    check_shape("local_a", local_a, 3, "B x N x D")
    for name, x in (("slices_a", slices_a), ("slices_b", slices_b), ("local_b", local_b)):
        if x.shape != local_a.shape:
            raise ValueError(f"{name} must have shape {tuple(local_a.shape)}, got {tuple(x.shape)}")
    slices, local = {"a": slices_a, "b": slices_b}, {"a": local_a, "b": local_b}
    pairs = list(itertools.product("ab", repeat=2))
    terms = {"ic": info_nce_loss(global_a, global_b, temperature)}
    if weighting == "paper":
        terms["ll"] = local_local_loss(local_a, local_b, temperature, "mean")
        gl = [global_local_loss(slices[x], local[y], temperature, "mean") for x, y in pairs]
        terms["gl"] = torch.stack(gl).mean()
        return terms
    return {**terms, **_official_local_terms(slices, local, temperature)}


def _official_local_terms(slices: dict[str, Tensor], local: dict[str, Tensor], temperature: float) -> dict[str, Tensor]:
    """``ic_local``, ``ll`` and ``gl`` as the official ``train_epoch`` sums them (see :func:`tclr_loss_terms`)."""
    n = local["a"].shape[1]
    clips = [local[x][:, t] for x in "ab" for t in range(n)]
    # NT-Xent is symmetric in its two views, so each unordered pair counts twice.
    ic_local = [
        info_nce_loss(clips[i], clips[j], temperature) for i, j in itertools.combinations(range(2 * n), 2)
    ]
    gl = [global_local_loss(slices[x], local[y], temperature, "official") for x, y in itertools.product("ab", repeat=2)]
    return {
        "ic_local": 2.0 * torch.stack(ic_local).sum() / n,
        "ll": local_local_loss(local["a"], local["b"], temperature, "sum"),
        "gl": torch.stack(gl).sum(),
    }


def tclr_loss(
    global_a: Tensor,
    global_b: Tensor,
    slices_a: Tensor,
    slices_b: Tensor,
    local_a: Tensor,
    local_b: Tensor,
    temperature: float = 0.1,
    weighting: str = "paper",
) -> Tensor:
    """Total TCLR loss: the sum of :func:`tclr_loss_terms` (see there for shapes and modes)."""
    terms = tclr_loss_terms(global_a, global_b, slices_a, slices_b, local_a, local_b, temperature, weighting)
    return torch.stack(list(terms.values())).sum()


class TCLRLoss(nn.Module):
    """TCLR loss: instance + local-local + global-local temporal contrastive terms -> scalar."""

    def __init__(self, temperature: float = 0.1, weighting: str = "paper") -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.weighting = check_choice("weighting", weighting, WEIGHTINGS)

    def forward(
        self,
        global_a: Tensor,
        global_b: Tensor,
        slices_a: Tensor,
        slices_b: Tensor,
        local_a: Tensor,
        local_b: Tensor,
    ) -> Tensor:
        """See :func:`tclr_loss`."""
        return tclr_loss(
            global_a, global_b, slices_a, slices_b, local_a, local_b, self.temperature, self.weighting
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, weighting={self.weighting!r}"
