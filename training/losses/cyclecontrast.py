"""CycleContrast: cross-video cycle consistency on top of MoCo with a video-level positive.

Wu and Wang, "Contrastive Learning of Image Representations with Cross-Video
Cycle-Consistency", ICCV 2021. Official code: ``happywu/CycleContrast`` @ ``b0ae8a7b``,
``cycle_contrast/builder.py::CycleContrast`` (``forward``, ``cycle_back_queue_without_self``,
``get_logits_cycle_back_cls_video_as_pos``) and ``train_cycle.py`` (loss weights).

The cycle: the query's cycle embedding ``u`` goes forward to its soft nearest neighbour among
*other videos* (a support set of cycle-queue keys), ``w = softmax(u . s_j / T_nn)``,
``v = normalize(sum_j w_j s_j)``, and must come back to its own video: ``v`` has to pick a key
of another clip of the query's video (positive) against the queue keys that are not in the
support set (negatives), cross-entropy with label 0 at temperature ``T``. Gradient reaches
``u`` only through the weights ``w``: queue and candidates are detached (as official).

Randomness (the support/negative split and which own-video candidate is the positive) is an
argument; when omitted it is drawn from the ``generator`` argument, split first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.checks import check_shape, check_temperature, check_weight
from training.losses.moco import moco_loss


def check_support_size(support_size: int, queue_size: int | None = None) -> int:
    """``support_size`` as an int; ``ValueError`` unless ``1 <= support_size < queue_size``."""
    s = int(support_size)
    if s != support_size or s < 1:
        raise ValueError(f"support_size must be an integer >= 1, got {support_size!r}")
    if queue_size is not None and s >= int(queue_size):
        raise ValueError(
            f"support_size must be < the cycle queue size {queue_size} (the rest are the cycle-back negatives), got {s}"
        )
    return s


def split_queue(
    size: int, support_size: int, perm: Tensor | None = None, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """``(support, negatives)`` indices of a ``size`` queue: ``perm[:S]`` and ``perm[S:]``.

    ``perm`` (a permutation of ``range(size)``) is drawn with ``torch.randperm`` from
    ``generator`` when not given (official: one ``randperm(cycle_K)`` per step, shared by the batch).
    """
    check_support_size(support_size, size)
    if perm is None:
        perm = torch.randperm(size, generator=generator)
    perm = perm.to(torch.long)
    if perm.shape != (size,) or not torch.equal(torch.sort(perm.cpu()).values, torch.arange(size)):
        raise ValueError(f"perm must be a permutation of range({size})")
    return perm[:support_size], perm[support_size:]


def pick_candidates(
    candidates: Tensor, index: Tensor | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """``B x C x D`` own-video candidate keys -> ``B x D``: candidate ``index[b]`` of row ``b``.

    ``index`` (``B`` ints in ``[0, C)``) is drawn uniformly from ``generator`` when not given
    (official ``torch.randint(high=C, size=(B,))``).
    """
    check_shape("candidates", candidates, 3, "B x C x D")
    b, c, _ = candidates.shape
    if index is None:
        index = torch.randint(c, (b,), generator=generator)
    index = index.to(device=candidates.device, dtype=torch.long)
    if index.shape != (b,) or bool(((index < 0) | (index >= c)).any()):
        raise ValueError(f"candidate index must be {b} ints in [0, {c}), got {index.tolist()}")
    return candidates[torch.arange(b, device=candidates.device), index]


def soft_nearest_neighbour(
    u: Tensor, support: Tensor, temperature: float, allowed: Tensor | None = None
) -> Tensor:
    """``normalize(softmax(u @ support^T / T) @ support)``: the soft nearest neighbours of ``u``.

    Args:
        u: ``B x D`` cycle embeddings (gradient flows through the softmax weights).
        support: ``S x D`` candidate neighbours (detached here).
        temperature: ``T_nn > 0`` (official ``soft_nn_T``, = the MoCo T 0.07 when unset).
        allowed: optional ``B x S`` bool; ``False`` entries are left out of row ``b``'s softmax
            (the query's own video). Every row needs at least one allowed entry.

    Returns:
        ``B x D`` L2-normalised neighbours.
    """
    check_temperature(temperature)
    support = support.detach()
    logits = u @ support.t() / temperature
    if allowed is not None:
        if allowed.shape != logits.shape:
            raise ValueError(f"allowed must be {tuple(logits.shape)}, got {tuple(allowed.shape)}")
        if not bool(allowed.any(dim=1).all()):
            raise ValueError(
                "a query has no support entry left after excluding its own video; raise support_size"
            )
        logits = logits.masked_fill(~allowed, float("-inf"))
    return F.normalize(torch.softmax(logits, dim=1) @ support, dim=1)


def _check_cycle_inputs(u: Tensor, cycle_queue: Tensor, candidates: Tensor, same_video: Tensor | None) -> None:
    """The shape checks of :func:`cycle_back_loss` (``ValueError``)."""
    check_shape("u", u, 2, "B x D")
    check_shape("cycle_queue", cycle_queue, 2, "K x D")
    check_shape("candidates", candidates, 3, "B x C x D")
    if (
        cycle_queue.shape[1] != u.shape[1]
        or candidates.shape[0] != u.shape[0]
        or candidates.shape[2] != u.shape[1]
    ):
        raise ValueError(
            f"shape mismatch: u {tuple(u.shape)}, cycle_queue {tuple(cycle_queue.shape)}, candidates {tuple(candidates.shape)}"
        )
    k = cycle_queue.shape[0]
    if same_video is not None and same_video.shape != (u.shape[0], k):
        raise ValueError(f"same_video must be {(u.shape[0], k)}, got {tuple(same_video.shape)}")


def cycle_back_loss(
    u: Tensor,
    cycle_queue: Tensor,
    candidates: Tensor,
    *,
    support_size: int,
    temperature: float = 0.07,
    nn_temperature: float | None = None,
    perm: Tensor | None = None,
    candidate_index: Tensor | None = None,
    same_video: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """CycleContrast's cycle term (``--soft-nn --cycle-back-cls --cycle-back-cls-video-as-pos``).

    With ``support, negatives = perm[:S], perm[S:]``:
    ``v = soft_nearest_neighbour(u, cycle_queue[support])``; logits
    ``[v . c_b, v . cycle_queue[j] for j in negatives] / T``, cross-entropy with label 0
    (``c_b`` the chosen own-video candidate), averaged over the batch.

    ``same_video`` (``B x K`` bool, True where queue key ``j`` comes from query ``b``'s video)
    removes those keys from ``b``'s support softmax and from its negatives, which is what the
    paper's "neighbours from other videos" asks; the official code stores video ids but never
    uses them (with its huge R2V2 set a queue rarely holds the same video twice).

    Args:
        u: ``B x D`` query cycle embeddings (separate head), assumed L2-normalised.
        cycle_queue: ``K x D`` cycle-head keys, assumed L2-normalised (detached).
        candidates: ``B x C x D`` cycle-head keys of other clips of each query's video (detached).
        support_size: ``S``, ``1 <= S < K`` (official 16384 of 81920).
        temperature: ``T`` of the cycle-back cross-entropy (official = MoCo T, 0.07).
        nn_temperature: ``T_nn`` of the soft nearest neighbour; None = ``temperature``.
        perm: permutation of ``range(K)``; drawn from ``generator`` when None.
        candidate_index: ``B`` ints in ``[0, C)``; drawn from ``generator`` when None.
        same_video: optional ``B x K`` bool mask (see above).
        generator: source of the draws not passed in.

    Returns:
        Scalar loss.
    """
    check_temperature(temperature)
    nn_t = temperature if nn_temperature is None else check_temperature(nn_temperature)
    _check_cycle_inputs(u, cycle_queue, candidates, same_video)
    k = cycle_queue.shape[0]
    support, negatives = split_queue(k, support_size, perm, generator)
    positive = pick_candidates(candidates.detach(), candidate_index, generator)
    support, negatives = support.to(u.device), negatives.to(u.device)
    queue = cycle_queue.detach()
    allowed = None if same_video is None else ~same_video[:, support]
    v = soft_nearest_neighbour(u, queue[support], nn_t, allowed)
    l_pos = (v * positive).sum(dim=1, keepdim=True)
    l_neg = v @ queue[negatives].t()
    if same_video is not None:
        l_neg = l_neg.masked_fill(same_video[:, negatives], float("-inf"))
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(u.shape[0], dtype=torch.long, device=u.device))


def cycle_contrast_terms(
    q: Tensor,
    u: Tensor,
    candidates: Tensor,
    cycle_candidates: Tensor,
    queue: Tensor,
    cycle_queue: Tensor,
    *,
    support_size: int,
    temperature: float = 0.07,
    nn_temperature: float | None = None,
    cycle_weight: float = 0.1,
    perm: Tensor | None = None,
    candidate_index: Tensor | None = None,
    same_video: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """The CycleContrast loss terms: ``{"moco", "cycle", "loss" = moco + cycle_weight * cycle}``.

    ``moco`` is MoCo with a video-level positive (official ``--moco-random-video-frame-as-pos``):
    ``moco_loss(q, candidates[b, index_b], queue, T)``, the positive a key of *another* clip of
    the query's video; ``cycle`` is :func:`cycle_back_loss` on the cycle-head embeddings. One
    ``candidate_index`` serves both terms (the official code draws one per term; with its one
    candidate per video, the paper setting, both are 0). Draw order when not passed: ``perm``,
    then ``candidate_index``.

    Args:
        q: ``B x D`` MoCo-head queries; ``u``: ``B x D`` cycle-head queries.
        candidates, cycle_candidates: ``B x C x D`` key-encoder embeddings of own-video clips,
            MoCo head and cycle head.
        queue: ``K x D`` MoCo negatives; ``cycle_queue``: ``K' x D`` cycle-head keys.
        cycle_weight: weight of the cycle term (official ``--soft-nn-loss-weight 0.1``).
        Others: see :func:`cycle_back_loss`.
    """
    weight = check_weight("cycle_weight", cycle_weight)
    check_temperature(temperature)
    k = cycle_queue.shape[0]
    if perm is None:
        check_support_size(support_size, k)
        perm = torch.randperm(k, generator=generator)
    if candidate_index is None:
        candidate_index = torch.randint(candidates.shape[1], (candidates.shape[0],), generator=generator)
    positive = pick_candidates(candidates.detach(), candidate_index)
    terms = {"moco": moco_loss(q, positive, queue, temperature)}
    terms["cycle"] = cycle_back_loss(
        u,
        cycle_queue,
        cycle_candidates,
        support_size=support_size,
        temperature=temperature,
        nn_temperature=nn_temperature,
        perm=perm,
        candidate_index=candidate_index,
        same_video=same_video,
    )
    terms["loss"] = terms["moco"] + weight * terms["cycle"]
    return terms


class CycleContrastLoss(nn.Module):
    """CycleContrast: MoCo with a video-level positive + 0.1 x soft-NN cycle-back term -> scalar."""

    def __init__(
        self,
        *,
        support_size: int = 16384,
        temperature: float = 0.07,
        nn_temperature: float | None = None,
        cycle_weight: float = 0.1,
    ) -> None:
        super().__init__()
        self.support_size = check_support_size(support_size)
        self.temperature = check_temperature(temperature)
        self.nn_temperature = None if nn_temperature is None else check_temperature(nn_temperature)
        self.cycle_weight = check_weight("cycle_weight", cycle_weight)

    def forward(
        self,
        q: Tensor,
        u: Tensor,
        candidates: Tensor,
        cycle_candidates: Tensor,
        queue: Tensor,
        cycle_queue: Tensor,
        *,
        perm: Tensor | None = None,
        candidate_index: Tensor | None = None,
        same_video: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """See :func:`cycle_contrast_terms`; returns ``"loss"``."""
        return cycle_contrast_terms(
            q,
            u,
            candidates,
            cycle_candidates,
            queue,
            cycle_queue,
            support_size=self.support_size,
            temperature=self.temperature,
            nn_temperature=self.nn_temperature,
            cycle_weight=self.cycle_weight,
            perm=perm,
            candidate_index=candidate_index,
            same_video=same_video,
            generator=generator,
        )["loss"]

    def extra_repr(self) -> str:
        return (
            f"support_size={self.support_size}, temperature={self.temperature}, "
            f"nn_temperature={self.nn_temperature}, cycle_weight={self.cycle_weight}"
        )
