"""FAME: MoCo with foreground-background merging of the query clip.

Ding et al. 2022, "Motion-aware Contrastive Video Representation Learning via
Foreground-background Merging" (CVPR). The foreground of every first-view clip is pasted onto
the background of another clip of the (per-process) batch before colour augmentation and
normalisation, so the positive pair shares motion but not background. Training is symmetric
MoCo with temperature 0.1 (official ``train.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from training.augment.fame import HUE_UNITS, FAMEAugment
from training.methods.base import CommonHparams
from training.methods.moco import MoCo, MoCoHparams
from training.methods.registry import register_method


@dataclass(frozen=True)
class FAMEHparams(MoCoHparams):
    """FAME defaults (official code).

    Attributes:
        temperature: 0.1.
        queue_size: 2048, the official code's override for UCF101-size data (65536 on K400).
        symmetric: True (the official ``MoCo.forward`` is symmetric).
        beta: foreground fraction of the mask, 0.5.
        hue_units: ``"paper"`` or ``"official"`` (see ``fame_foreground_mask``).
    """

    temperature: float = 0.1
    queue_size: int = 2048
    symmetric: bool = True
    beta: float = 0.5
    hue_units: str = "paper"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.beta <= 1.0:
            raise ValueError(f"beta must be in (0, 1], got {self.beta!r}")
        if self.hue_units not in HUE_UNITS:
            raise ValueError(f"hue_units must be one of {HUE_UNITS}, got {self.hue_units!r}")


@register_method("fame")
class FAME(MoCo[FAMEHparams]):
    """FAME: symmetric MoCo (T=0.1, K=2048) with foreground-background merging of the query clip (beta=0.5)."""

    Hparams: ClassVar[type[CommonHparams]] = FAMEHparams
    optim_defaults: ClassVar[dict[str, Any]] = {"optimizer": "sgd", "lr": 0.01, "weight_decay": 1e-4}

    def __init__(self, *, backbone, spec, hparams: FAMEHparams, seed: int = 0) -> None:
        super().__init__(backbone=backbone, spec=spec, hparams=hparams, seed=seed)
        self.fame = FAMEAugment(beta=hparams.beta, hue_units=hparams.hue_units)

    def query_view(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """FAME (on [0, 1] RGB), then colour augmentation and normalisation."""
        return self.augment(self.fame(x, generator=g), g)
