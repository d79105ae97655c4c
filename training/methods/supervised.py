"""Supervised fine-tuning: cross-entropy on class labels through a linear classifier.

The fine-tuning protocol the TCLR (Dave et al. 2022) and FAME (Ding et al. 2022) papers
report next to linear evaluation: start from pretrained weights (``vcl-train --method
supervised --init CKPT``), train backbone and a linear classifier on the pooled features of
one random clip per video, with labels from a UCF101 / HMDB51 / class-folder layout.

Defaults follow TCLR's evaluation code (``linear_eval/train.py`` and ``parameters_BL.py``):
Adam, no weight decay. TCLR sets lr 1e-2 for its linear layer and lists 1e-4 / 1e-5 as the
alternatives for training the whole network; full fine-tuning here uses 1e-4. No colour
augmentation (random resized crop and flip from the data set only), dropout 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from training.methods.base import CommonHparams, Method, Prepared, class_labels
from training.methods.registry import register_method
from training.methods.views import DistinctClips


@dataclass(frozen=True)
class SupervisedHparams(CommonHparams):
    """Supervised fine-tuning hyperparameters.

    Attributes:
        num_classes: classifier outputs; 0 = take it from the data layout (the loop fills it).
        dropout: dropout before the classifier.
        label_smoothing: cross-entropy label smoothing.
        jitter_p, grayscale_p, blur_p: colour augmentation off by default (crop + flip only).
    """

    num_classes: int = 0
    dropout: float = 0.0
    label_smoothing: float = 0.0
    jitter_p: float = 0.0
    grayscale_p: float = 0.0
    blur_p: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")


@register_method("supervised")
class Supervised(Method[SupervisedHparams]):
    """Supervised fine-tuning: 1 random clip per video, linear classifier, cross-entropy (needs labels)."""

    Hparams: ClassVar[type[CommonHparams]] = SupervisedHparams
    optim_defaults: ClassVar[dict[str, Any]] = {"optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0}
    num_views = 1
    batch_keys: ClassVar[tuple[str, ...]] = ("labels",)

    @classmethod
    def prepare(cls, config: Any, items: Sequence[Any], classes: Sequence[str] | None) -> Prepared:
        """Each item's class id as ``labels``; ``num_classes`` from the layout."""
        return class_labels(cls.name, items, classes)
    """The loop passes the batch's class ids as the third argument of ``training_step``."""

    def __init__(self, *, backbone, spec, hparams: SupervisedHparams, seed: int = 0) -> None:
        super().__init__(backbone=backbone, spec=spec, hparams=hparams, seed=seed)
        if hparams.num_classes < 1:
            raise ValueError("supervised: num_classes is unknown; train on a labelled layout or set num_classes=N")
        self.dropout = nn.Dropout(hparams.dropout)
        self.classifier = nn.Linear(self.embed_dim, hparams.num_classes)

    @property
    def views(self) -> DistinctClips:
        return DistinctClips(self.spec, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``B x 3 x T x S x S`` clips -> ``B x num_classes`` logits."""
        return self.classifier(self.dropout(self.backbone(x)))

    def training_step(
        self, clips: torch.Tensor, step: int, labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``B x 1 x 3 x T x S x S`` in [0, 1] and ``B`` class ids -> ``{"loss", "acc"}``."""
        self.check_clips(clips)
        if labels is None:
            raise ValueError("supervised: training_step needs labels")
        labels = labels.to(clips.device).long()
        if labels.shape != (clips.shape[0],):
            raise ValueError(f"supervised: expected {clips.shape[0]} labels, got shape {tuple(labels.shape)}")
        if bool((labels < 0).any()) or bool((labels >= self.hparams.num_classes).any()):
            raise ValueError(f"supervised: labels must be in [0, {self.hparams.num_classes}); "
                             "train on a labelled layout (class folders or split files)")
        x = self.augment(clips[:, 0], self.generator(step))
        logits = self.logits(x)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        acc = (logits.detach().argmax(1) == labels).float().mean()
        return {"loss": loss, "acc": acc}

