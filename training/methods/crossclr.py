"""CrossCLR on video clips paired with a second modality's precomputed features.

Zolfaghari et al. 2021, "CrossCLR: Cross-modal Contrastive Learning For Multi-modal Video
Representations" (ICCV); loss in :mod:`training.losses.crossclr`. One random clip per video
goes through the backbone and an MLP head; the video's paired vector (text, audio, ... features
computed beforehand) goes through a second MLP head; CrossCLR contrasts the two, with
intra-modality negatives from the batch and a queue of earlier batches, influential samples
pruned and samples weighted by their connectivity in the *input* feature space. The input
features are the paired vectors themselves and, for video, the backbone's pooled features
(detached; the video analogue of the precomputed clip features the official COOT setup feeds
its embedding network). The exported network is the video backbone.

Paired features: ``vcl-train --method crossclr --set pair_features=FILE.npz``. The ``.npz``
maps every training video's path relative to ``--data`` (POSIX separators, e.g.
``videos/Class/v_Class_g01_c01.mp4`` for a ``vcl-synth`` set) to a 1-D float array, all of one
length; ``CrossCLR.prepare`` reads it (:func:`training.data.dataset.paired_features`) and fills
``pair_dim``; the loop passes each batch's vectors as ``training_step(clips, step, pairs=...)``.

Defaults: the official COOT/YouCook2 config (``yc2_100m_coot.yaml``): T 0.03, lambda 0.8,
threshold 0.9, kappa 0.0035, queue 3000, embedding 384, RAdam lr 9e-4 without weight decay
(Adam here). The paper trains on precomputed features only, so it has no video augmentation;
the MoCo v2 colour augmentation of the other methods is kept for the clips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F

from training.distributed import gather_no_grad
from training.errors import TrainError
from training.losses.crossclr import VARIANTS, crossclr_loss
from training.methods.base import CommonHparams, Method, Prepared, step_seed
from training.methods.heads import MLPHead
from training.methods.queue import KeyQueue
from training.methods.registry import register_method
from training.methods.views import DistinctClips


@dataclass(frozen=True)
class CrossCLRHparams(CommonHparams):
    """CrossCLR hyperparameters (official COOT config values).

    Attributes:
        temperature: ``T``, 0.03.
        proj_dim: joint embedding size, 384 (COOT ``output_dim``).
        negative_weight: ``lambda`` on the intra-modality negatives, 0.8.
        score_threshold: influential (pruned) when connectivity / max >= this, 0.9.
        weight_temperature: ``kappa`` of the sample weights, 0.0035.
        variant: ``"paper"`` or ``"official"`` arithmetic (:mod:`training.losses.crossclr`).
        queue_size: earlier samples kept as intra-modality candidates, 3000 (0: batch only).
        pair_features: the ``.npz`` of paired vectors (module docstring); read by the loop.
        pair_dim: length of a paired vector; 0 = from ``pair_features`` (the loop fills it).
        pair_hidden_dim: hidden width of the paired-feature MLP head, 512.
    """

    temperature: float = 0.03
    proj_dim: int = 384
    negative_weight: float = 0.8
    score_threshold: float = 0.9
    weight_temperature: float = 0.0035
    variant: str = "paper"
    queue_size: int = 3000
    pair_features: str = ""
    pair_dim: int = 0
    pair_hidden_dim: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.negative_weight >= 0:
            raise ValueError(f"negative_weight must be >= 0, got {self.negative_weight!r}")
        if not self.score_threshold > 0:
            raise ValueError(f"score_threshold must be > 0, got {self.score_threshold!r}")
        if not self.weight_temperature > 0:
            raise ValueError(f"weight_temperature must be > 0, got {self.weight_temperature!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        for name in ("queue_size", "pair_dim"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.pair_hidden_dim < 1:
            raise ValueError(f"pair_hidden_dim must be >= 1, got {self.pair_hidden_dim!r}")


@register_method("crossclr")
class CrossCLR(Method[CrossCLRHparams]):
    """CrossCLR: video clip vs paired features (--set pair_features=FILE.npz), intra negatives, pruning, T=0.03."""

    Hparams: ClassVar[type[CommonHparams]] = CrossCLRHparams
    optim_defaults: ClassVar[dict[str, Any]] = {"optimizer": "adam", "lr": 9e-4, "weight_decay": 0.0}
    num_views = 1
    batch_keys: ClassVar[tuple[str, ...]] = ("pairs",)
    """Each video's paired vector, ``training_step(..., pairs=B x P)``."""

    @classmethod
    def prepare(cls, config: Any, items: Sequence[Any], classes: Sequence[str] | None) -> Prepared:
        """Read ``--set pair_features=FILE.npz``: ``pairs`` (one row per item) and ``pair_dim``."""
        from training.data.dataset import paired_features

        path = config.method_args.get("pair_features")
        if not path:
            raise TrainError(f"method {cls.name} needs paired features: --set pair_features=FILE.npz "
                             "(keys: video paths relative to --data, values: 1-D float arrays)")
        try:
            pairs = paired_features(path, items, config.data)
        except (OSError, ValueError) as exc:
            raise TrainError(f"pair_features: {exc}") from exc
        return Prepared(hparams={"pair_dim": int(pairs.shape[1])}, inputs={"pairs": pairs})

    filled: torch.Tensor

    def __init__(self, *, backbone, spec, hparams: CrossCLRHparams, seed: int = 0) -> None:
        super().__init__(backbone=backbone, spec=spec, hparams=hparams, seed=seed)
        p, d, k = hparams.pair_dim, self.embed_dim, hparams.queue_size
        if p < 1:
            raise ValueError("crossclr: pair_dim is unknown; give --set pair_features=FILE.npz (or pair_dim=N)")
        self.video_head = MLPHead(d, d, hparams.proj_dim)
        self.pair_head = MLPHead(p, hparams.pair_hidden_dim, hparams.proj_dim)
        if k:
            init = torch.Generator().manual_seed(step_seed(seed, 0, 0, stream=1))
            # four rings written in lockstep; only the first ``filled`` rows are ever read
            self.queue_video = KeyQueue(k, hparams.proj_dim, generator=init)
            self.queue_pair = KeyQueue(k, hparams.proj_dim, generator=init)
            self.queue_video_inputs = KeyQueue(k, d, generator=init)
            self.queue_pair_inputs = KeyQueue(k, p, generator=init)
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @property
    def views(self) -> DistinctClips:
        return DistinctClips(self.spec, 1)

    def _queues(self) -> dict[str, torch.Tensor]:
        n = int(self.filled)
        if not self.hparams.queue_size or n == 0:
            return {}
        return {"queue_x": self.queue_video()[:n].clone(), "queue_y": self.queue_pair()[:n].clone(),
                "queue_x_inputs": self.queue_video_inputs()[:n].clone(),
                "queue_y_inputs": self.queue_pair_inputs()[:n].clone()}

    @torch.no_grad()
    def _enqueue(self, v: torch.Tensor, t: torch.Tensor, v_in: torch.Tensor, t_in: torch.Tensor) -> None:
        if not self.hparams.queue_size:
            return
        for queue, x in ((self.queue_video, v), (self.queue_pair, t), (self.queue_video_inputs, v_in),
                         (self.queue_pair_inputs, t_in)):
            queue.enqueue(gather_no_grad(x.detach().float()))
        self.filled.fill_(min(int(self.filled) + gather_no_grad(v).shape[0], self.hparams.queue_size))

    def training_step(
        self, clips: torch.Tensor, step: int, pairs: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``B x 1 x 3 x T x S x S`` in [0, 1] and ``B x P`` paired vectors -> ``{"loss", "pos_sim"}``."""
        self.check_clips(clips)
        if pairs is None:
            raise ValueError("crossclr: training_step needs the paired features (pairs=B x P)")
        pairs = pairs.to(clips.device).float()
        if pairs.shape != (clips.shape[0], self.hparams.pair_dim):
            raise ValueError(f"crossclr: expected {clips.shape[0]} x {self.hparams.pair_dim} pairs, "
                             f"got {tuple(pairs.shape)}")
        h = self.hparams
        feats = self.backbone(self.augment(clips[:, 0], self.generator(step)))  # B x D pooled
        v, t = self.video_head(feats), self.pair_head(pairs)
        queues = self._queues()
        loss = crossclr_loss(v, t, feats.detach(), pairs, temperature=h.temperature,
                             negative_weight=h.negative_weight, score_threshold=h.score_threshold,
                             weight_temperature=h.weight_temperature, variant=h.variant, **queues)
        v_n, t_n = F.normalize(v.detach(), dim=1), F.normalize(t.detach(), dim=1)
        self._enqueue(v_n, t_n, feats, pairs)
        return {"loss": loss, "pos_sim": (v_n * t_n).sum(dim=1).mean()}

