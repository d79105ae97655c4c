"""HCL: the debiased hard-negative contrastive loss.

Robinson et al., "Contrastive Learning with Hard Negative Samples", ICLR 2021 (Sec. 3, eq. 5
and Appendix pseudo-code). Official code: ``joshr17/HCL`` @ ``7b4647fa``,
``image/main.py::criterion``. This module computes exactly what the official code computes:

- The importance weights are ``imp_j = neg_j ** beta = exp(beta s_j / tau)`` and the
  reweighted negative term is ``sum_j imp_j neg_j / mean_j(imp_j)``. The paper's appendix
  pseudo-code normalises differently (``neg.mean``) and puts ``beta`` outside the exponent;
  the author confirmed both are typos and that the code matches the derivation of Sec. 3
  (``joshr17/HCL`` issues #1 and #5). So code and paper formula agree here.
- ``Ng`` is clamped from below at ``N e^{-1/tau}`` (its theoretical minimum, ``N`` negatives
  at cosine -1), which keeps the debiased estimate positive.
- The weights are not detached: gradients flow through ``imp`` as well as ``neg``.

The official code exponentiates raw logits; here each row is shifted by its largest logit and
the weights are a softmax, which is the same value in exact arithmetic but cannot overflow in
float32 for small ``tau`` or large ``beta``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.checks import check_choice, check_shape, check_temperature

ESTIMATORS = ("hard", "easy")


def check_hcl_hparams(beta: float, tau_plus: float, estimator: str) -> tuple[float, float, str]:
    """Validate HCL's hyperparameters; return them as ``(float, float, str)``."""
    beta, tau_plus = float(beta), float(tau_plus)
    if not (beta >= 0.0 and math.isfinite(beta)):
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    if not 0.0 <= tau_plus < 1.0:
        raise ValueError(f"tau_plus must be in [0, 1), got {tau_plus!r}")
    return beta, tau_plus, check_choice("estimator", estimator, ESTIMATORS)


def hcl_loss(
    z1: Tensor,
    z2: Tensor,
    temperature: float = 0.5,
    tau_plus: float = 0.1,
    beta: float = 1.0,
    estimator: str = "hard",
) -> Tensor:
    """HCL loss over the ``2B`` embeddings of two views (SimCLR layout).

    With ``z = [z1; z2]`` L2-normalised, row ``i`` has the positive ``pos_i = exp(s_i+ / tau)``
    (the other view of sample ``i``) and the ``N = 2B - 2`` negatives
    ``neg_ij = exp(z_i . z_j / tau)`` (every row but itself and its positive). For
    ``estimator="hard"``::

        imp_ij  = neg_ij ** beta
        Ng_i    = (N sum_j(imp_ij neg_ij) / sum_j(imp_ij) - tau_plus N pos_i) / (1 - tau_plus)
        Ng_i    = max(Ng_i, N exp(-1 / tau))
        loss    = mean_i -log(pos_i / (pos_i + Ng_i))

    ``estimator="easy"`` uses ``Ng_i = sum_j neg_ij`` (plain NT-Xent; ``tau_plus`` and ``beta``
    are ignored). ``beta = 0, tau_plus = 0`` with ``"hard"`` is NT-Xent too, up to the clamp.

    Args:
        z1: ``B x D`` embeddings of view 1 (L2-normalised here), ``B >= 2``.
        z2: ``B x D`` embeddings of view 2; row ``i`` pairs with ``z1[i]``.
        temperature: ``tau > 0`` (HCL 0.5).
        tau_plus: class prior ``tau+`` in ``[0, 1)`` (HCL 0.1), the debiasing strength.
        beta: concentration ``>= 0`` of the hardness weights (HCL 1.0).
        estimator: ``"hard"`` (HCL) or ``"easy"`` (NT-Xent).

    Returns:
        Scalar loss (float32 or wider, whatever the input dtype).
    """
    t = check_temperature(temperature)
    beta, tau_plus, estimator = check_hcl_hparams(beta, tau_plus, estimator)
    check_shape("z1", z1, 2, "B x D")
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    b = z1.shape[0]
    if b < 2:
        raise ValueError(f"hcl_loss needs a batch of at least 2 samples (negatives), got {b}")
    dtype = torch.promote_types(z1.dtype, torch.float32)  # exp() must not run in float16
    # autocast would run the matmul in float16 again; the B x B similarities are cheap in float32
    with torch.autocast(z1.device.type, enabled=False):
        return _hcl_rows(torch.cat([z1, z2]).to(dtype), b, t, tau_plus, beta, estimator).mean()


def _hcl_rows(z: Tensor, b: int, t: float, tau_plus: float, beta: float, estimator: str) -> Tensor:
    """Per-row HCL losses (``2B``) of the stacked views ``z = [z1; z2]`` (``2B x D``)."""
    z = F.normalize(z, dim=1)
    idx = torch.arange(2 * b, device=z.device)
    pos_idx = (idx + b) % (2 * b)
    eye = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    raw = z @ z.t() / t  # 2B x 2B
    # Shift each row by its largest logit (self excluded) so that exp() stays in range; every
    # term of the loss, the floor included, scales by the same factor, so the value is unchanged.
    shift = raw.masked_fill(eye, float("-inf")).amax(dim=1).detach()  # 2B
    logits = raw - shift[:, None]
    log_pos = logits[idx, pos_idx]  # 2B
    neg_mask = ~eye
    neg_mask[idx, pos_idx] = False
    neg_logits = logits[neg_mask].view(2 * b, 2 * b - 2)
    neg, pos = neg_logits.exp(), log_pos.exp()
    if estimator == "easy":
        ng = neg.sum(dim=1)
    else:
        n = 2 * b - 2
        weights = torch.softmax(beta * neg_logits, dim=1)  # imp / sum(imp)
        reweighted = n * (weights * neg).sum(dim=1)  # = sum(imp neg) / mean(imp)
        ng = (reweighted - tau_plus * n * pos) / (1.0 - tau_plus)
        floor = n * torch.exp(-1.0 / t - shift)  # the official N e^{-1/tau}, shifted
        ng = torch.maximum(ng, floor)
    return torch.log(pos + ng) - log_pos


class HCLLoss(nn.Module):
    """HCL debiased hard-negative loss over two views, ``B x D`` each -> scalar."""

    def __init__(
        self, *, temperature: float = 0.5, tau_plus: float = 0.1, beta: float = 1.0, estimator: str = "hard"
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.beta, self.tau_plus, self.estimator = check_hcl_hparams(beta, tau_plus, estimator)

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        """See :func:`hcl_loss`."""
        return hcl_loss(z1, z2, self.temperature, self.tau_plus, self.beta, self.estimator)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, tau_plus={self.tau_plus}, beta={self.beta}, "
            f"estimator={self.estimator!r}"
        )
