"""CycleContrast on video clips: MoCo with a video-level positive plus cross-video cycles.

Wu and Wang 2021, "Contrastive Learning of Image Representations with Cross-Video
Cycle-Consistency" (ICCV); official code ``happywu/CycleContrast`` @ ``b0ae8a7b``
(``cycle_contrast/builder.py``, ``scripts/train_cycle.sh``). Per video three views: the query
clip, a second crop of the same frames (the key that is enqueued, as the official ``im_k``)
and a crop of another clip of the video (the own-video candidate, official
``cls_candidates``). Loss: ``moco(q, candidate) + 0.1 * cycle``, see
:func:`training.losses.cyclecontrast.cycle_contrast_terms`. A separate MLP cycle head (official
``--sep-head``) and its own queue (``cycle_queue_size``) serve the cycle term.

Own video in the support set: the paper's soft nearest neighbour is over *other* videos; the
official code stores video indices with the queue but never uses them. Here the cycle queue
stores the video id of each key (``-1`` unknown) and keys of the query's own video leave its
support set and its cycle-back negatives when ``training_step`` gets ``video_ids`` (the data
set index of each clip, ``batch["index"]``). Without ids nothing is excluded: the current
batch's keys are enqueued after the loss, and with sampling without replacement the queue
holds none of the batch's videos while it spans less than an epoch (cycle_queue_size below the
number of training videos minus a batch); a longer queue on a small data set does hold them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.checks import check_weight
from training.distributed import gather_no_grad
from training.losses.cyclecontrast import check_support_size, cycle_contrast_terms
from training.methods.base import CommonHparams, Prepared, step_seed
from training.methods.heads import Encoder, MLPHead
from training.methods.moco import Encoded, MoCo, MoCoHparams
from training.methods.momentum import momentum_update, split_batch_forward
from training.methods.queue import KeyQueue
from training.methods.registry import register_method
from training.methods.views import ViewSampler
from vcl_infer.clips.sampling import ClipWindow, distinct_clips
from vcl_infer.clips.spec import ClipSpec


@dataclass(frozen=True)
class CycleContrastHparams(MoCoHparams):
    """CycleContrast defaults (``scripts/train_cycle.sh``).

    Attributes:
        temperature: 0.07 (``--moco-t``), also the cycle-back temperature; queue_size: 65536.
        cycle_queue_size: keys of the cycle-head queue, 81920 (``--cycle-k``).
        support_size: soft-nearest-neighbour support drawn from the cycle queue, 16384
            (``--soft-nn-support``); the other keys are the cycle-back negatives.
        nn_temperature: softmax temperature of the soft nearest neighbour; None = temperature.
        cycle_weight: weight of the cycle term, 0.1 (``--soft-nn-loss-weight``).
    """

    temperature: float = 0.07
    cycle_queue_size: int = 81920
    support_size: int = 16384
    nn_temperature: float | None = None
    cycle_weight: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cycle_queue_size < 2:
            raise ValueError(f"cycle_queue_size must be >= 2, got {self.cycle_queue_size!r}")
        check_support_size(self.support_size, self.cycle_queue_size)
        if self.nn_temperature is not None and not self.nn_temperature > 0:
            raise ValueError(f"nn_temperature must be > 0 or None, got {self.nn_temperature!r}")
        check_weight("cycle_weight", self.cycle_weight)
        if self.symmetric:
            raise ValueError("symmetric is not supported by cyclecontrast")


@dataclass(frozen=True)
class ClipAndCandidate:
    """Views ``[a, a, c]``: clip ``a`` twice (query and key crops) and another clip ``c``.

    ``a`` and ``c`` are two temporally distinct clips in random order (the official candidate
    is a random frame of the video, before or after the query's).
    """

    spec: ClipSpec

    def __call__(self, timestamps: np.ndarray, rng: np.random.Generator) -> list[ClipWindow]:
        first, second = distinct_clips(timestamps, self.spec, 2, rng)
        a, c = (first, second) if rng.random() < 0.5 else (second, first)
        return [a, a, c]


class VideoIdQueue(KeyQueue):
    """A key queue that also remembers each key's video id (``ids``, ``-1`` = unknown)."""

    ids: torch.Tensor

    def __init__(self, size: int, dim: int, generator: torch.Generator | None = None) -> None:
        super().__init__(size, dim, generator=generator)
        self.register_buffer("ids", torch.full((self.size,), -1, dtype=torch.long))

    @torch.no_grad()
    def enqueue_with_ids(self, keys: torch.Tensor, ids: torch.Tensor | None) -> None:
        slots = self.written_slots(keys.shape[0])
        self.enqueue(keys)
        new = torch.full((keys.shape[0],), -1, dtype=torch.long) if ids is None else ids.to(torch.long)
        self.ids[slots] = new[-slots.shape[0] :].to(self.ids.device)


@register_method("cyclecontrast")
class CycleContrast(MoCo[CycleContrastHparams]):
    """CycleContrast: MoCo (T=0.07) with an own-video positive + 0.1 x soft-NN cross-video cycle term (sep. head)."""

    Hparams: ClassVar[type[CommonHparams]] = CycleContrastHparams
    num_views = 3
    batch_keys: ClassVar[tuple[str, ...]] = ("video_ids",)
    """``training_step`` takes ``video_ids`` (the data set index of each clip) to keep the query's
    own video out of its cycle; without them nothing is excluded."""

    @classmethod
    def prepare(cls, config: Any, items: Sequence[Any], classes: Sequence[str] | None) -> Prepared:
        """``video_ids``: the data set index identifies the video."""
        return Prepared(inputs={"video_ids": torch.arange(len(items), dtype=torch.long)})
    # train_cycle.sh: lr 0.06 at batch 512 (SGD, momentum 0.9, wd 1e-4, cosine, 200 epochs)
    optim_defaults: ClassVar[dict[str, Any]] = {"optimizer": "sgd", "lr": 0.06, "weight_decay": 1e-4}

    def __init__(self, *, backbone, spec, hparams: CycleContrastHparams, seed: int = 0) -> None:
        super().__init__(backbone=backbone, spec=spec, hparams=hparams, seed=seed)
        d = self.embed_dim
        head = MLPHead(d, d, hparams.proj_dim) if hparams.mlp else nn.Linear(d, hparams.proj_dim)
        self.cycle_head_q = head
        self.cycle_head_k = copy.deepcopy(head)
        for p in self.cycle_head_k.parameters():
            p.requires_grad_(False)
        init = torch.Generator().manual_seed(step_seed(seed, 0, 0, stream=2))
        self.cycle_queue = VideoIdQueue(hparams.cycle_queue_size, hparams.proj_dim, generator=init)

    @property
    def views(self) -> ViewSampler:
        return ClipAndCandidate(self.spec)

    def encode_two_heads(
        self, encoder: Encoder, cycle_head: nn.Module, x: torch.Tensor, groups: int, perm: torch.Tensor
    ) -> tuple[Encoded, torch.Tensor]:
        """Shuffle-BN forward through one backbone and both heads: (MoCo-head view, cycle embedding)."""

        def run(chunk: torch.Tensor) -> tuple[torch.Tensor, ...]:
            maps = encoder.backbone.forward_features(chunk)
            pooled = encoder.backbone.forward_head(maps)
            z, u = F.normalize(encoder.head(pooled), dim=1), F.normalize(cycle_head(pooled), dim=1)
            if self.uses_dense:
                return z, u, maps.flatten(2).transpose(1, 2), encoder.project_dense(maps)
            return z, u

        z, u, *dense = split_batch_forward(run, x, groups, perm)
        return Encoded(z, *dense), u

    def training_step(
        self,
        clips: torch.Tensor,
        step: int,
        labels: torch.Tensor | None = None,
        video_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``B x 3 x 3 x T x S x S`` in [0, 1] -> ``{"loss", "loss_moco", "loss_cycle", ...}``.

        ``video_ids`` (``B`` ints >= 0, e.g. the data set indices) let the cycle term leave the
        query's own video out of its support set and negatives. MoCo's order of updates:
        momentum update before the keys, both queues written after the loss.
        """
        self.check_clips(clips)
        hp = self.hparams
        g = self.generator(step)
        b = clips.shape[0]
        groups = self._groups(b)
        x_q, x_k, x_c = (self.augment(clips[:, v], g) for v in range(3))
        q, u = self.encode_two_heads(self.encoder_q, self.cycle_head_q, x_q, groups, torch.arange(b))
        with torch.no_grad():
            momentum_update(self.encoder_q, self.encoder_k, hp.momentum)
            momentum_update(self.cycle_head_q, self.cycle_head_k, hp.momentum)
            # key and candidate clips go through shuffle-BN together, as official
            keys, keys_u = self.encode_two_heads(
                self.encoder_k,
                self.cycle_head_k,
                torch.cat([x_k, x_c]),
                groups,
                torch.randperm(2 * b, generator=g),
            )
        k = Encoded(keys.z[:b], *(None if t is None else t[:b] for t in (keys.feats, keys.dense)))
        cycle_queue = self.cycle_queue().clone()
        same_video = None
        if video_ids is not None:
            video_ids = video_ids.to(self.cycle_queue.ids.device, torch.long)
            same_video = video_ids[:, None] == self.cycle_queue.ids[None, :]
        terms = cycle_contrast_terms(
            q.z, u, keys.z[b:, None], keys_u[b:, None], self.queue().clone(), cycle_queue,
            support_size=hp.support_size, temperature=hp.temperature, nn_temperature=hp.nn_temperature,
            cycle_weight=hp.cycle_weight, same_video=same_video, generator=g,
        )  # fmt: skip
        out = {"loss": terms["loss"], "loss_moco": terms["moco"], "loss_cycle": terms["cycle"]}
        if self.uses_dense:
            out["loss_global"] = out["loss"]
            out["loss_dense"] = self.dense_terms([(q, k)])
            out["loss"] = out["loss"] + hp.dense_weight * out["loss_dense"]
            self.enqueue_dense([k])
        self.enqueue_keys(gather_no_grad(k.z), None if labels is None else gather_no_grad(labels))
        ids = None if video_ids is None else gather_no_grad(video_ids)
        self.cycle_queue.enqueue_with_ids(gather_no_grad(keys_u[:b]), ids)
        with torch.no_grad():
            out["pos_sim"] = (q.z * keys.z[b:]).sum(dim=1).mean()
        return out

