"""The momentum (key) encoder's update and single-process shuffle-BN (MoCo, Sec. 3.2-3.3).

He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020;
official code ``facebookresearch/moco`` ``moco/builder.py`` (``_momentum_update_key_encoder``,
``_batch_shuffle_ddp``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn


@torch.no_grad()
def momentum_update(online: nn.Module, target: nn.Module, m: float) -> None:
    """EMA update of the target (key) encoder: ``theta_t <- m theta_t + (1 - m) theta_o``.

    Only parameters are averaged; buffers (BatchNorm running stats, counters) are copied from
    the online encoder. MoCo's official code updates parameters only and lets the key encoder
    keep its own BN running stats; copying them keeps an evaluated target encoder consistent.

    Args:
        online: the query encoder (source).
        target: the key encoder (updated in place); same architecture.
        m: momentum in ``[0, 1]`` (MoCo 0.999); ``m = 0`` copies, ``m = 1`` freezes.
    """
    if not 0.0 <= float(m) <= 1.0:
        raise ValueError(f"momentum m must be in [0, 1], got {m!r}")
    p_on, p_tg = dict(online.named_parameters()), dict(target.named_parameters())
    b_on, b_tg = dict(online.named_buffers()), dict(target.named_buffers())
    if p_on.keys() != p_tg.keys() or b_on.keys() != b_tg.keys():
        raise ValueError("online and target encoders must have the same parameter and buffer names")
    for name, p in p_tg.items():
        p.mul_(m).add_(p_on[name].detach(), alpha=1.0 - m)
    for name, b in b_tg.items():
        b.copy_(b_on[name])


def split_batch_forward(
    encoder: Callable[[Tensor], Any], x: Tensor, groups: int, perm: Tensor | None = None
) -> Any:
    """Single-process shuffle-BN: run ``encoder`` on ``groups`` shuffled sub-batches.

    MoCo shuffles the key batch across GPUs so that BatchNorm statistics of a sample's key and
    query come from different sample sets (otherwise BN leaks which key is the positive, see
    the MoCo paper, Sec. 3.3). On one process we emulate it: permute the batch with ``perm``,
    split it into ``groups`` contiguous sub-batches, run the encoder on each separately (its BN
    layers see per-sub-batch statistics), concatenate and undo the permutation. Use a random
    ``perm`` for keys and the identity for queries.

    Args:
        encoder: module mapping ``b x ...`` to ``b x ...`` (sample-wise outputs), or to a tuple
            of such tensors (each is reassembled the same way).
        x: ``B x ...`` input batch.
        groups: number of sub-batches (``1 <= groups <= B``); sizes differ by at most one
            when ``groups`` does not divide ``B``.
        perm: ``B`` permutation to apply; ``None`` draws ``torch.randperm(B)``.

    Returns:
        Encoder outputs for ``x`` in the original order.
    """
    n = x.shape[0]
    if not 1 <= int(groups) <= max(n, 1):
        raise ValueError(f"groups must be in [1, batch size {n}], got {groups!r}")
    if perm is None:
        perm = torch.randperm(n, device=x.device)
    perm = perm.to(device=x.device, dtype=torch.long)
    if perm.shape != (n,) or not torch.equal(torch.sort(perm).values, torch.arange(n, device=x.device)):
        raise ValueError(f"perm must be a permutation of range({n})")
    outs = [encoder(chunk) for chunk in x[perm].tensor_split(int(groups))]
    inverse = torch.argsort(perm)
    if isinstance(outs[0], tuple):  # several per-sample outputs (e.g. embedding and dense maps)
        return tuple(torch.cat(parts, dim=0)[inverse] for parts in zip(*outs))
    return torch.cat(outs, dim=0)[inverse]
