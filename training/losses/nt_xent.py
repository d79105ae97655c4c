"""Batched NT-Xent rows shared by the SimCLR and TCLR losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def nt_xent_rows(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """Per-row NT-Xent losses of one or many independent groups of ``2n`` embeddings.

    Each group stacks ``z = [z1; z2]`` (``2n x D``, L2-normalised here); row ``i`` has its
    positive at ``(i + n) mod 2n`` (the other view) and the other ``2n - 2`` rows as negatives;
    itself is excluded from the softmax (Chen et al., "A Simple Framework for Contrastive
    Learning of Visual Representations", ICML 2020, eq. 1).

    Args:
        z1: ``... x n x D`` first views (any leading batch dims, e.g. videos for TCLR).
        z2: ``... x n x D`` second views, same shape.
        temperature: softmax temperature ``tau > 0``.

    Returns:
        ``... x 2n`` losses, rows ``0..n-1`` anchored at ``z1``, rows ``n..2n-1`` at ``z2``.
    """
    if z1.shape != z2.shape:
        raise ValueError(
            f"the two views must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    n = z1.shape[-2]
    z = F.normalize(torch.cat([z1, z2], dim=-2), dim=-1)
    sim = z @ z.transpose(-1, -2) / temperature  # ... x 2n x 2n
    # Exclude self-similarity (always 1/tau) from the denominator: -inf -> exp = 0.
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    pos_idx = (torch.arange(2 * n, device=z.device) + n) % (2 * n)
    pos = sim[..., torch.arange(2 * n, device=z.device), pos_idx]
    return torch.logsumexp(sim, dim=-1) - pos


def nt_xent_extra_negatives(z1: Tensor, z2: Tensor, extra: Tensor, temperature: float) -> Tensor:
    """Mean NT-Xent over ``[z1; z2]`` with ``extra`` embeddings as further negatives of every row.

    Row ``i`` keeps its positive (the other view) and its ``2n - 2`` negatives of
    :func:`nt_xent_rows`, plus every row of ``extra`` (``m x D``; e.g. the time-reversed
    clips, :mod:`training.methods.reversal`). With ``m = 0`` it equals ``nt_xent_rows(...).mean()``.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    sim = z @ z.t() / temperature
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    pos_idx = (torch.arange(2 * n, device=z.device) + n) % (2 * n)
    pos = sim[torch.arange(2 * n, device=z.device), pos_idx]
    logits = torch.cat([sim, z @ F.normalize(extra, dim=-1).t() / temperature], dim=1)
    return (torch.logsumexp(logits, dim=-1) - pos).mean()
