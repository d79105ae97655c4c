"""SimCLR on video clips: two random clips of a video are positives (Chen et al. 2020,
"A Simple Framework for Contrastive Learning of Visual Representations"; on video as CVRL,
Qian et al. 2021, with temporally distinct clips).

Optionally (``background_merge``, off by default) the first view's foreground is pasted onto
another batch item's background before colour augmentation, as FAME does for its query view
(:mod:`training.augment.fame`), so the positives share motion but not background."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from training.augment.fame import HUE_UNITS, FAMEAugment
from training.distributed import gather_with_grad
from training.losses.info_nce import info_nce_loss
from training.losses.nt_xent import nt_xent_extra_negatives
from training.methods.base import CommonHparams, Method
from training.methods.heads import MLPHead
from training.methods.registry import register_method
from training.methods.reversal import reverse_time
from training.methods.views import DistinctClips


@dataclass(frozen=True)
class SimCLRHparams(CommonHparams):
    """SimCLR: NT-Xent at temperature 0.1, head ``D -> D (BN, ReLU) -> 128``.

    Attributes:
        reverse_negatives: add each video's first view played backwards as a negative of every
            row (:mod:`training.methods.reversal`); off in the paper.
        background_merge: FAME's foreground-background merging of the first view (off in the
            paper): a positive pair then shares the motion but not the background, which
            teaches background invariance where backgrounds would otherwise be a shortcut.
        merge_beta: foreground fraction of the merge mask (FAME's beta, 0.5).
        merge_hue_units: ``"paper"`` or ``"official"`` (see ``fame_foreground_mask``).
        merge_both_views: also merge the second view, with its own donors: the pair then shares
            only the masked region (the foreground and what the mask keeps around it), not the
            rest of its background as with the first view alone.
    """

    temperature: float = 0.1
    reverse_negatives: bool = False
    background_merge: bool = False
    merge_beta: float = 0.5
    merge_hue_units: str = "paper"
    merge_both_views: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.merge_beta <= 1.0:
            raise ValueError(f"merge_beta must be in (0, 1], got {self.merge_beta!r}")
        if self.merge_hue_units not in HUE_UNITS:
            raise ValueError(f"merge_hue_units must be one of {HUE_UNITS}, got {self.merge_hue_units!r}")
        if self.merge_both_views and not self.background_merge:
            raise ValueError("merge_both_views needs background_merge=true")


@register_method("simclr")
class SimCLR(Method[SimCLRHparams]):
    """SimCLR: 2 distinct clips per video, MLP head D->D->128, NT-Xent (T=0.1), negatives from all ranks."""

    Hparams: ClassVar[type[CommonHparams]] = SimCLRHparams
    # The paper's LARS is not implemented; SGD with momentum at MoCo's settings instead.
    optim_defaults: ClassVar[dict[str, Any]] = {"optimizer": "sgd", "lr": 0.03, "weight_decay": 1e-4}

    def __init__(self, *, backbone, spec, hparams: SimCLRHparams, seed: int = 0) -> None:
        super().__init__(backbone=backbone, spec=spec, hparams=hparams, seed=seed)
        d = self.embed_dim
        self.head = MLPHead(d, d, hparams.proj_dim, hidden_bn=True)
        self.fame = FAMEAugment(beta=hparams.merge_beta, hue_units=hparams.merge_hue_units) if hparams.background_merge else None

    @property
    def views(self) -> DistinctClips:
        return DistinctClips(self.spec, 2)

    def first_view(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Colour-augmented, normalised first view; with ``background_merge`` merged first (as FAME's query)."""
        return self._view(x, g, merge=self.fame is not None)

    def second_view(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Colour-augmented, normalised second view; merged too with ``merge_both_views``."""
        return self._view(x, g, merge=self.hparams.merge_both_views)

    def _view(self, x: torch.Tensor, g: torch.Generator, *, merge: bool) -> torch.Tensor:
        if merge and self.fame is not None:
            # the donor draw comes before colour augmentation so the option off leaves the stream unchanged
            x = self.fame(x, generator=g)
        return self.augment(x, g)

    def training_step(self, clips: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """``B x 2 x 3 x T x S x S`` in [0, 1] -> ``{"loss"}``."""
        self.check_clips(clips)
        g = self.generator(step)
        b = clips.shape[0]
        views = [self.first_view(clips[:, 0], g), self.second_view(clips[:, 1], g)]
        if self.hparams.reverse_negatives:
            views.append(reverse_time(views[0]))
        # one forward for all views: BN sees the 2B clips, as in SimCLR
        z = F.normalize(self.head(self.backbone(torch.cat(views))), dim=1)
        z1, z2 = gather_with_grad(z[:b]), gather_with_grad(z[b : 2 * b])
        if self.hparams.reverse_negatives:
            loss = nt_xent_extra_negatives(z1, z2, gather_with_grad(z[2 * b :]), self.hparams.temperature)
        else:
            loss = info_nce_loss(z1, z2, self.hparams.temperature)
        return {"loss": loss}
