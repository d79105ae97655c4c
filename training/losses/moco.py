"""MoCo: the queue loss, the key queue, the momentum update and single-process shuffle-BN.

He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020
(eq. 1 and Algorithm 1); Chen et al., "Improved Baselines with Momentum Contrastive Learning"
(MoCo v2), 2020. Official code: ``facebookresearch/moco`` ``moco/builder.py``. The symmetric
variant follows FAME (Ding et al., CVPR 2022, ``Mark12Ding/FAME`` ``moco/builder.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.losses._checks import check_shape, check_temperature
from training.losses.registry import register_loss


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


class KeyQueue(nn.Module):
    """A FIFO ring buffer of ``size`` L2-normalised keys of dimension ``dim``.

    State lives in buffers (``keys: K x D``, ``ptr``), so it is saved in ``state_dict`` and a
    resumed run continues exactly. Initial keys are ``normalize(randn(K, D))``, the same
    distribution as MoCo's ``normalize(randn(D, K), dim=0)`` (transposed layout).

    Args:
        size: number of keys ``K`` (MoCo 65536; FAME on UCF101 2048).
        dim: key dimension ``D``.
        generator: optional ``torch.Generator`` for a reproducible initial queue.
    """

    keys: Tensor
    ptr: Tensor

    def __init__(self, size: int, dim: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if int(size) < 1 or int(dim) < 1:
            raise ValueError(f"queue size and dim must be >= 1, got size={size!r}, dim={dim!r}")
        self.size, self.dim = int(size), int(dim)
        init = F.normalize(torch.randn(self.size, self.dim, generator=generator), dim=1)
        self.register_buffer("keys", init)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` (``B x D``) over the oldest entries, wrapping around the end.

        Unlike the official code (``assert K % batch_size == 0``) any ``B`` works: a batch that
        does not divide ``K`` wraps to the front, and one larger than ``K`` keeps its last
        ``K`` rows.
        """
        check_shape("keys", keys, 2, "B x D")
        if keys.shape[1] != self.dim:
            raise ValueError(f"keys must have dim {self.dim}, got {keys.shape[1]}")
        keys = keys.detach().to(self.keys.dtype)
        n = keys.shape[0]
        slots = self.written_slots(n)
        self.keys[slots] = keys[n - slots.shape[0] :]  # only the newest K survive a full wrap
        self.ptr.fill_((int(self.ptr) + n) % self.size)

    def written_slots(self, n: int) -> Tensor:
        """The slots the next :meth:`enqueue` of ``n`` keys writes, in write order, wrapping
        around the end; when ``n > K`` they are the slots of the newest ``K`` keys (subclasses
        that keep something per key, such as ages or labels, write the same slots)."""
        kept = min(int(n), self.size)
        start = (int(self.ptr) + int(n) - kept) % self.size
        return (start + torch.arange(kept, device=self.keys.device)) % self.size

    def forward(self) -> Tensor:
        """The current ``K x D`` keys (detached: negatives never get gradients)."""
        return self.keys.detach()

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"


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


@register_loss("moco")
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
