"""VCLR: video-level contrast of segment tuples (global context), SeCo terms and temporal order.

Kuang et al. 2021, "Video Contrastive Learning with Global Context" (ICCV Workshops); official
``amazon-research/video-contrastive-learning`` @ ``4fb66c3d`` (``train_vclr.py``,
``models/resnet_mlp.py``, ``dataset/dataset_kinetics.py::KineticsClipFolderDatasetOrderTSN``).

A video is cut into 3 equal segments and two clips are drawn in each (:class:`SegmentClips`):
the query tuple ``q_0, q_1, q_2`` and the key tuple ``k_0, k_1, k_2``. Per video:

- segment term: the mean over its 3 clips' backbone features -> segment head -> L2 (the
  official "TSN" branch) of the query tuple is contrasted with the momentum encoder's
  embedding of the key tuple, against a queue of such keys (``MemoryVCLR``);
- SeCo terms: the anchor is ``q_0`` or ``q_2`` (at random, as officially); its keys are a
  second augmentation of the same clip and the other two query clips. Inter: all three are
  positives sharing the inter queue's negatives; intra: the same clip must beat each other
  clip (loss functions in :mod:`training.losses.vclr`);
- order: each tuple is shuffled with probability 1/2 (never into its reversal); a classifier
  on the concatenated per-clip order-head outputs of both tuples predicts which were shuffled.

Total ``inter + intra + order + segment`` (weights 1, hyperparameters).

Differences from the official code: it is frame level (a 2D ResNet-50 on single frames per
segment, ``tsn_mode``); here every "frame" is a clip of the spec's T frames through the 3D
backbone, so the exported network is a clip encoder like every other method's. The anchor's
query features are taken from the query tuple's forward pass (the official code encodes the
anchor frame a second time in its own batch), which saves a quarter of the query compute and
changes only BatchNorm batch composition. Queues start as MoCo's normalised Gaussian keys unless
``queue_init="official"`` (``U(+-1/sqrt(P/3))``, not normalised); the order head is normalised
per clip unless ``order_norm="official"`` (over the 3 clips, a quirk of ``resnet_mlp.py``).
The paper text could not be read here: the paper-vs-code defaults above follow the usual MoCo
conventions [unverified].
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.augment.segment_order import OrderShuffle
from training.distributed import gather_no_grad
from training.losses.vclr import ORDER_CLASSES, ORDER_NORMS, order_features, vclr_loss_terms
from training.methods.base import CommonHparams, step_seed
from training.methods.heads import MLPHead
from training.methods.moco import Encoded, MoCo, MoCoHparams
from training.methods.momentum import momentum_update, split_batch_forward
from training.methods.queue import KeyQueue
from training.methods.registry import register_method
from training.methods.views import ViewSampler, window_at
from training.models.registry import Backbone
from vcl_infer.clips.sampling import ClipWindow
from vcl_infer.clips.spec import ClipSpec

SEGMENTS = 3
QUEUE_INITS = ("normal", "official")
_OTHERS = torch.tensor([[1, 2], [0, 1]])  # other segments of anchor 0 and of anchor 2


@dataclass(frozen=True)
class SegmentClips:
    """VCLR's views: 2 clips in each of 3 equal segments, plus re-crops of the edge query clips.

    Returns ``[q_0, q_1, q_2, k_0, k_1, k_2, q_0, q_2]``: in segment ``j`` two distinct clip
    starts are drawn (official: 2 distinct frames per segment), ``q_j`` the first and ``k_j``
    the second; the last two windows repeat ``q_0`` and ``q_2`` so the dataset crops them again
    (the SeCo anchor's second augmentation; the step picks one per video). Clips take
    ``T = spec.frames_per_clip`` frames at ``spec.frame_step`` (1 for a ``target_fps`` spec);
    one longer than its segment runs past it, frames past the video's end follow
    ``spec.short_video``.
    """

    spec: ClipSpec

    def __call__(self, timestamps: np.ndarray, rng: np.random.Generator) -> list[ClipWindow]:
        ts = np.maximum.accumulate(np.asarray(timestamps, dtype=np.float64).reshape(-1))
        n, t, step = ts.size, self.spec.frames_per_clip, int(self.spec.frame_step or 1)
        span = (t - 1) * step + 1
        length = n // SEGMENTS
        queries: list[ClipWindow] = []
        keys: list[ClipWindow] = []
        for j in range(SEGMENTS):
            lo = j * length
            hi = n if j == SEGMENTS - 1 else (j + 1) * length
            last_start = max(lo, hi - span)
            choices = np.arange(lo, last_start + 1)
            starts = rng.choice(choices, 2, replace=False) if choices.size >= 2 else np.repeat(choices, 2)
            for start, out in zip(starts, (queries, keys)):
                offsets = int(start) + np.arange(t) * step
                idx = offsets % n if self.spec.short_video == "loop" else np.minimum(offsets, n - 1)
                out.append(window_at(ts, idx))
        return [*queries, *keys, queries[0], queries[-1]]


@dataclass(frozen=True)
class VCLRHparams(MoCoHparams):
    """VCLR defaults (official ``parse_option`` / ``shell/main_train.sh``).

    Attributes:
        temperature: T of the inter and segment terms, 0.1.
        temperature_intra: T of the intra term, 0.1.
        queue_size: K of each of the two queues (inter, segment), 131072 (Kinetics-400).
        momentum: EMA of the key encoder, 0.999.
        inter_weight, intra_weight, order_weight, segment_weight: term weights, 1 each.
        order_norm: ``"feature"`` (normalise each clip's order-head output) or ``"official"``.
        queue_init: ``"normal"`` (MoCo's normalised Gaussian) or ``"official"`` (uniform,
            unnormalised; matters for step-0 comparisons with the official code).
    """

    temperature: float = 0.1
    temperature_intra: float = 0.1
    queue_size: int = 131072
    inter_weight: float = 1.0
    intra_weight: float = 1.0
    order_weight: float = 1.0
    segment_weight: float = 1.0
    order_norm: str = "feature"
    queue_init: str = "normal"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.temperature_intra > 0:
            raise ValueError(f"temperature_intra must be > 0, got {self.temperature_intra!r}")
        for name in ("inter_weight", "intra_weight", "order_weight", "segment_weight"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.order_norm not in ORDER_NORMS:
            raise ValueError(f"order_norm must be one of {ORDER_NORMS}, got {self.order_norm!r}")
        if self.queue_init not in QUEUE_INITS:
            raise ValueError(f"queue_init must be one of {QUEUE_INITS}, got {self.queue_init!r}")
        if self.symmetric:
            raise ValueError("vclr has no symmetric variant (symmetric must be False)")


def _head(d: int, out: int, mlp: bool) -> nn.Module:
    return MLPHead(d, d, out) if mlp else nn.Linear(d, out)


@register_method("vclr")
class VCLR(MoCo[VCLRHparams]):
    """VCLR: 3-segment clip tuples (global context) + SeCo inter/intra + order, 2 queues K=131072, T=0.1."""

    Hparams: ClassVar[type[CommonHparams]] = VCLRHparams
    # official: SGD, lr 0.1 x (batch / 256), momentum 0.9, wd 1e-4, warm-up cosine, 400 epochs
    optim_defaults: ClassVar[dict[str, Any]] = {"optimizer": "sgd", "lr": 0.1, "weight_decay": 1e-4}
    num_views = 2 * SEGMENTS + 2

    def __init__(self, *, backbone, spec, hparams: VCLRHparams, seed: int = 0) -> None:
        super().__init__(backbone=backbone, spec=spec, hparams=hparams, seed=seed)
        d, p = self.embed_dim, hparams.proj_dim
        # encoder_q / encoder_k (MoCo) hold the backbone and the inter head; these the others
        self.heads_q = nn.ModuleDict({name: _head(d, p, hparams.mlp) for name in ("intra", "order", "segment")})
        self.heads_k = copy.deepcopy(self.heads_q)
        for param in self.heads_k.parameters():
            param.requires_grad_(False)
        self.order_classifier = nn.Linear(2 * SEGMENTS * p, ORDER_CLASSES)
        init = torch.Generator().manual_seed(step_seed(seed, 0, 0, stream=2))
        self.segment_queue = KeyQueue(hparams.queue_size, p, generator=init)
        if hparams.queue_init == "official":
            stdv = 1.0 / math.sqrt(p / 3)
            for queue in (self.queue, self.segment_queue):
                queue.keys.copy_(torch.rand(queue.keys.shape, generator=init) * 2 * stdv - stdv)

    @property
    def views(self) -> ViewSampler:
        return SegmentClips(self.spec)

    def _features(self, backbone: Backbone, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Pooled features and (dense term on) the feature maps of ``x``."""
        if not self.uses_dense:
            return backbone(x), None
        maps = backbone.forward_features(x)
        return backbone.forward_head(maps), maps

    def _key_clip(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Key encoder on single clips -> (inter z, intra z[, backbone locations, dense projections])."""
        h, maps = self._features(self.encoder_k.backbone, x)
        out = (F.normalize(self.encoder_k.head(h), dim=1), F.normalize(self.heads_k["intra"](h), dim=1))
        if maps is None:
            return out
        return (*out, maps.flatten(2).transpose(1, 2), self.encoder_k.project_dense(maps))

    def _key_tuple(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Key encoder on ``b x 3 x C x T x H x W`` tuples -> (segment z, order features)."""
        b = x.shape[0]
        h = self.encoder_k.backbone(x.flatten(0, 1)).view(b, SEGMENTS, -1)
        z = F.normalize(self.heads_k["segment"](h.mean(dim=1)), dim=1)
        order = self.heads_k["order"](h.flatten(0, 1)).view(b, SEGMENTS, -1)
        return z, order_features(order, self.hparams.order_norm)

    def _queries(
        self, q_clips: torch.Tensor, anchor: torch.Tensor, perm_q: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Query encoder on ``b x 3 x C x T x H x W`` tuples -> (inter z, intra z, segment z, order
        features, the anchor clips' feature maps when the dense term is on)."""
        b = q_clips.shape[0]
        rows = torch.arange(b, device=q_clips.device)
        h, maps = self._features(self.encoder_q.backbone, q_clips.flatten(0, 1))
        h = h.view(b, SEGMENTS, -1)
        h_anchor = h[rows, anchor]
        q_inter = F.normalize(self.encoder_q.head(h_anchor), dim=1)
        q_intra = F.normalize(self.heads_q["intra"](h_anchor), dim=1)
        q_segment = F.normalize(self.heads_q["segment"](h.mean(dim=1)), dim=1)
        h_order = OrderShuffle.apply(h, perm_q)
        order = self.heads_q["order"](h_order.flatten(0, 1)).view(b, SEGMENTS, -1)
        q_order = order_features(order, self.hparams.order_norm)
        maps_anchor = None if maps is None else maps.view(b, SEGMENTS, *maps.shape[1:])[rows, anchor]
        return q_inter, q_intra, q_segment, q_order, maps_anchor

    @torch.no_grad()
    def _keys(
        self, views: list[torch.Tensor], q_clips: torch.Tensor, k_clips: torch.Tensor, anchor_last: torch.Tensor,
        perm_k: torch.Tensor, groups: int, perms: list[torch.Tensor],
    ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]:
        """Key encoder: (same-clip keys, keys of the two other segments, segment z, order features).

        MoCo updates the key encoder before computing this step's keys; every key batch goes
        through shuffle-BN with its own permutation of ``perms``.
        """
        momentum_update(self.encoder_q, self.encoder_k, self.hparams.momentum)
        momentum_update(self.heads_q, self.heads_k, self.hparams.momentum)
        b = q_clips.shape[0]
        rows = torch.arange(b, device=q_clips.device)
        same = torch.where(anchor_last.view(b, 1, 1, 1, 1), views[-1], views[-2])
        others = q_clips[rows[:, None], _OTHERS.to(q_clips.device)[anchor_last.long()]]  # b x 2 x C x T x H x W
        k_same = split_batch_forward(self._key_clip, same, groups, perms[0])
        k_other1 = split_batch_forward(self._key_clip, others[:, 0], groups, perms[1])
        k_other2 = split_batch_forward(self._key_clip, others[:, 1], groups, perms[2])
        k_tuple = OrderShuffle.apply(k_clips, perm_k)
        k_segment, k_order = split_batch_forward(self._key_tuple, k_tuple, groups, perms[3])
        return k_same, k_other1, k_other2, k_segment, k_order

    def training_step(
        self, clips: torch.Tensor, step: int, labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``B x 8 x 3 x T x S x S`` (``[q0, q1, q2, k0, k1, k2, q0', q2']``) -> loss and terms.

        Keeps MoCo's structure: momentum update before the keys, shuffle-BN for every key
        batch, enqueue after the loss; MoCo's dense term is added when ``dense_weight > 0``
        (anchor query vs its second augmentation).
        """
        self.check_clips(clips)
        hp = self.hparams
        g = self.generator(step)
        b, dev = clips.shape[0], clips.device
        groups = self._groups(b)
        views = [self.augment(clips[:, v], g) for v in range(self.num_views)]
        q_clips, k_clips = torch.stack(views[:SEGMENTS], 1), torch.stack(views[SEGMENTS : 2 * SEGMENTS], 1)
        anchor_last = (torch.rand(b, generator=g) < 0.5).to(dev)  # official: segment 0 or 2
        shuffle = OrderShuffle.draw(b, g, SEGMENTS)
        perms = [torch.randperm(b, generator=g) for _ in range(4)]
        anchor = anchor_last.long() * (SEGMENTS - 1)
        # queries: one pass over the query tuple serves the segment, order and SeCo branches
        q_inter, q_intra, q_segment, q_order, maps_anchor = self._queries(q_clips, anchor, shuffle.perm_q)
        k_same, k_other1, k_other2, k_segment, k_order = self._keys(
            views, q_clips, k_clips, anchor_last, shuffle.perm_k, groups, perms
        )
        logits = self.order_classifier(torch.cat([q_order, k_order], dim=1))
        terms = vclr_loss_terms(
            inter=(q_inter, k_same[0], k_other1[0], k_other2[0]),
            intra=(q_intra, k_same[1], k_other1[1], k_other2[1]),
            inter_queue=self.queue().clone(),  # the enqueues below write the buffers in place
            segment_q=q_segment,
            segment_k=k_segment,
            segment_queue=self.segment_queue().clone(),
            order_logits=logits,
            order_labels=shuffle.labels.to(dev),
            temperature=hp.temperature,
            temperature_intra=hp.temperature_intra,
        )
        weights = {"inter": hp.inter_weight, "intra": hp.intra_weight, "order": hp.order_weight,
                   "segment": hp.segment_weight}
        out = {"loss": torch.stack([weights[k] * v for k, v in terms.items()]).sum()}
        out.update({f"loss_{k}": v.detach() for k, v in terms.items()})
        if maps_anchor is not None:  # the dense term is on
            q_dense = Encoded(q_inter, maps_anchor.flatten(2).transpose(1, 2), self.encoder_q.project_dense(maps_anchor))
            k_dense = Encoded(k_same[0], k_same[2], k_same[3])
            out["loss_dense"] = self.dense_terms([(q_dense, k_dense)])
            out["loss"] = out["loss"] + hp.dense_weight * out["loss_dense"]
            self.enqueue_dense([k_dense])
        # official: the inter queue takes the keys of all three clips, the segment queue the tuples'
        self.enqueue_keys(torch.cat([gather_no_grad(k[0]) for k in (k_same, k_other1, k_other2)]))
        self.segment_queue.enqueue(gather_no_grad(k_segment))
        with torch.no_grad():
            out["order_acc"] = (logits.argmax(dim=1) == shuffle.labels.to(dev)).float().mean()
        return out
