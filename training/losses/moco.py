"""MoCo: the queue InfoNCE loss and its symmetric (FAME) variant.

The key queue is :class:`training.methods.queue.KeyQueue`; the momentum update and shuffle-BN
are in :mod:`training.methods.momentum`.

He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020
(eq. 1 and Algorithm 1); Chen et al., "Improved Baselines with Momentum Contrastive Learning"
(MoCo v2), 2020. Official code: ``facebookresearch/moco`` ``moco/builder.py``. The symmetric
variant follows FAME (Ding et al., CVPR 2022, ``Mark12Ding/FAME`` ``moco/builder.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.checks import check_shape, check_temperature


def moco_loss(q: Tensor, k: Tensor, queue: Tensor, temperature: float = 0.07) -> Tensor:
    """MoCo InfoNCE: one positive key per query against a queue of negative keys.

    Logits are ``[q_i . k_i, q_i . queue_j for j < K] / T``; the loss is cross-entropy with
    label 0 (the positive), averaged over the batch. Keys and queue get no gradient: in MoCo
    they come from the momentum encoder (the official code computes them under ``no_grad`` and
    uses ``queue.clone().detach()``), so both are detached here.

    Args:
        q: ``B x D`` queries from the online encoder, assumed L2-normalised.
        k: ``B x D`` positive keys from the momentum encoder, assumed L2-normalised.
        queue: ``K x D`` negative keys, assumed L2-normalised (row layout; the official code
            stores the transpose, ``D x K``).
        temperature: ``T > 0``; MoCo v1 0.07, MoCo v2 0.2, FAME 0.1.

    Returns:
        Scalar loss.
    """
    check_temperature(temperature)
    check_shape("q", q, 2, "B x D")
    check_shape("queue", queue, 2, "K x D")
    if k.shape != q.shape or queue.shape[1] != q.shape[1]:
        raise ValueError(
            f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, queue {tuple(queue.shape)}"
        )
    l_pos = (q * k.detach()).sum(dim=1, keepdim=True)  # B x 1
    l_neg = q @ queue.detach().t()  # B x K
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels)


def symmetric_moco_loss(
    q1: Tensor, k1: Tensor, q2: Tensor, k2: Tensor, queue: Tensor, temperature: float = 0.07
) -> Tensor:
    """Symmetrised MoCo loss, ``(moco(q1, k2) + moco(q2, k1)) / 2`` (FAME style).

    ``q_v``/``k_v`` are the online/momentum embeddings of view ``v`` (``B x D`` each). Both
    terms use the same ``K x D`` queue. Note: the official FAME ``MoCo.forward`` enqueues the
    keys of the first term before computing the second, so its second term also sees those
    ``B`` keys as negatives; here the caller enqueues both key sets after the step.
    """
    return 0.5 * (moco_loss(q1, k2, queue, temperature) + moco_loss(q2, k1, queue, temperature))


class MoCoLoss(nn.Module):
    """MoCo queue InfoNCE loss (optionally symmetrised as in FAME) -> scalar."""

    def __init__(self, temperature: float = 0.07, symmetric: bool = False) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.symmetric = bool(symmetric)

    def forward(
        self, q1: Tensor, k1: Tensor, queue: Tensor, q2: Tensor | None = None, k2: Tensor | None = None
    ) -> Tensor:
        """``moco_loss(q1, k1, queue)``; when symmetric, ``symmetric_moco_loss(q1, k1, q2, k2, queue)``.

        Non-symmetric: ``k1`` is the positive key of ``q1`` (the other view). Symmetric: ``q_v``
        and ``k_v`` are the online and momentum embeddings of view ``v``; all are ``B x D``.
        """
        if not self.symmetric:
            return moco_loss(q1, k1, queue, self.temperature)
        if q2 is None or k2 is None:
            raise ValueError("symmetric MoCoLoss needs q2 and k2")
        return symmetric_moco_loss(q1, k1, q2, k2, queue, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, symmetric={self.symmetric}"
