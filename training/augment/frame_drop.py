"""VideoMoCo's adversarial frame dropping: the generator's output that the encoder sees.

Pan et al., "VideoMoCo: Contrastive Video Representation Learning with Temporally Adversarial
Examples", CVPR 2021 (Sec. 3.2); official ``tinapan-pt/VideoMoCo`` @ ``42e069ae``
``moco/builder.py::VideoTopk``. A generator scores the frames of the query clip; the ``drop``
lowest-scoring frames are replaced by their own mean value. The op is not differentiable in
the scores, so the backward is straight-through (as ``VideoTopk``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from training.checks import check_shape


class DropFrames(torch.autograd.Function):
    """Replace the ``drop`` lowest-scoring frames of each clip by their mean (``VideoTopk``).

    Forward: for clip ``b`` the ``drop`` frames ``t`` with the smallest ``scores[b, t]`` become
    the constant ``mean(x[b, :, t])`` (one scalar over channels and pixels); the others are
    copied. Backward (straight-through, as official): ``d scores[b, t] = sum_{c,h,w}
    grad[b, c, t, h, w]`` for *every* frame, and no gradient to ``x``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, scores: Tensor, drop: int) -> Tensor:  # noqa: D102
        dropped = torch.zeros_like(scores, dtype=torch.bool)
        if drop > 0:
            lowest = scores.detach().topk(int(drop), dim=1, largest=False).indices
            dropped.scatter_(1, lowest, True)
        means = x.mean(dim=(1, 3, 4), keepdim=True)  # B x 1 x T x 1 x 1
        mask = dropped[:, None, :, None, None]
        return torch.where(mask, means.expand_as(x), x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor, None]:  # noqa: D102
        return None, grad.sum(dim=(1, 3, 4)), None


def drop_frames(x: Tensor, scores: Tensor, drop: int) -> Tensor:
    """Frame dropping with a straight-through gradient to ``scores`` (see :class:`DropFrames`).

    Args:
        x: ``B x C x T x H x W`` clips (normalised, as the official code drops after its GPU
            augmentation).
        scores: ``B x T`` per-frame scores from the generator.
        drop: number of frames replaced per clip, ``0 <= drop <= T`` (official 8 of 32).

    Returns:
        ``B x C x T x H x W`` clips with ``drop`` frames set to their mean.
    """
    check_shape("x", x, 5, "B x C x T x H x W")
    check_shape("scores", scores, 2, "B x T")
    if scores.shape != (x.shape[0], x.shape[2]):
        raise ValueError(f"scores must be B x T = {(x.shape[0], x.shape[2])}, got {tuple(scores.shape)}")
    if not 0 <= int(drop) <= x.shape[2]:
        raise ValueError(f"drop must be in [0, T={x.shape[2]}], got {drop!r}")
    return DropFrames.apply(x, scores, int(drop))
