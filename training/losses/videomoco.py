"""VideoMoCo: the temporally decayed MoCo loss and the adversarial gradient routing.

Pan et al., "VideoMoCo: Contrastive Video Representation Learning with Temporally Adversarial
Examples", CVPR 2021. Official code: ``tinapan-pt/VideoMoCo`` @ ``42e069ae``,
``moco/builder.py`` (``MoCo.forward``, ``MoCo._dequeue_and_enqueue``, ``VideoTopk``) and
``train.py::train`` (the generator and discriminator objectives).

- Temporal decay: a queue key that was enqueued ``a`` steps ago is scaled by ``t^a`` before it
  meets the query, so older keys (computed by an older momentum encoder) count less.
- Frame dropping (the generator's op) is :func:`training.augment.frame_drop.drop_frames`; the
  queue that counts key ages is :class:`training.methods.queue.AgedKeyQueue`.
- Gradient routing: the official code trains the generator G with ``L_contrastive - w * L1``
  and the encoder (discriminator D) with ``L_contrastive`` alone, using two optimisers.
  :func:`route_adversarial_gradient` builds one loss whose single backward gives both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.checks import check_shape, check_temperature


def check_decay(decay: float) -> float:
    """Return ``decay`` as a float; raise ``ValueError`` unless ``0 < decay <= 1``."""
    t = float(decay)
    if not 0.0 < t <= 1.0:
        raise ValueError(f"decay must be in (0, 1], got {decay!r}")
    return t


def decayed_moco_loss(
    q: Tensor, k: Tensor, queue: Tensor, ages: Tensor, decay: float = 0.99999, temperature: float = 0.07
) -> Tensor:
    """MoCo InfoNCE with temporally decayed negatives (VideoMoCo Sec. 3.3).

    Logits are ``[q_i . k_i, t^{a_j} (q_i . n_j) for j < K] / T``, cross-entropy with label 0,
    averaged over the batch: the decay multiplies the negative *logit* (the official code scales
    the queue columns, ``queue * t^count``, before the dot product; the same thing). Keys and
    queue get no gradient.

    Args:
        q: ``B x D`` queries (the frame-dropped clip in VideoMoCo), assumed L2-normalised.
        k: ``B x D`` positive keys, assumed L2-normalised.
        queue: ``K x D`` negative keys (row layout), assumed L2-normalised.
        ages: ``K`` non-negative ages ``a_j`` of the queue keys, in enqueue steps (see
            :class:`~training.methods.queue.AgedKeyQueue`).
        decay: ``t`` in ``(0, 1]``; 0.99999 (official ``--temporal_decay``); 1 is plain MoCo.
        temperature: ``T > 0`` (official 0.07).

    Returns:
        Scalar loss.
    """
    check_temperature(temperature)
    t = check_decay(decay)
    check_shape("q", q, 2, "B x D")
    check_shape("queue", queue, 2, "K x D")
    if k.shape != q.shape or queue.shape[1] != q.shape[1]:
        raise ValueError(
            f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, queue {tuple(queue.shape)}"
        )
    if ages.shape != (queue.shape[0],):
        raise ValueError(f"ages must have shape ({queue.shape[0]},), got {tuple(ages.shape)}")
    weights = torch.pow(t, ages.to(q.dtype))  # K, t^age
    l_pos = (q * k.detach()).sum(dim=1, keepdim=True)
    l_neg = (q @ queue.detach().t()) * weights.detach()
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels)


def route_adversarial_gradient(contrastive: Tensor, adversarial: Tensor, fake: Tensor) -> Tensor:
    """One loss for one optimiser that trains the generator and the encoder differently.

    Returns a scalar whose value is ``contrastive`` and whose gradient is
    ``d contrastive + d adversarial`` for everything upstream of ``fake`` (the generator) and
    ``d contrastive`` for everything else (the encoder), which is what the official two
    optimisers do (``loss_g.backward(); optimizer_d.zero_grad(); loss_d.backward()``).

    How: ``g = d adversarial / d fake`` (one extra backward through the encoder, graph kept);
    the surrogate ``s = sum(fake * g)`` has ``d s / d theta_G = d adversarial / d theta_G`` by the
    chain rule and no path to the encoder's parameters, and ``s - s.detach()`` adds 0 to the
    value.

    Args:
        contrastive: scalar contrastive loss (depends on encoder and generator).
        adversarial: scalar extra generator objective, e.g. ``-w * L1(q_fake, q_real)``; it
            must reach the generator only through ``fake``.
        fake: the generator's output that feeds the encoder (the frame-dropped clip).
    """
    if contrastive.dim() != 0 or adversarial.dim() != 0:
        raise ValueError("contrastive and adversarial must be scalars")
    if not fake.requires_grad:  # no generator in the graph: nothing to route
        return contrastive
    (g,) = torch.autograd.grad(adversarial, fake, retain_graph=True)
    surrogate = (fake * g.detach()).sum()
    return contrastive + (surrogate - surrogate.detach())


class DecayedMoCoLoss(nn.Module):
    """VideoMoCo's MoCo loss with negatives decayed by queue age, ``t^age`` (t=0.99999) -> scalar."""

    def __init__(self, *, decay: float = 0.99999, temperature: float = 0.07) -> None:
        super().__init__()
        self.decay = check_decay(decay)
        self.temperature = check_temperature(temperature)

    def forward(self, q: Tensor, k: Tensor, queue: Tensor, ages: Tensor) -> Tensor:
        """See :func:`decayed_moco_loss`."""
        return decayed_moco_loss(q, k, queue, ages, self.decay, self.temperature)

    def extra_repr(self) -> str:
        return f"decay={self.decay}, temperature={self.temperature}"
