"""VCLR's temporal-order task: which segment orders count as shuffled, and one batch's draw.

Kuang et al., "Video Contrastive Learning with Global Context", ICCV Workshops 2021; official
``amazon-research/video-contrastive-learning`` @ ``4fb66c3d``
``dataset/dataset_kinetics.py::shuffle_list``. The loss on the resulting order logits is
:func:`training.losses.vclr.vclr_loss_terms`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor


def order_permutations(num_segments: int = 3) -> Tensor:
    """The orders counted as "shuffled": every permutation but the identity and its reversal.

    Official ``shuffle_list`` redraws until the order is neither (4 of the 6 for ``S = 3``).
    Returns ``M x S`` long, in lexicographic order.
    """
    if num_segments < 3:
        raise ValueError(f"num_segments must be >= 3 (2 segments have no shuffled order), got {num_segments}")
    ident = tuple(range(num_segments))
    perms = [p for p in itertools.permutations(ident) if p not in (ident, ident[::-1])]
    return torch.tensor(perms, dtype=torch.long)


@dataclass(frozen=True)
class OrderShuffle:
    """Segment orders of one batch for the order task (explicit so a test can replay them).

    Attributes:
        perm_q: ``B x S`` segment order of each query tuple (identity when not shuffled).
        perm_k: ``B x S`` segment order of each key tuple.
        labels: ``B`` classes, ``shuffled_q + 2 * shuffled_k`` (official ``order_label``).
    """

    perm_q: Tensor
    perm_k: Tensor
    labels: Tensor

    @classmethod
    def from_flags(
        cls, shuffled_q: Tensor, shuffled_k: Tensor, choice_q: Tensor, choice_k: Tensor, num_segments: int = 3
    ) -> "OrderShuffle":
        """Build from ``B`` bool flags and ``B`` indices into :func:`order_permutations`."""
        perms = order_permutations(num_segments)
        ident = torch.arange(num_segments).expand(shuffled_q.shape[0], -1)
        perm_q = torch.where(shuffled_q[:, None], perms[choice_q], ident)
        perm_k = torch.where(shuffled_k[:, None], perms[choice_k], ident)
        labels = shuffled_q.long() + 2 * shuffled_k.long()
        return cls(perm_q, perm_k, labels)

    @classmethod
    def draw(cls, batch: int, generator: torch.Generator, num_segments: int = 3) -> "OrderShuffle":
        """Each tuple shuffled with probability 1/2 (query and key independently), as officially."""
        m = order_permutations(num_segments).shape[0]
        flags = torch.rand(2, batch, generator=generator) < 0.5
        choices = torch.randint(m, (2, batch), generator=generator)
        return cls.from_flags(flags[0], flags[1], choices[0], choices[1], num_segments)

    @staticmethod
    def apply(x: Tensor, perm: Tensor) -> Tensor:
        """Reorder ``B x S x ...`` along the segment axis: ``out[b, i] = x[b, perm[b, i]]``."""
        index = perm.to(x.device).reshape(*perm.shape, *([1] * (x.dim() - 2))).expand_as(x)
        return torch.gather(x, 1, index)
