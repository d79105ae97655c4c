"""MoCHi: MoCo with hard negatives synthesised by mixing the hardest queue entries.

Kalantidis et al., "Hard Negative Mixing for Contrastive Learning", NeurIPS 2020 (Sec. 4).
No official code was released; the structure follows the clean single-GPU reimplementation
``davidsvy/hard-negative-mixing`` @ ``2955553f`` (``src/moco.py::MoCo.find_hard_negatives``,
``hard_negatives1``, ``hard_negatives2``), written from the paper's description.

For each query ``q`` (notation MoCHi(N, s, s')):

1. the ``N`` hardest negatives are the queue keys with the highest ``q . n``, sorted;
2. type 1, ``s`` points mixing two of them: ``h = normalize(a n_i + (1 - a) n_j)``,
   ``a ~ U(0, 1)``;
3. type 2, ``s'`` harder points mixing the query in: ``h = normalize(b q + (1 - b) n_j)``,
   ``b ~ U(0, 0.5)``, so the query's share stays below the negative's, with ``q`` detached;
4. ``q . h / T`` for every synthetic ``h`` is appended to the MoCo logits as extra negatives;
   synthetic points are per-query, used once and never enqueued.

Synthetic points get no gradient (they are built under ``no_grad``, as in ``davidsvy``; that
the paper does the same is [unverified]); the query gets gradients through ``q . h`` only.

Pair indices ``i, j`` index the sorted hardest list and are drawn uniformly with replacement
(``i = j`` possible), as in ``davidsvy``; the paper only says "randomly chosen" [unverified].
All randomness is in :class:`MochiDraws`, which a caller may build itself (tests feed the same
draws to a reference) or draw with :func:`draw_mochi` from a ``torch.Generator``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.checks import check_shape, check_temperature


class MochiDraws(NamedTuple):
    """The random choices of one MoCHi step for ``B`` queries.

    Attributes:
        pair_idx: ``B x s x 2`` long, positions in each query's sorted hardest list (``< N``).
        pair_coef: ``B x s`` mixing coefficients ``a`` of the first point of each pair.
        query_idx: ``B x s'`` long, positions in the sorted hardest list.
        query_coef: ``B x s'`` query coefficients ``b``.
    """

    pair_idx: Tensor
    pair_coef: Tensor
    query_idx: Tensor
    query_coef: Tensor


def check_mochi_hparams(num_hard: int, num_mix: int, num_query_mix: int, query_mix_max: float) -> None:
    """Raise ``ValueError`` unless ``N >= 1``, ``s, s' >= 0`` and ``0 <= query_mix_max <= 1``."""
    if int(num_hard) < 1:
        raise ValueError(f"num_hard (N) must be >= 1, got {num_hard!r}")
    if int(num_mix) < 0 or int(num_query_mix) < 0:
        raise ValueError(f"num_mix (s) and num_query_mix (s') must be >= 0, got {num_mix!r}, {num_query_mix!r}")
    if not 0.0 <= float(query_mix_max) <= 1.0:
        raise ValueError(f"query_mix_max must be in [0, 1], got {query_mix_max!r}")


def draw_mochi(
    batch: int,
    num_hard: int,
    num_mix: int,
    num_query_mix: int,
    *,
    query_mix_max: float = 0.5,
    generator: torch.Generator | None = None,
) -> MochiDraws:
    """Draw MoCHi's pair indices and coefficients on the CPU (move them with ``.to``).

    Order of draws: pair indices, pair coefficients ``U(0, 1)``, query indices, query
    coefficients ``U(0, query_mix_max)``. ``num_hard`` is the effective ``N`` (already clamped
    to the queue size).
    """
    check_mochi_hparams(num_hard, num_mix, num_query_mix, query_mix_max)
    n, s, s2 = int(num_hard), int(num_mix), int(num_query_mix)
    pair_idx = torch.randint(0, n, (batch, s, 2), generator=generator)
    pair_coef = torch.rand(batch, s, generator=generator)
    query_idx = torch.randint(0, n, (batch, s2), generator=generator)
    query_coef = torch.rand(batch, s2, generator=generator) * float(query_mix_max)
    return MochiDraws(pair_idx, pair_coef, query_idx, query_coef)


def hardest_negatives(q: Tensor, queue: Tensor, num_hard: int) -> Tensor:
    """Indices of the ``min(num_hard, K)`` queue keys most similar to each query, hardest first.

    Args:
        q: ``B x D`` queries; queue: ``K x D`` keys.

    Returns:
        ``B x N`` long indices into ``queue``, sorted by decreasing ``q . n``.
    """
    n = min(int(num_hard), queue.shape[0])
    with torch.no_grad():
        return torch.topk(q.detach() @ queue.detach().t(), k=n, dim=1, sorted=True).indices


def mochi_synthetic_negatives(q: Tensor, queue: Tensor, hard_idx: Tensor, draws: MochiDraws) -> tuple[Tensor, Tensor]:
    """MoCHi's synthetic negatives (detached, L2-normalised).

    Args:
        q: ``B x D`` queries (detached here).
        queue: ``K x D`` negative keys.
        hard_idx: ``B x N`` indices into ``queue`` from :func:`hardest_negatives`.
        draws: the pair/query indices (into ``hard_idx``'s columns) and coefficients.

    Returns:
        ``(mixed, query_mixed)``: ``B x s x D`` type-1 points ``normalize(a n_i + (1 - a) n_j)``
        and ``B x s' x D`` type-2 points ``normalize(b q + (1 - b) n_j)``.
    """
    with torch.no_grad():
        q, queue = q.detach().to(queue.dtype), queue.detach()
        dev = q.device

        def pick(positions: Tensor) -> Tensor:  # positions in the hardest list -> keys
            return queue[hard_idx.gather(1, positions.to(dev).flatten(1)).view(positions.shape)]

        pair_idx = draws.pair_idx
        a = draws.pair_coef.to(device=dev, dtype=q.dtype)[..., None]
        mixed = F.normalize(a * pick(pair_idx[..., 0]) + (1.0 - a) * pick(pair_idx[..., 1]), dim=-1)
        b = draws.query_coef.to(device=dev, dtype=q.dtype)[..., None]
        query_mixed = F.normalize(b * q[:, None] + (1.0 - b) * pick(draws.query_idx), dim=-1)
    return mixed, query_mixed


def _check_draws(draws: MochiDraws, batch: int, n: int) -> None:
    s, s2 = draws.pair_coef.shape[-1], draws.query_coef.shape[-1]
    shapes = {
        "pair_idx": (draws.pair_idx, (batch, s, 2)),
        "pair_coef": (draws.pair_coef, (batch, s)),
        "query_idx": (draws.query_idx, (batch, s2)),
        "query_coef": (draws.query_coef, (batch, s2)),
    }
    for name, (x, shape) in shapes.items():
        if tuple(x.shape) != shape:
            raise ValueError(f"draws.{name} must have shape {shape}, got {tuple(x.shape)}")
    for name, idx in (("pair_idx", draws.pair_idx), ("query_idx", draws.query_idx)):
        if idx.numel() and not (0 <= int(idx.min()) and int(idx.max()) < n):
            raise ValueError(f"draws.{name} must lie in [0, N={n}) (N clamped to the queue size)")


def mochi_loss(
    q: Tensor,
    k: Tensor,
    queue: Tensor,
    temperature: float = 0.2,
    *,
    num_hard: int = 1024,
    num_mix: int = 1024,
    num_query_mix: int = 128,
    query_mix_max: float = 0.5,
    draws: MochiDraws | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """MoCo InfoNCE with MoCHi's synthetic hard negatives appended to the logits.

    Logits per query: ``[q . k, q . queue_1..K, q . h_1..s, q . h'_1..s'] / T``, cross-entropy
    with label 0. Keys, queue and synthetic points get no gradient (the query does, through
    every dot product). ``s = s' = 0`` gives plain ``moco_loss``.

    Args:
        q: ``B x D`` queries, assumed L2-normalised.
        k: ``B x D`` positive keys, assumed L2-normalised.
        queue: ``K x D`` negative keys, assumed L2-normalised.
        temperature: ``T > 0`` (MoCo v2 base: 0.2).
        num_hard: ``N``, clamped to ``K`` (paper 1024).
        num_mix: ``s`` type-1 points per query (paper 1024 on ImageNet-1k).
        num_query_mix: ``s'`` type-2 points per query (paper 128).
        query_mix_max: upper bound of ``b`` (paper 0.5).
        draws: explicit random choices (indices in ``[0, min(N, K))``); if ``None`` they are
            drawn by :func:`draw_mochi` from ``generator``. Their shapes set ``s`` and ``s'``.
        generator: CPU ``torch.Generator`` for the draws.

    Returns:
        Scalar loss.
    """
    check_temperature(temperature)
    check_mochi_hparams(num_hard, num_mix, num_query_mix, query_mix_max)
    check_shape("q", q, 2, "B x D")
    check_shape("queue", queue, 2, "K x D")
    if k.shape != q.shape or queue.shape[1] != q.shape[1]:
        raise ValueError(f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, queue {tuple(queue.shape)}")
    b = q.shape[0]
    n = min(int(num_hard), queue.shape[0])
    if draws is None:
        draws = draw_mochi(b, n, num_mix, num_query_mix, query_mix_max=query_mix_max, generator=generator)
    _check_draws(draws, b, n)
    queue, k = queue.detach(), k.detach()
    hard_idx = hardest_negatives(q, queue, n)
    mixed, query_mixed = mochi_synthetic_negatives(q, queue, hard_idx, draws)
    logits = torch.cat(
        [
            (q * k).sum(dim=1, keepdim=True),
            q @ queue.t(),
            torch.einsum("bd,bsd->bs", q, mixed.to(q.dtype)),
            torch.einsum("bd,bsd->bs", q, query_mixed.to(q.dtype)),
        ],
        dim=1,
    ) / temperature
    labels = torch.zeros(b, dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels)


class MoCHiLoss(nn.Module):
    """MoCo queue loss with MoCHi(N, s, s') synthetic hard negatives -> scalar."""

    def __init__(
        self,
        *,
        temperature: float = 0.2,
        num_hard: int = 1024,
        num_mix: int = 1024,
        num_query_mix: int = 128,
        query_mix_max: float = 0.5,
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        check_mochi_hparams(num_hard, num_mix, num_query_mix, query_mix_max)
        self.num_hard, self.num_mix, self.num_query_mix = int(num_hard), int(num_mix), int(num_query_mix)
        self.query_mix_max = float(query_mix_max)

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        queue: Tensor,
        draws: MochiDraws | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """See :func:`mochi_loss`."""
        return mochi_loss(
            q,
            k,
            queue,
            self.temperature,
            num_hard=self.num_hard,
            num_mix=self.num_mix,
            num_query_mix=self.num_query_mix,
            query_mix_max=self.query_mix_max,
            draws=draws,
            generator=generator,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, num_hard={self.num_hard}, num_mix={self.num_mix}, "
            f"num_query_mix={self.num_query_mix}, query_mix_max={self.query_mix_max}"
        )
