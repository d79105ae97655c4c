"""MoCHi on video clips: MoCo v2 plus synthetic hard negatives mixed from the queue.

Kalantidis et al. 2020, "Hard Negative Mixing for Contrastive Learning" (NeurIPS). No official
code was released; see :mod:`training.losses.mochi` for the loss and the reimplementation it
was checked against. Everything but the loss is :class:`~training.methods.moco.MoCo` (views,
momentum encoder, shuffle-BN, queue, optional dense term); the synthetic negatives are used
for this step's logits only and never enter the queue (the queue still holds only keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from training.losses.mochi import check_mochi_hparams, draw_mochi, mochi_loss
from training.losses.moco import moco_loss
from training.methods.base import CommonHparams
from training.methods.moco import MoCo, MoCoHparams
from training.methods.registry import register_method


@dataclass(frozen=True)
class MoCHiHparams(MoCoHparams):
    """MoCHi(N, s, s') on the MoCo v2 defaults (T=0.2, K=65536, m=0.999, MLP head).

    Attributes:
        num_hard: ``N`` hardest queue negatives per query to mix from; 1024.
        num_mix: ``s`` synthetic negatives mixing two of them; 1024.
        num_query_mix: ``s'`` synthetic negatives mixing the query with one of them; 128.
            (1024, 1024, 128) is the paper's ImageNet-1k setting; on ImageNet-100 it also
            reports e.g. (256, 512, 0) [unverified, from memory]. ``N``, ``s`` and ``s'`` are
            each clamped to the queue size, so a small queue is never outnumbered by
            synthetic points.
        query_mix_max: upper bound of the query coefficient ``b ~ U(0, query_mix_max)``; 0.5.
        mix_start_step: optimiser steps of plain MoCo before mixing starts; 0. The paper starts
            after a warm-up of ~10 epochs (ImageNet-100) / 15 (ImageNet-1k) [unverified];
            set it to ``warm-up epochs x steps per epoch`` to reproduce that.
    """

    num_hard: int = 1024
    num_mix: int = 1024
    num_query_mix: int = 128
    query_mix_max: float = 0.5
    mix_start_step: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_mochi_hparams(self.num_hard, self.num_mix, self.num_query_mix, self.query_mix_max)
        if self.mix_start_step < 0:
            raise ValueError(f"mix_start_step must be >= 0, got {self.mix_start_step!r}")


@register_method("mochi")
class MoCHi(MoCo[MoCHiHparams]):
    """MoCHi: MoCo v2 with hard negative mixing, MoCHi(N=1024, s=1024, s'=128), synthetic points never enqueued."""

    Hparams: ClassVar[type[CommonHparams]] = MoCHiHparams

    def mixing_counts(self, step: int) -> tuple[int, int, int]:
        """``(N, s, s')`` at ``step``: clamped to the queue size, ``s = s' = 0`` before the warm-up ends."""
        h, k = self.hparams, self.hparams.queue_size
        if step < h.mix_start_step:
            return min(h.num_hard, k), 0, 0
        return min(h.num_hard, k), min(h.num_mix, k), min(h.num_query_mix, k)

    def contrastive_terms(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        queue: torch.Tensor,
        *,
        step: int,
        generator: torch.Generator,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """MoCo loss with ``s + s'`` synthetic hard negatives per query (drawn from ``generator``)."""
        n, s, s2 = self.mixing_counts(step)
        t = self.hparams.temperature
        if s == 0 and s2 == 0:
            return {"loss": moco_loss(q, k, queue, t)}
        draws = draw_mochi(q.shape[0], n, s, s2, query_mix_max=self.hparams.query_mix_max, generator=generator)
        return {"loss": mochi_loss(q, k, queue, t, num_hard=n, num_mix=s, num_query_mix=s2, draws=draws)}
