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
import math
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from training.distributed import gather_no_grad
from training.losses.dense import dense_contrast_loss, dense_correspondence
from training.losses.moco import moco_loss
from training.methods.base import CommonHparams, Method, step_seed
from training.methods.heads import DenseHead, Encoder, MLPHead, pooled_dense_keys
from training.methods.momentum import momentum_update, split_batch_forward
from training.methods.queue import KeyQueue
from training.methods.registry import register_method
from training.methods.reversal import reverse_time
from training.methods.views import DistinctClips, ViewSampler
from training.models.registry import Backbone
from vcl_infer.clips.spec import ClipSpec


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
        dense_weight: W of the optional dense term (DenseCL, :mod:`training.losses.dense`): the
            loss becomes ``L + W * L_dense``; 0 turns it off. DenseCL's ``(1 - l) L + l L_dense``
            with its l = 0.5 is W = 1 at half the loss scale (halve the learning rate to match).
        dense_queue_size: negatives of the dense term (pooled dense keys); None = queue_size.
        reverse_negatives: the keys of the views played backwards join this step's negatives
            (never enqueued; :mod:`training.methods.reversal`); off in the papers. MoCo and FAME
            only: methods whose queue carries labels or video ids do not support it.
        head_bn: BatchNorm after the MLP head's hidden layer (SimCLR's and MoCo v3's head); off
            in MoCo v2 and FAME. From a random init every clip's feature points nearly the same
            way (cosine ~0.8 between any two videos); the BN-free head keeps the embeddings in
            that cone, and with negatives that carry no gradient nothing spreads them: on a
            short budget the loss stays at log(K + 1) (docs/ladder/what_was_wrong.md).
        batch_negatives: the keys of this step's other videos join each query's negatives (MoCo
            v3 contrasts against these alone, with no queue); off in MoCo v2 and FAME, whose
            negatives all come from earlier steps. Local keys only under DDP.
        reverse_encoder: which encoder plays the ``reverse_negatives`` clips: ``"key"`` (the
            momentum encoder, no gradient, the views' keys reversed) or ``"query"`` (the online
            encoder, with gradient, the queries' own clips reversed, local to each rank, as
            SimCLR's reversed view). Through the key encoder the reversed key of a clip is
            nearly its key at init, so pulling the query to one and pushing it from the other
            cancel and nothing learns direction; with gradient both sides move apart. With
            ``symmetric`` both views' clips are reversed, so each query meets its own clip
            backwards (SimCLR's arrangement). On the ladder (100 steps, docs/ladder, section 10)
            ``"query"`` with ``symmetric`` took MoCo's linear top-1 from 34 to 57 (floor 29);
            ``symmetric`` with ``"key"`` stayed at 38 (one seed).
        reversed_views: with ``reverse_encoder="query"``, which clips are played backwards as a
            pair's extra negatives: ``"all"`` (every view of the step, as above) or ``"key"``
            (only that pair's key view). FAME merges the query view onto another background, so
            the query's own clip reversed shares the query's background while the positive does
            not: that negative is closer than the positive (FAME's loss stayed above chance). The
            key view reversed shares the positive's look and differs only in motion.
    """

    temperature: float = 0.2
    queue_size: int = 65536
    momentum: float = 0.999
    mlp: bool = True
    symmetric: bool = False
    shuffle_groups: int | None = None
    dense_weight: float = 0.0
    dense_queue_size: int | None = None
    reverse_negatives: bool = False
    head_bn: bool = False
    batch_negatives: bool = False
    reverse_encoder: str = "key"
    reversed_views: str = "all"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reversed_views not in ("all", "key"):
            raise ValueError(f"reversed_views must be 'all' or 'key', got {self.reversed_views!r}")
        if self.reverse_encoder not in ("key", "query"):
            raise ValueError(f"reverse_encoder must be 'key' or 'query', got {self.reverse_encoder!r}")
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {self.queue_size!r}")
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {self.momentum!r}")
        if self.shuffle_groups is not None and self.shuffle_groups < 1:
            raise ValueError(f"shuffle_groups must be >= 1 or None, got {self.shuffle_groups!r}")
        if not (self.dense_weight >= 0.0 and math.isfinite(self.dense_weight)):
            raise ValueError(f"dense_weight must be a finite number >= 0, got {self.dense_weight!r}")
        if self.dense_queue_size is not None and self.dense_queue_size < 1:
            raise ValueError(f"dense_queue_size must be >= 1 or None, got {self.dense_queue_size!r}")


@dataclass
class Encoded:
    """One view through an encoder: the embedding and, with the dense term on, per-location parts."""

    z: torch.Tensor  # B x P, L2-normalised
    feats: torch.Tensor | None = None  # B x L x C backbone features (correspondence)
    dense: torch.Tensor | None = None  # B x L x P dense projections

    def dense_parts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(feats, dense)``; a view encoded without the dense head has none (``RuntimeError``)."""
        if self.feats is None or self.dense is None:
            raise RuntimeError("this view was encoded without the dense head")
        return self.feats, self.dense


MH = TypeVar("MH", bound=MoCoHparams)


def moco_loss_extra_negatives(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float, *,
                              batch_keys: bool = False, extra: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`~training.losses.moco.moco_loss` with further negatives.

    Logits of query ``i``: ``[q_i . k_i, q_i . queue, q_i . k_j for j != i (batch_keys),
    q_i . extra] / T``, label 0. Keys and queue carry no gradient; ``extra`` (``M x D``, e.g.
    the online encoder's time-reversed clips) keeps its gradient. With neither it is ``moco_loss``.
    """
    k = k.detach()
    parts = [(q * k).sum(dim=1, keepdim=True), q @ queue.detach().t()]
    if batch_keys:
        parts.append((q @ k.t()).masked_fill(torch.eye(q.shape[0], dtype=torch.bool, device=q.device), float("-inf")))
    if extra is not None:
        parts.append(q @ extra.t())
    logits = torch.cat(parts, dim=1) / temperature
    return torch.nn.functional.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


@register_method("moco")
class MoCo(Method[MH]):
    """MoCo v2: 2 distinct clips, momentum key encoder (m=0.999), queue K=65536, MLP head, T=0.2.

    Subclasses change one piece through these hooks: :meth:`query_view` (the first view before
    the encoder), :meth:`contrastive_terms` (the loss of one query/key direction) and
    :meth:`enqueue_keys` (what the queue remembers). The dense term (``dense_weight``) is
    added by :meth:`training_step`; a subclass that replaces ``training_step`` adds it with
    :meth:`dense_terms` and :meth:`enqueue_dense`.
    """

    Hparams: ClassVar[type[CommonHparams]] = MoCoHparams
    optim_defaults: ClassVar[dict[str, Any]] = {"optimizer": "sgd", "lr": 0.03, "weight_decay": 1e-4}

    def __init__(self, *, backbone: Backbone, spec: ClipSpec, hparams: MH, seed: int = 0) -> None:
        super().__init__(backbone=backbone, spec=spec, hparams=hparams, seed=seed)
        d = self.embed_dim
        head: nn.Module = (MLPHead(d, d, hparams.proj_dim, hidden_bn=hparams.head_bn) if hparams.mlp
                           else nn.Linear(d, hparams.proj_dim))
        dense_head = DenseHead(d, d, hparams.proj_dim) if self.uses_dense else None
        self.encoder_q = Encoder(backbone, head, dense_head)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        init = torch.Generator().manual_seed(step_seed(seed, 0, 0, stream=1))
        self.queue = KeyQueue(hparams.queue_size, hparams.proj_dim, generator=init)
        if self.uses_dense:
            size = hparams.dense_queue_size or hparams.queue_size
            self.dense_queue = KeyQueue(size, hparams.proj_dim, generator=init)

    @property
    def uses_dense(self) -> bool:
        return self.hparams.dense_weight > 0

    @property
    def views(self) -> ViewSampler:
        return DistinctClips(self.spec, 2)

    def _groups(self, batch: int) -> int:
        groups = self.hparams.shuffle_groups
        if groups is None:
            groups = 2 if batch >= 4 else 1
        return max(1, min(int(groups), batch))

    def query_view(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """The first view before the encoder (FAME overrides this to merge backgrounds)."""
        return self.augment(x, g)

    def encode(self, encoder: Encoder, x: torch.Tensor, groups: int, perm: torch.Tensor) -> Encoded:
        """Shuffle-BN forward of one view; per-location outputs too when the dense term is on."""
        if self.uses_dense:
            return Encoded(*split_batch_forward(encoder.forward_dense, x, groups, perm))
        return Encoded(split_batch_forward(encoder, x, groups, perm))

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
        """The loss of queries ``q`` against their keys ``k`` and the ``queue`` (``{"loss", ...}``)."""
        if self.hparams.batch_negatives:
            return {"loss": moco_loss_extra_negatives(q, k, queue, self.hparams.temperature, batch_keys=True)}
        return {"loss": moco_loss(q, k, queue, self.hparams.temperature)}

    def reversed_keys(self, views: list[torch.Tensor], groups: int, perm: torch.Tensor) -> torch.Tensor:
        """Keys of ``views`` played backwards, from all ranks: negatives that differ only in motion."""
        if type(self).contrastive_terms is not MoCo.contrastive_terms:
            raise ValueError(f"{self.name}: reverse_negatives is supported by moco and fame only "
                             "(this method's queue carries labels or video ids)")
        with torch.no_grad():
            return torch.cat([gather_no_grad(self.encode(self.encoder_k, reverse_time(x), groups, perm).z)
                              for x in views])

    def reversed_queries(self, views: list[torch.Tensor], groups: int, perm: torch.Tensor) -> torch.Tensor:
        """Online-encoder embeddings of ``views`` played backwards (with gradient): ``reverse_encoder="query"``."""
        if type(self).contrastive_terms is not MoCo.contrastive_terms:
            raise ValueError(f"{self.name}: reverse_negatives is supported by moco and fame only "
                             "(this method's queue carries labels or video ids)")
        return torch.cat([self.encode(self.encoder_q, reverse_time(x), groups, perm).z for x in views])

    def enqueue_keys(self, keys: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Push this step's keys (gathered over ranks; ``labels`` likewise, when the method uses them)."""
        self.queue.enqueue(keys)

    def dense_terms(self, pairs: list[tuple[Encoded, Encoded]]) -> torch.Tensor:
        """Mean dense loss over ``(query, key)`` pairs, against the dense queue as it was before this step."""
        queue = self.dense_queue().clone()
        losses = []
        for q, k in pairs:
            (q_feats, q_dense), (k_feats, k_dense) = q.dense_parts(), k.dense_parts()
            match = dense_correspondence(q_feats, k_feats)
            losses.append(dense_contrast_loss(q_dense, k_dense, queue, match, self.hparams.temperature))
        return torch.stack(losses).mean()

    def enqueue_dense(self, keys: list[Encoded]) -> None:
        """Push the pooled dense projections of this step's keys (gathered over ranks)."""
        self.dense_queue.enqueue(torch.cat([gather_no_grad(pooled_dense_keys(k.dense_parts()[1])) for k in keys]))

    def _pair_terms(self, pairs: list[tuple[Encoded, Encoded]], queue: torch.Tensor,
                    views: tuple[torch.Tensor, torch.Tensor], groups: int, orders: tuple[torch.Tensor, torch.Tensor],
                    step: int, g: torch.Generator, labels: torch.Tensor | None) -> list[dict[str, torch.Tensor]]:
        """The contrastive terms of each (query, key) pair, with time-reversed negatives when asked:
        reversed keys join the queue (``reverse_encoder="key"``), or reversed queries from the
        online encoder are extra negatives (``"query"``)."""
        hp, (x_a, x_b), (ident, perm_b) = self.hparams, views, orders
        if hp.reverse_negatives and hp.reverse_encoder == "key":
            queue = torch.cat([queue, self.reversed_keys([x_b, x_a] if hp.symmetric else [x_b], groups, perm_b)])
        elif hp.reverse_negatives:
            extras = self._reversed_extras(x_a, x_b, groups, ident)
            return [{"loss": moco_loss_extra_negatives(q.z, k.z, queue, hp.temperature, extra=extra,
                                                       batch_keys=hp.batch_negatives)}
                    for (q, k), extra in zip(pairs, extras)]
        return [self.contrastive_terms(q.z, k.z, queue, step=step, generator=g, labels=labels) for q, k in pairs]

    def _reversed_extras(self, x_a: torch.Tensor, x_b: torch.Tensor, groups: int,
                         ident: torch.Tensor) -> list[torch.Tensor]:
        """The online encoder's reversed clips for each pair (the pairs are (a, b), then (b, a))."""
        if self.hparams.reversed_views == "key":
            return [self.reversed_queries([x], groups, ident) for x in ([x_b, x_a] if self.hparams.symmetric else [x_b])]
        extra = self.reversed_queries([x_a, x_b] if self.hparams.symmetric else [x_a], groups, ident)
        return [extra, extra] if self.hparams.symmetric else [extra]

    def training_step(
        self, clips: torch.Tensor, step: int, labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``B x 2 x 3 x T x S x S`` in [0, 1] -> ``{"loss", ...}``; updates key encoder and queues."""
        self.check_clips(clips)
        g = self.generator(step)
        b = clips.shape[0]
        groups = self._groups(b)
        x_a = self.query_view(clips[:, 0], g)
        x_b = self.augment(clips[:, 1], g)
        ident = torch.arange(b)
        perm_a, perm_b = torch.randperm(b, generator=g), torch.randperm(b, generator=g)
        q_a = self.encode(self.encoder_q, x_a, groups, ident)
        with torch.no_grad():
            # MoCo updates the key encoder before computing this step's keys
            momentum_update(self.encoder_q, self.encoder_k, self.hparams.momentum)
            k_b = self.encode(self.encoder_k, x_b, groups, perm_b)
        queue = self.queue().clone()  # enqueue below writes the buffer in place
        pairs = [(q_a, k_b)]
        if self.hparams.symmetric:
            q_b = self.encode(self.encoder_q, x_b, groups, ident)
            with torch.no_grad():
                k_a = self.encode(self.encoder_k, x_a, groups, perm_a)
            pairs.append((q_b, k_a))
        terms = self._pair_terms(pairs, queue, (x_a, x_b), groups, (ident, perm_b), step, g, labels)
        out = {name: torch.stack([t[name] for t in terms]).mean() for name in terms[0]}
        if self.uses_dense:
            out["loss_global"] = out["loss"]
            out["loss_dense"] = self.dense_terms(pairs)
            out["loss"] = out["loss"] + self.hparams.dense_weight * out["loss_dense"]
            self.enqueue_dense([k for _, k in pairs])
        gathered_labels = None if labels is None else gather_no_grad(labels)
        for _, k in pairs:  # both key sets when symmetric
            self.enqueue_keys(gather_no_grad(k.z), gathered_labels)
        with torch.no_grad():
            out["pos_sim"] = (q_a.z * k_b.z).sum(dim=1).mean()
        return out

