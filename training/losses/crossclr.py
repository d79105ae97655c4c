"""CrossCLR: cross-modal contrast with intra-modality negatives, pruning and sample weights.

Zolfaghari, Zhu, Gehler, Brox, "CrossCLR: Cross-modal Contrastive Learning For Multi-modal
Video Representations", ICCV 2021 (Sec. 3). Official code: the released
``amazon-research/crossmodal-contrastive-learning`` @ ``c9627a66`` ``trainer/loss.py`` holds only
``CrossCLR_onlyIntraModality``; the full loss (pruning, weights, queue) is in the first author's
``mzolfaghari/coot-videotext`` @ ``0d9a6e1a`` ``coot/loss_fn.py::CrossCLR``.

Two modalities, paired row by row: ``x_i`` (video) and ``y_i`` (e.g. text or audio), embedded
and L2-normalised. For the anchor ``x_i`` the positive is ``y_i``; the negatives are the other
``y_k`` of the batch (inter-modality) and the other ``x`` of the batch and the queue
(intra-modality), the latter weighted by ``lambda`` (``negative_weight``, 0.8)::

    l(x_i) = -log  e^{x_i.y_i/T} / ( sum_k e^{x_i.y_k/T} + lambda sum_{n in N_i} e^{x_i.x_n/T} )

``N_i`` is the intra-modality candidate set (batch then queue) without ``x_i`` itself and
without the *influential* samples: those whose connectivity, the mean cosine similarity of
their **input** features (before the embedding networks) to the other candidates, is at least
``score_threshold`` (0.9) times the largest connectivity. They are similar to many samples, so
pushing them away as negatives would push apart shared semantics. The loss of modality ``x``
is ``sum_i a_i l(x_i)`` with sample weights ``a = softmax(w / kappa)``, ``w_i = c_i / sum_j
|c_j|`` (``c_i`` the connectivity of batch sample ``i``, ``kappa = weight_temperature``,
0.0035): well-connected samples count more, outliers less. The same holds with the roles of
``x`` and ``y`` swapped; the loss is the mean of the two. ``T`` = 0.03.

What is the paper's and what is our reading: the intra-modality term, ``lambda`` on it,
pruning influential samples from the negatives and connectivity-based weights are the
paper's. The max-normalised pruning score and the ``w / sum`` weight normalisation are taken
from the official code (the paper's text was not at hand to check them against); cosine
connectivity is our choice (the official uses raw dot products), so that it does not depend
on the scale of the input features.

``variant="official"`` reproduces the code's arithmetic where it departs from the formula:
``lambda`` multiplies the intra **logit** (``e^{lambda x_i.x_n/T}``, not ``lambda e^{...}``);
the anchor's self-similarity is zeroed rather than removed, so it stays in the denominator as
``e^0 = 1`` unless pruned; connectivity uses raw dot products of the input features (no L2
normalisation). Shared by both: the weight normalisation by the batch sum (the official
``w / sum(w)``; ``|c_j|`` keeps it defined for features with negative similarities and equals
the official for non-negative ones) and the max-normalised pruning score. Also different from
the official code, in both variants: the queue (``K``, official hard-codes 3000 whatever the
config says) holds earlier batches only and the current batch is always a candidate with
gradient; the official enqueues the batch first and, once the queue is full, uses only the
(detached) queue as intra candidates.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.checks import check_choice, check_shape, check_temperature

VARIANTS = ("paper", "official")


def input_connectivity(features: Tensor, *, normalize: bool = True) -> Tensor:
    """Mean similarity of every row to the other rows: ``N x P -> N`` (no gradient).

    Args:
        features: ``N x P`` input features of one modality (batch then queue).
        normalize: cosine similarity (L2-normalised rows); False: raw dot products (official).
    """
    check_shape("features", features, 2, "N x P")
    f = features.detach()
    f = F.normalize(f, dim=1) if normalize else f
    sim = f @ f.t()
    n = sim.shape[0]
    return (sim.sum(dim=1) - sim.diagonal()) / max(n - 1, 1)


def influential_mask(connectivity: Tensor, score_threshold: float) -> Tensor:
    """``N`` bool, True for the influential samples: ``c_n / max_m |c_m| >= score_threshold``."""
    scale = connectivity.abs().max().clamp_min(1e-12)
    return connectivity / scale >= score_threshold


def sample_weights(connectivity: Tensor, weight_temperature: float) -> Tensor:
    """``softmax(w / kappa)`` with ``w_i = c_i / sum_j |c_j|`` over the batch: ``B -> B``, sums to 1."""
    w = connectivity / connectivity.abs().sum().clamp_min(1e-12)
    return torch.softmax(w / weight_temperature, dim=0)


def crossclr_direction(
    anchors: Tensor,
    others: Tensor,
    anchor_inputs: Tensor,
    queue: Tensor | None = None,
    queue_inputs: Tensor | None = None,
    *,
    temperature: float = 0.03,
    negative_weight: float = 0.8,
    score_threshold: float = 0.9,
    weight_temperature: float = 0.0035,
    variant: str = "paper",
) -> Tensor:
    """One direction of :func:`crossclr_loss`: the weighted loss of the ``anchors``' modality.

    Args:
        anchors: ``B x D`` embeddings of the anchor modality (L2-normalised here).
        others: ``B x D`` paired embeddings of the other modality (L2-normalised here).
        anchor_inputs: ``B x P`` input features of the anchor modality (connectivity only).
        queue: ``K x D`` earlier anchor-modality embeddings (detached here), or None.
        queue_inputs: ``K x P`` their input features.
        Others: see :class:`CrossCLRLoss`.

    Returns:
        Scalar.
    """
    check_shape("anchors", anchors, 2, "B x D")
    check_shape("anchor_inputs", anchor_inputs, 2, "B x P")
    b = anchors.shape[0]
    if others.shape != anchors.shape or anchor_inputs.shape[0] != b:
        raise ValueError(f"shape mismatch: anchors {tuple(anchors.shape)}, others {tuple(others.shape)}, "
                         f"inputs {tuple(anchor_inputs.shape)}")
    a, o = F.normalize(anchors, dim=1), F.normalize(others, dim=1)
    candidates, inputs = a, anchor_inputs
    if queue is not None and queue.shape[0] > 0:
        if queue_inputs is None or queue_inputs.shape != (queue.shape[0], anchor_inputs.shape[1]) \
                or queue.shape[1] != a.shape[1]:
            raise ValueError(f"queue {tuple(queue.shape)} and queue_inputs "
                             f"{None if queue_inputs is None else tuple(queue_inputs.shape)} do not match the batch")
        candidates = torch.cat([a, F.normalize(queue.detach().to(a.dtype), dim=1)])
        inputs = torch.cat([anchor_inputs, queue_inputs.to(anchor_inputs.dtype)])
    official = variant == "official"
    connectivity = input_connectivity(inputs, normalize=not official).to(a.dtype)
    keep = ~influential_mask(connectivity, score_threshold)  # N candidates
    inter = a @ o.t() / temperature  # B x B, positives on the diagonal
    intra = a @ candidates.t() / temperature  # B x N
    self_mask = torch.zeros_like(intra, dtype=torch.bool)
    self_mask[:, :b] = torch.eye(b, dtype=torch.bool, device=a.device)
    if official:
        intra = negative_weight * intra.masked_fill(self_mask, 0.0)
        intra = intra.masked_fill(~keep.unsqueeze(0), float("-inf"))
    elif negative_weight > 0:
        drop = self_mask | ~keep.unsqueeze(0)
        intra = (intra + math.log(negative_weight)).masked_fill(drop, float("-inf"))
    else:
        intra = intra[:, :0]
    per_anchor = torch.logsumexp(torch.cat([inter, intra], dim=1), dim=1) - inter.diagonal()
    weights = sample_weights(connectivity[:b], weight_temperature)
    return (weights * per_anchor).sum()


def crossclr_loss(
    x: Tensor,
    y: Tensor,
    x_inputs: Tensor,
    y_inputs: Tensor,
    *,
    queue_x: Tensor | None = None,
    queue_y: Tensor | None = None,
    queue_x_inputs: Tensor | None = None,
    queue_y_inputs: Tensor | None = None,
    temperature: float = 0.03,
    negative_weight: float = 0.8,
    score_threshold: float = 0.9,
    weight_temperature: float = 0.0035,
    variant: str = "paper",
) -> Tensor:
    """CrossCLR loss (module docstring): ``(L_x + L_y) / 2``.

    Args:
        x, y: ``B x D`` paired embeddings of the two modalities (row ``i`` of each is a pair).
        x_inputs, y_inputs: ``B x P_x`` / ``B x P_y`` their input features (connectivity).
        queue_x, queue_y: ``K x D`` earlier embeddings of each modality, or None.
        queue_x_inputs, queue_y_inputs: ``K x P_x`` / ``K x P_y`` their input features.
        temperature: ``T > 0`` (0.03).
        negative_weight: ``lambda >= 0`` on the intra-modality negatives (0.8).
        score_threshold: influential when connectivity / max >= this (0.9; > 1 prunes nothing).
        weight_temperature: ``kappa > 0`` of the sample weights (0.0035).
        variant: ``"paper"`` or ``"official"`` (module docstring).

    Returns:
        Scalar.
    """
    check_temperature(temperature)
    check_temperature(weight_temperature)
    check_choice("variant", variant, VARIANTS)
    if not negative_weight >= 0:
        raise ValueError(f"negative_weight must be >= 0, got {negative_weight!r}")
    if not score_threshold > 0:
        raise ValueError(f"score_threshold must be > 0, got {score_threshold!r}")
    direction = functools.partial(
        crossclr_direction, temperature=temperature, negative_weight=negative_weight,
        score_threshold=score_threshold, weight_temperature=weight_temperature, variant=variant,
    )
    loss_x = direction(x, y, x_inputs, queue_x, queue_x_inputs)
    loss_y = direction(y, x, y_inputs, queue_y, queue_y_inputs)
    return 0.5 * (loss_x + loss_y)


class CrossCLRLoss(nn.Module):
    """CrossCLR: cross-modal InfoNCE + weighted intra-modality negatives, pruning, sample weights -> scalar."""

    def __init__(self, *, temperature: float = 0.03, negative_weight: float = 0.8, score_threshold: float = 0.9,
                 weight_temperature: float = 0.0035, variant: str = "paper") -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.weight_temperature = check_temperature(weight_temperature)
        if not float(negative_weight) >= 0:
            raise ValueError(f"negative_weight must be >= 0, got {negative_weight!r}")
        if not float(score_threshold) > 0:
            raise ValueError(f"score_threshold must be > 0, got {score_threshold!r}")
        self.negative_weight, self.score_threshold = float(negative_weight), float(score_threshold)
        self.variant = check_choice("variant", variant, VARIANTS)

    def forward(self, x: Tensor, y: Tensor, x_inputs: Tensor, y_inputs: Tensor, *,
                queue_x: Tensor | None = None, queue_y: Tensor | None = None,
                queue_x_inputs: Tensor | None = None, queue_y_inputs: Tensor | None = None) -> Tensor:
        return crossclr_loss(x, y, x_inputs, y_inputs, queue_x=queue_x, queue_y=queue_y,
                             queue_x_inputs=queue_x_inputs, queue_y_inputs=queue_y_inputs,
                             temperature=self.temperature, negative_weight=self.negative_weight,
                             score_threshold=self.score_threshold, weight_temperature=self.weight_temperature,
                             variant=self.variant)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, negative_weight={self.negative_weight}, "
                f"score_threshold={self.score_threshold}, weight_temperature={self.weight_temperature}, "
                f"variant={self.variant!r}")
