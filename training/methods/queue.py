"""Key queues: FIFO ring buffers of negative keys kept between steps (MoCo and its descendants).

He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020
(Algorithm 1, ``_dequeue_and_enqueue``); the aged variant follows VideoMoCo (Pan et al., CVPR
2021, official ``tinapan-pt/VideoMoCo`` ``moco/builder.py``). The queues live in module buffers,
so ``state_dict`` saves them and a resumed run continues exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.checks import check_shape


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


class AgedKeyQueue(KeyQueue):
    """A :class:`KeyQueue` that also counts each key's age.

    Ages follow the official ``_dequeue_and_enqueue``: every enqueue first adds 1 to all ages,
    then sets the slots just written to 1. So at the next loss the newest keys have age 1, and
    a key written ``n`` enqueues ago has age ``n``. The initial random keys start at age 0.
    Unlike the official ``count`` (a plain int16 attribute, lost on resume and silently reset to
    0), ``ages`` is an int64 buffer saved in ``state_dict``.
    """

    ages: Tensor

    def __init__(self, size: int, dim: int, generator: torch.Generator | None = None) -> None:
        super().__init__(size, dim, generator=generator)
        self.register_buffer("ages", torch.zeros(self.size, dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` (``B x D``) as :class:`KeyQueue` does, then age the queue."""
        check_shape("keys", keys, 2, "B x D")
        slots = self.written_slots(keys.shape[0])
        super().enqueue(keys)
        self.ages.add_(1)
        self.ages[slots] = 1
