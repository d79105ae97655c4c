"""VCLR: SeCo's inter/intra terms, the segment ("global context") term and temporal order.

Kuang et al., "Video Contrastive Learning with Global Context", ICCV Workshops 2021. Official
code: ``amazon-research/video-contrastive-learning`` @ ``4fb66c3d``: ``models/Contrast.py``
(``MemorySeCo``, ``MemoryVCLR``), ``models/resnet_mlp.py`` (order head), ``train_vclr.py``
(``train_vclr``: ``loss = inter + intra + order + tsn``) and ``dataset/dataset_kinetics.py``
(``KineticsClipFolderDatasetOrderTSN``, ``shuffle_list``).

A video is cut into ``S = 3`` equal segments. Notation (all embeddings ``B x P``, assumed
L2-normalised): ``q`` is the query of one clip of the first or last segment; ``k_same`` the
momentum encoder's key of the same clip under another augmentation; ``k_other1``/``k_other2``
the keys of the clips of the two other segments ("SeCo", Yao et al. 2021). The segment-order
shuffles are drawn by :class:`training.augment.segment_order.OrderShuffle`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.checks import check_choice, check_shape, check_temperature, check_weight
from training.losses.moco import moco_loss

ORDER_NORMS = ("feature", "official")
ORDER_CLASSES = 4  # 0: both in order, 1: query shuffled, 2: key shuffled, 3: both shuffled


def _check_keys(q: Tensor, *keys: Tensor) -> None:
    check_shape("q", q, 2, "B x P")
    for k in keys:
        if k.shape != q.shape:
            raise ValueError(f"keys must have the query's shape {tuple(q.shape)}, got {tuple(k.shape)}")


def seco_inter_loss(
    q: Tensor, k_same: Tensor, k_other1: Tensor, k_other2: Tensor, queue: Tensor, temperature: float = 0.1
) -> Tensor:
    """SeCo inter-frame term: three positives per query, sharing the queue's negatives.

    Rows ``[q.k_same | q.queue]``, ``[q.k_other1 | q.queue]``, ``[q.k_other2 | q.queue]``
    (``3B x (1 + K)``, divided by ``T``), cross-entropy with label 0, mean over the ``3B`` rows
    (official ``MemorySeCo.forward(inter=True)``). Keys and queue get no gradient.

    Args:
        q: ``B x P`` queries (inter head).
        k_same, k_other1, k_other2: ``B x P`` momentum keys (inter head).
        queue: ``K x P`` negative keys.
        temperature: ``T > 0`` (0.1).
    """
    check_temperature(temperature)
    _check_keys(q, k_same, k_other1, k_other2)
    check_shape("queue", queue, 2, "K x P")
    if queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue must be K x {q.shape[1]}, got {tuple(queue.shape)}")
    positives = torch.cat([(q * k.detach()).sum(dim=1, keepdim=True) for k in (k_same, k_other1, k_other2)])
    negatives = (q @ queue.detach().t()).repeat(3, 1)
    logits = torch.cat([positives, negatives], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=q.device))


def seco_intra_loss(
    q: Tensor, k_same: Tensor, k_other1: Tensor, k_other2: Tensor, temperature: float = 0.1
) -> Tensor:
    """SeCo intra-frame term: the same clip must beat each other-segment clip of its video.

    Rows ``[q.k_same, q.k_other1]`` and ``[q.k_same, q.k_other2]`` (``2B x 2``, divided by
    ``T``), cross-entropy with label 0, mean over the ``2B`` rows; no queue (official
    ``MemorySeCo.forward(inter=False)``, separate intra head).
    """
    check_temperature(temperature)
    _check_keys(q, k_same, k_other1, k_other2)
    same = (q * k_same.detach()).sum(dim=1, keepdim=True)
    other = torch.cat([(q * k.detach()).sum(dim=1, keepdim=True) for k in (k_other1, k_other2)])
    logits = torch.cat([same.repeat(2, 1), other], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=q.device))


def order_features(z: Tensor, norm: str = "feature") -> Tensor:
    """``B x S x P`` per-segment order-head outputs -> ``B x (S P)`` classifier input.

    ``norm="feature"`` L2-normalises each segment's vector (the usual embedding norm);
    ``"official"`` normalises over the ``S`` segments per feature (``F.normalize(dim=1)`` on
    ``B x S x P`` in ``resnet_mlp.py``), a quirk of the official code.
    """
    check_choice("norm", norm, ORDER_NORMS)
    check_shape("z", z, 3, "B x S x P")
    return F.normalize(z, dim=2 if norm == "feature" else 1).flatten(1)


def vclr_loss_terms(
    *,
    inter: tuple[Tensor, Tensor, Tensor, Tensor],
    intra: tuple[Tensor, Tensor, Tensor, Tensor],
    inter_queue: Tensor,
    segment_q: Tensor,
    segment_k: Tensor,
    segment_queue: Tensor,
    order_logits: Tensor,
    order_labels: Tensor,
    temperature: float = 0.1,
    temperature_intra: float = 0.1,
) -> dict[str, Tensor]:
    """The four unweighted VCLR terms (official ``train_vclr``).

    Args:
        inter: ``(q, k_same, k_other1, k_other2)`` from the inter heads, ``B x P`` each.
        intra: the same from the intra heads.
        inter_queue: ``K x P`` negatives of the inter term.
        segment_q: ``B x P`` the query video's segment embedding: mean over its ``S`` clips'
            backbone features -> segment head -> L2 (official "tsn" branch).
        segment_k: ``B x P`` the momentum encoder's segment embedding of the other ``S`` clips.
        segment_queue: ``K x P`` negatives of the segment term (a separate queue,
            ``MemoryVCLR``).
        order_logits: ``B x 4`` order classifier output.
        order_labels: ``B`` classes in ``0..3`` (see :class:`OrderShuffle`).
        temperature: ``T`` of the inter and segment terms (0.1).
        temperature_intra: ``T`` of the intra term (0.1).

    Returns:
        ``{"inter", "intra", "order", "segment"}`` scalars.
    """
    check_shape("order_logits", order_logits, 2, "B x 4")
    if order_logits.shape[1] != ORDER_CLASSES or order_labels.shape != order_logits.shape[:1]:
        raise ValueError(f"need B x 4 order logits and B labels, got {tuple(order_logits.shape)} and "
                         f"{tuple(order_labels.shape)}")
    return {
        "inter": seco_inter_loss(*inter, inter_queue, temperature),
        "intra": seco_intra_loss(*intra, temperature_intra),
        "order": F.cross_entropy(order_logits, order_labels.long()),
        "segment": moco_loss(segment_q, segment_k, segment_queue, temperature),
    }


class VCLRLoss(nn.Module):
    """VCLR loss: weighted SeCo inter + intra + temporal order + segment (global context) -> scalar."""

    def __init__(
        self,
        *,
        temperature: float = 0.1,
        temperature_intra: float = 0.1,
        inter_weight: float = 1.0,
        intra_weight: float = 1.0,
        order_weight: float = 1.0,
        segment_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.temperature_intra = check_temperature(temperature_intra)
        self.weights = {
            "inter": check_weight("inter_weight", inter_weight),
            "intra": check_weight("intra_weight", intra_weight),
            "order": check_weight("order_weight", order_weight),
            "segment": check_weight("segment_weight", segment_weight),
        }

    def forward(self, **inputs: Any) -> Tensor:  # tensors and tuples of tensors, as vclr_loss_terms takes
        """``sum_t w_t * term_t`` of :func:`vclr_loss_terms` (same keyword inputs)."""
        terms = vclr_loss_terms(**inputs, temperature=self.temperature, temperature_intra=self.temperature_intra)
        return torch.stack([self.weights[k] * v for k, v in terms.items()]).sum()

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, temperature_intra={self.temperature_intra}, weights={self.weights}"
