"""MoCo v2 on video clips: a momentum key encoder and a queue of negative keys.

He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation Learning" (CVPR);
Chen et al. 2020, "Improved Baselines with Momentum Contrastive Learning" (v2: MLP head,
temperature 0.2, blur, cosine schedule). Video views are two distinct clips of a video.

Shuffle-BN: MoCo shuffles the key batch across GPUs so a key's BN statistics do not come from
the batch holding its query. Here each process emulates it with ``split_batch_forward``: the
batch is split into ``shuffle_groups`` sub-batches (queries in order, keys in a random order),
each normalised on its own. Under DDP the split happens inside every rank; keys are gathered
from all ranks and every rank enqueues the same keys, so the queues stay identical.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from training.distributed import gather_no_grad
from training.losses.moco import (
    KeyQueue,
    moco_loss,
    momentum_update,
    split_batch_forward,
    symmetric_moco_loss,
)
from training.methods.base import CommonHparams, Method, step_seed
from training.methods.heads import Encoder, MLPHead
from training.methods.registry import register_method
from training.methods.views import DistinctClips


@dataclass(frozen=True)
class MoCoHparams(CommonHparams):
    """MoCo v2 defaults.

    Attributes:
        temperature: 0.2 (v2 with MLP; v1 used 0.07).
        queue_size: K negative keys, 65536 (paper, ImageNet). Small data sets want fewer:
            FAME's official code uses 2048 on UCF101 (9.5k videos).
        momentum: key encoder EMA coefficient m, 0.999.
        mlp: MLP head ``D -> D -> proj_dim`` (v2) instead of one linear layer (v1).
        symmetric: also contrast the second view's query with the first view's key and average
            (FAME); both key sets are enqueued.
        shuffle_groups: BN sub-batches for the shuffle-BN emulation; None = 2 when the batch
            holds >= 4 clips, else 1.
    """

    temperature: float = 0.2
    queue_size: int = 65536
    momentum: float = 0.999
    mlp: bool = True
    symmetric: bool = False
    shuffle_groups: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {self.queue_size!r}")
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {self.momentum!r}")
        if self.shuffle_groups is not None and self.shuffle_groups < 1:
            raise ValueError(f"shuffle_groups must be >= 1 or None, got {self.shuffle_groups!r}")


@register_method("moco")
class MoCo(Method):
    """MoCo v2: 2 distinct clips, momentum key encoder (m=0.999), queue K=65536, MLP head, T=0.2."""

    Hparams: ClassVar[type] = MoCoHparams
    optim_defaults: ClassVar[dict[str, Any]] = {"optimizer": "sgd", "lr": 0.03, "weight_decay": 1e-4}

    def __init__(self, *, backbone, spec, hparams: MoCoHparams, seed: int = 0) -> None:
        super().__init__(backbone=backbone, spec=spec, hparams=hparams, seed=seed)
        d = self.embed_dim
        head: nn.Module = MLPHead(d, d, hparams.proj_dim) if hparams.mlp else nn.Linear(d, hparams.proj_dim)
        self.encoder_q = Encoder(backbone, head)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        init = torch.Generator().manual_seed(step_seed(seed, 0, 0, stream=1))
        self.queue = KeyQueue(hparams.queue_size, hparams.proj_dim, generator=init)

    @property
    def views(self) -> DistinctClips:
        return DistinctClips(self.spec, 2)

    def _groups(self, batch: int) -> int:
        groups = self.hparams.shuffle_groups
        if groups is None:
            groups = 2 if batch >= 4 else 1
        return max(1, min(int(groups), batch))

    def query_view(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """The first view before the encoder (FAME overrides this to merge backgrounds)."""
        return self.augment(x, g)

    def training_step(self, clips: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """``B x 2 x 3 x T x S x S`` in [0, 1] -> ``{"loss"}``; updates key encoder and queue."""
        self.check_clips(clips)
        g = self.generator(step)
        b = clips.shape[0]
        groups = self._groups(b)
        x_a = self.query_view(clips[:, 0], g)
        x_b = self.augment(clips[:, 1], g)
        ident = torch.arange(b)
        perm_a, perm_b = torch.randperm(b, generator=g), torch.randperm(b, generator=g)
        q_a = split_batch_forward(self.encoder_q, x_a, groups, ident)
        with torch.no_grad():
            # MoCo updates the key encoder before computing this step's keys
            momentum_update(self.encoder_q, self.encoder_k, self.hparams.momentum)
            k_b = split_batch_forward(self.encoder_k, x_b, groups, perm_b)
        queue = self.queue().clone()  # enqueue below writes the buffer in place
        t = self.hparams.temperature
        if self.hparams.symmetric:
            q_b = split_batch_forward(self.encoder_q, x_b, groups, ident)
            with torch.no_grad():
                k_a = split_batch_forward(self.encoder_k, x_a, groups, perm_a)
            loss = symmetric_moco_loss(q_a, k_a, q_b, k_b, queue, t)
            new_keys = torch.cat([gather_no_grad(k_b), gather_no_grad(k_a)])
        else:
            loss = moco_loss(q_a, k_b, queue, t)
            new_keys = gather_no_grad(k_b)
        self.queue.enqueue(new_keys)
        with torch.no_grad():
            pos = (q_a * k_b).sum(dim=1).mean()
        return {"loss": loss, "pos_sim": pos}
