"""Dense contrast over spatio-temporal feature-map locations (DenseCL on video).

Wang et al., "Dense Contrastive Learning for Self-Supervised Visual Pre-Training", CVPR 2021
(eq. 2-3); official code ``WXinlong/DenseCL`` ``openselfsup/models/densecl.py``. Every location
of the query's feature map is a query; its positive is the key-view location whose *backbone*
feature is most similar (the correspondence is extracted from the backbone features, not from
the dense projections, as in the paper, Sec. 3.3); negatives are a queue of pooled dense keys
from other clips. On video a location is a (time, row, column) cell of the last feature map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.checks import check_shape, check_temperature


def dense_correspondence(q_feats: Tensor, k_feats: Tensor) -> Tensor:
    """For each query location, the index of the most similar key location.

    Args:
        q_feats: ``B x L x C`` backbone features of the query view's ``L`` locations.
        k_feats: ``B x M x C`` backbone features of the key view's ``M`` locations.

    Returns:
        ``B x L`` long indices into the key locations (argmax of cosine similarity).
    """
    check_shape("q_feats", q_feats, 3, "B x L x C")
    check_shape("k_feats", k_feats, 3, "B x M x C")
    sim = F.normalize(q_feats.detach(), dim=-1) @ F.normalize(k_feats.detach(), dim=-1).transpose(1, 2)
    return sim.argmax(dim=2)


def dense_contrast_loss(
    q_dense: Tensor, k_dense: Tensor, queue: Tensor, match: Tensor, temperature: float = 0.2
) -> Tensor:
    """Dense InfoNCE averaged over every query location of every clip.

    For clip ``b`` and location ``l``: logits ``[r_bl . t_b,match[b,l], r_bl . n_j for j < K] / T``
    and cross-entropy with label 0, where ``r`` are the query's dense projections, ``t`` the
    key's (detached: momentum encoder) and ``n`` the negatives queue (detached).

    Args:
        q_dense: ``B x L x P`` L2-normalised dense query projections.
        k_dense: ``B x M x P`` L2-normalised dense key projections.
        queue: ``K x P`` negatives (DenseCL enqueues each key clip's pooled dense projection).
        match: ``B x L`` positive key location per query location
            (:func:`dense_correspondence`), passed explicitly so it can be fixed in tests.
        temperature: ``T > 0`` (DenseCL: 0.2, as MoCo v2).

    Returns:
        Scalar loss, the mean over ``B * L`` location queries.
    """
    check_temperature(temperature)
    check_shape("q_dense", q_dense, 3, "B x L x P")
    check_shape("k_dense", k_dense, 3, "B x M x P")
    check_shape("queue", queue, 2, "K x P")
    b, length, p = q_dense.shape
    if k_dense.shape[0] != b or k_dense.shape[2] != p or queue.shape[1] != p:
        raise ValueError(
            f"shape mismatch: q_dense {tuple(q_dense.shape)}, k_dense {tuple(k_dense.shape)}, queue {tuple(queue.shape)}"
        )
    if match.shape != (b, length):
        raise ValueError(f"match must be B x L = {b} x {length}, got {tuple(match.shape)}")
    if bool((match < 0).any()) or bool((match >= k_dense.shape[1]).any()):
        raise ValueError(f"match indices must be in [0, {k_dense.shape[1]})")
    positives = torch.gather(k_dense.detach(), 1, match.long().unsqueeze(-1).expand(-1, -1, p))  # B x L x P
    l_pos = (q_dense * positives).sum(dim=-1, keepdim=True)  # B x L x 1
    l_neg = q_dense @ queue.detach().t()  # B x L x K
    logits = torch.cat([l_pos, l_neg], dim=-1).reshape(b * length, -1) / temperature
    labels = torch.zeros(b * length, dtype=torch.long, device=q_dense.device)
    return F.cross_entropy(logits, labels)


class DenseContrastLoss(nn.Module):
    """DenseCL's dense InfoNCE (:func:`dense_contrast_loss`); matches locations when ``match`` is None."""

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)

    def forward(
        self,
        q_dense: Tensor,
        k_dense: Tensor,
        queue: Tensor,
        q_feats: Tensor | None = None,
        k_feats: Tensor | None = None,
        match: Tensor | None = None,
    ) -> Tensor:
        if match is None:
            if q_feats is None or k_feats is None:
                raise ValueError("give match, or q_feats and k_feats to compute it")
            match = dense_correspondence(q_feats, k_feats)
        return dense_contrast_loss(q_dense, k_dense, queue, match, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
