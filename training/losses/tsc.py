"""KCL and TSC: k-positive and targeted supervised contrastive losses over a labelled MoCo queue.

Li, Cao, Wu, Zhong, Tian, Sun, Xiao, Feris, Katabi, "Targeted Supervised Contrastive Learning
for Long-Tailed Recognition", CVPR 2022 (Sec. 3; KCL from Kang et al., "Exploring Balanced
Feature Spaces for Representation Learning", ICLR 2021). Official code: ``LTH14/targeted-supcon``
@ ``c4f15ebf``, ``moco/builder.py::KCL.forward`` (loss) and ``target_generation.py`` (targets).

KCL: each query ``q_i`` (label ``y_i``) has as positives its augmented key ``k_i`` and ``k``
(6) keys sampled from the queue entries of class ``y_i``; every queue entry is in the softmax
denominator. TSC adds ``C`` class targets ``u_c`` spread uniformly on the hypersphere
(:func:`generate_targets`), appended to the logits; class ``c`` is assigned target
``u_{sigma(c)}`` by the Hungarian algorithm on EMA class centres (:func:`assign_targets`), and
``-lambda log p(u_{sigma(y_i)})`` pulls the query to it. With ``p_ij = exp(q_i.v_j / T) /
sum_{v in {k_i} u queue u targets} exp(q_i.v / T)`` and ``P_i`` the ``1 + |sampled|`` class
positives::

    paper (Sec. 3): L_i = -1/|P_i| sum_{j in P_i} log p_ij  -  lambda log p_i,target
    official:       L_i = -1/(|P_i|+1) [ sum_{j in P_i} log p_ij  +  lambda log p_i,target ]

The official code divides both terms by the number of all positives, target included
(``mask_pos_view.sum(1)`` with ``--sep_t``); ``normalization="official"`` reproduces it. Without
targets (KCL) both are the same. The softmax denominator is the same in both: the key, all
``K`` queue entries (same-class ones not sampled stay negatives) and all ``C`` targets.
Only the README's ``--sep_t`` configuration is implemented (targets never sampled among the
``k`` positives), with one target per class (``--tr 1``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.checks import check_choice, check_shape, check_temperature

NORMALIZATIONS = ("paper", "official")


def target_uniformity_loss(targets: Tensor, temperature: float = 0.07) -> Tensor:
    """Uniformity of points on the hypersphere: ``mean_i log sum_j exp(t_i . t_j / T)``.

    The objective TSC's targets minimise (official ``target_generation.py::uniform_loss``,
    ``t=0.07``); rows are L2-normalised here and the self term ``j = i`` is included.

    Args:
        targets: ``C x D`` points.
        temperature: ``T > 0``.

    Returns:
        Scalar.
    """
    check_temperature(temperature)
    check_shape("targets", targets, 2, "C x D")
    t = F.normalize(targets, dim=1)
    return torch.logsumexp(t @ t.t() / temperature, dim=1).mean()


def generate_targets(
    num_classes: int,
    dim: int,
    *,
    steps: int = 10000,
    lr: float = 1e-3,
    temperature: float = 0.07,
    generator: torch.Generator | None = None,
) -> Tensor:
    """TSC's class targets: ``C`` unit vectors minimising :func:`target_uniformity_loss`.

    As ``target_generation.py``: start from ``randn(C, D)``, run Adam (lr 1e-3, 10000 steps) on
    the loss of the normalised rows and keep the best iterate. (The official ImageNet run loads
    an "analytical" file the script does not produce; for ``C <= D + 1`` the optimum is a
    regular simplex, which this converges towards.)

    Args:
        num_classes: ``C >= 1``.
        dim: ``D >= 1``.
        steps: Adam iterations (0 returns the normalised random start).
        lr: Adam learning rate.
        temperature: of the uniformity loss.
        generator: for the random start (reproducible targets).

    Returns:
        ``C x D`` float32, unit rows, no gradient (optimised in float64).
    """
    if num_classes < 1 or dim < 1:
        raise ValueError(f"num_classes and dim must be >= 1, got {num_classes!r}, {dim!r}")
    if steps < 0 or not lr > 0:
        raise ValueError(f"steps must be >= 0 and lr > 0, got {steps!r}, {lr!r}")
    check_temperature(temperature)
    # float64: with the self term exp(1/T) ~ 1.6e6 in every row, the other points' share of the
    # loss is below float32 resolution for small C, and float32 Adam would not move them
    x = torch.randn(num_classes, dim, generator=generator, dtype=torch.float64).requires_grad_(True)
    best, best_loss = F.normalize(x.detach(), dim=1), float("inf")
    optimizer = torch.optim.Adam([x], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            loss = target_uniformity_loss(x, temperature)
            if loss.item() < best_loss:
                best_loss, best = loss.item(), F.normalize(x.detach(), dim=1).clone()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return best.float()


def sample_class_positives(
    labels: Tensor, queue_labels: Tensor, num_positive: int, generator: torch.Generator | None = None
) -> Tensor:
    """Draw up to ``num_positive`` same-class queue entries per query, without replacement.

    Uniform over the queue entries whose label equals the query's (the official code draws
    ``k`` times one uniform entry among those not drawn yet: the same distribution). A class
    with fewer entries gets all of them.

    Args:
        labels: ``B`` query labels.
        queue_labels: ``K`` labels of the queue entries (``-1``: empty slot, never drawn).
        num_positive: ``k >= 0``.
        generator: source of the draw.

    Returns:
        ``B x k`` long queue indices, ``-1`` padding where the class has fewer than ``k``.
    """
    if num_positive < 0:
        raise ValueError(f"num_positive must be >= 0, got {num_positive!r}")
    labels, queue_labels = labels.reshape(-1, 1), queue_labels.reshape(1, -1)
    same = (labels == queue_labels) & (queue_labels >= 0)
    k = min(int(num_positive), same.shape[1])
    # random keys, then top-k among the allowed entries = uniform sampling without replacement
    keys = torch.rand(same.shape, generator=generator).to(same.device)
    keys = keys.masked_fill(~same, -1.0)
    score, index = keys.topk(k, dim=1) if k else (keys[:, :0], keys[:, :0].long())
    index = index.masked_fill(score < 0, -1)
    pad = torch.full((same.shape[0], int(num_positive) - k), -1, dtype=torch.long, device=same.device)
    return torch.cat([index, pad], dim=1)


@torch.no_grad()
def update_class_centres(centres: Tensor, q: Tensor, labels: Tensor, momentum: float = 0.9) -> Tensor:
    """EMA of the class centres of the queries, on the sphere (official ``class_centroid``).

    For every class ``c`` in the batch: ``centre_c <- normalize(m centre_c + (1 - m)
    normalize(mean of q_i with y_i = c))``; other classes keep their centre.

    Args:
        centres: ``C x D`` current centres (unit rows).
        q: ``B x D`` queries (detached here).
        labels: ``B`` class ids.
        momentum: ``m`` in ``[0, 1]`` (official 0.9).

    Returns:
        The new ``C x D`` centres (a new tensor).
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
    out = centres.clone()
    q = q.detach().to(out.dtype)
    for c in torch.unique(labels).tolist():
        batch_mean = F.normalize(q[labels == c].mean(dim=0), dim=0)
        out[c] = F.normalize(momentum * out[c] + (1.0 - momentum) * batch_mean, dim=0)
    return out


def assign_targets(centres: Tensor, targets: Tensor) -> Tensor:
    """Class -> target assignment maximising the summed cosine (Hungarian algorithm).

    The official code runs ``scipy.optimize.linear_sum_assignment(-centres @ targets.T)`` at
    every step; so does this (on the CPU; ``C x C``).

    Args:
        centres: ``C x D`` class centres.
        targets: ``C x D`` targets.

    Returns:
        ``C`` long: ``sigma[c]`` is the target row of class ``c``.
    """
    check_shape("centres", centres, 2, "C x D")
    if targets.shape != centres.shape:
        raise ValueError(f"targets {tuple(targets.shape)} and centres {tuple(centres.shape)} must match")
    from vcl_infer._optional import require

    require("scipy")
    from scipy.optimize import linear_sum_assignment

    score = (centres.detach().double() @ targets.detach().double().t()).cpu().numpy()
    rows, cols = linear_sum_assignment(-score)
    sigma = torch.empty(centres.shape[0], dtype=torch.long)
    sigma[torch.from_numpy(rows)] = torch.from_numpy(cols)
    return sigma.to(centres.device)


def _check_tsc_inputs(
    q: Tensor, k: Tensor, queue: Tensor, positive_index: Tensor, temperature: float, target_weight: float,
    normalization: str,
) -> None:
    """The shape and hyperparameter checks of :func:`tsc_loss_terms` (``ValueError``)."""
    check_temperature(temperature)
    check_choice("normalization", normalization, NORMALIZATIONS)
    check_shape("q", q, 2, "B x D")
    check_shape("queue", queue, 2, "K x D")
    check_shape("positive_index", positive_index, 2, "B x k")
    if k.shape != q.shape or queue.shape[1] != q.shape[1] or positive_index.shape[0] != q.shape[0]:
        raise ValueError(f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, queue {tuple(queue.shape)}, "
                         f"positive_index {tuple(positive_index.shape)}")
    if not target_weight >= 0:
        raise ValueError(f"target_weight must be >= 0, got {target_weight!r}")
    if positive_index.numel() and int(positive_index.max()) >= queue.shape[0]:
        raise ValueError(f"positive_index must be < K = {queue.shape[0]}")


def tsc_loss_terms(
    q: Tensor,
    k: Tensor,
    queue: Tensor,
    positive_index: Tensor,
    *,
    targets: Tensor | None = None,
    target_index: Tensor | None = None,
    temperature: float = 0.07,
    target_weight: float = 0.2,
    normalization: str = "paper",
) -> dict[str, Tensor]:
    """The KCL / TSC loss and its two terms (module docstring), averaged over the batch.

    Args:
        q: ``B x D`` queries, assumed L2-normalised.
        k: ``B x D`` augmented keys (momentum encoder), assumed L2-normalised; detached here.
        queue: ``K x D`` queued keys; detached here.
        positive_index: ``B x k`` queue rows that are positives of each query, ``-1`` = none
            (from :func:`sample_class_positives`).
        targets: ``C x D`` class targets (TSC) or None (KCL: no targets in the logits).
        target_index: ``B`` long, the row of ``targets`` assigned to each query's class
            (``sigma[labels]``); required with ``targets``.
        temperature: ``T > 0`` (official 0.07).
        target_weight: ``lambda >= 0`` (official ``--tw 0.2``).
        normalization: ``"paper"`` or ``"official"`` (module docstring).

    Returns:
        ``{"loss", "loss_class", "loss_target"}`` scalars (``loss_target`` is 0 for KCL).
    """
    _check_tsc_inputs(q, k, queue, positive_index, temperature, target_weight, normalization)
    b, n_queue = q.shape[0], queue.shape[0]
    parts = [(q * k.detach()).sum(dim=1, keepdim=True), q @ queue.detach().t()]
    if targets is not None:
        if target_index is None or target_index.shape != (b,):
            raise ValueError("TSC needs target_index: the assigned target row of each query (B long)")
        if targets.ndim != 2 or targets.shape[1] != q.shape[1]:
            raise ValueError(f"targets must be C x {q.shape[1]}, got {tuple(targets.shape)}")
        parts.append(q @ targets.detach().t())
    logits = torch.cat(parts, dim=1) / temperature
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)

    valid = positive_index >= 0
    rows = torch.arange(b, device=q.device).unsqueeze(1).expand_as(positive_index)
    queue_lp = log_prob[rows[valid], 1 + positive_index[valid]]
    sum_pos = log_prob[:, 0] + torch.zeros(b, dtype=log_prob.dtype, device=q.device).index_add(0, rows[valid], queue_lp)
    n_pos = 1.0 + valid.sum(dim=1).to(log_prob.dtype)
    if targets is None or target_index is None:  # KCL (TSC's target_index was checked above)
        class_term = -sum_pos / n_pos
        zero = class_term.new_zeros(())
        return {"loss": class_term.mean(), "loss_class": class_term.mean(), "loss_target": zero}
    target_lp = log_prob[torch.arange(b, device=q.device), 1 + n_queue + target_index.to(q.device)]
    if normalization == "paper":
        class_term, target_term = -sum_pos / n_pos, -target_weight * target_lp
    else:
        class_term, target_term = -sum_pos / (n_pos + 1.0), -target_weight * target_lp / (n_pos + 1.0)
    loss_class, loss_target = class_term.mean(), target_term.mean()
    return {"loss": loss_class + loss_target, "loss_class": loss_class, "loss_target": loss_target}


def kcl_loss(
    q: Tensor,
    k: Tensor,
    queue: Tensor,
    labels: Tensor,
    queue_labels: Tensor,
    *,
    num_positive: int = 6,
    positive_index: Tensor | None = None,
    generator: torch.Generator | None = None,
    temperature: float = 0.07,
) -> Tensor:
    """KCL: the key plus ``num_positive`` sampled same-class queue keys are the positives.

    ``positive_index`` (``B x k``, see :func:`sample_class_positives`) fixes the draw; when
    None it is drawn from ``generator``. Other arguments as :func:`tsc_loss_terms`.
    """
    if positive_index is None:
        positive_index = sample_class_positives(labels, queue_labels, num_positive, generator)
    return tsc_loss_terms(q, k, queue, positive_index, temperature=temperature)["loss"]


def tsc_loss(
    q: Tensor,
    k: Tensor,
    queue: Tensor,
    labels: Tensor,
    queue_labels: Tensor,
    targets: Tensor,
    assignment: Tensor,
    *,
    num_positive: int = 6,
    positive_index: Tensor | None = None,
    generator: torch.Generator | None = None,
    temperature: float = 0.07,
    target_weight: float = 0.2,
    normalization: str = "paper",
) -> Tensor:
    """TSC: KCL plus the targets in the logits and the pull to the assigned target.

    Args:
        targets: ``C x D`` (:func:`generate_targets`).
        assignment: ``C`` long, target row per class (:func:`assign_targets`).
        Others: as :func:`kcl_loss` and :func:`tsc_loss_terms`.
    """
    if positive_index is None:
        positive_index = sample_class_positives(labels, queue_labels, num_positive, generator)
    return tsc_loss_terms(q, k, queue, positive_index, targets=targets, target_index=assignment[labels],
                          temperature=temperature, target_weight=target_weight, normalization=normalization)["loss"]


class KCLLoss(nn.Module):
    """K-positive contrastive loss over a labelled queue (Kang et al. 2021; TSC paper Sec. 3) -> scalar."""

    def __init__(self, *, num_positive: int = 6, temperature: float = 0.07) -> None:
        super().__init__()
        if int(num_positive) < 0:
            raise ValueError(f"num_positive must be >= 0, got {num_positive!r}")
        self.num_positive = int(num_positive)
        self.temperature = check_temperature(temperature)

    def forward(self, q: Tensor, k: Tensor, queue: Tensor, labels: Tensor, queue_labels: Tensor, *,
                positive_index: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        return kcl_loss(q, k, queue, labels, queue_labels, num_positive=self.num_positive,
                        positive_index=positive_index, generator=generator, temperature=self.temperature)

    def extra_repr(self) -> str:
        return f"num_positive={self.num_positive}, temperature={self.temperature}"


class TSCLoss(KCLLoss):
    """Targeted supervised contrastive loss (Li et al. 2022, Sec. 3) -> scalar."""

    def __init__(self, *, num_positive: int = 6, temperature: float = 0.07, target_weight: float = 0.2,
                 normalization: str = "paper") -> None:
        super().__init__(num_positive=num_positive, temperature=temperature)
        if not float(target_weight) >= 0:
            raise ValueError(f"target_weight must be >= 0, got {target_weight!r}")
        self.target_weight = float(target_weight)
        self.normalization = check_choice("normalization", normalization, NORMALIZATIONS)

    def forward(self, q: Tensor, k: Tensor, queue: Tensor, labels: Tensor, queue_labels: Tensor,  # type: ignore[override]
                targets: Tensor, assignment: Tensor, *, positive_index: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        return tsc_loss(q, k, queue, labels, queue_labels, targets, assignment, num_positive=self.num_positive,
                        positive_index=positive_index, generator=generator, temperature=self.temperature,
                        target_weight=self.target_weight, normalization=self.normalization)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, target_weight={self.target_weight}, normalization={self.normalization!r}"
