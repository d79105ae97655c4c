"""TCLR: temporal contrastive learning with a global clip and the local clips tiling it.

Dave et al. 2022, "TCLR: Temporal Contrastive Learning for Video Representation" (CVIU).
Views (:class:`~training.methods.views.GlobalLocalClips`): one global sparse clip and 4 dense
local clips tiling its span, two augmentations of each (10 clips per video). Embeddings
(official ``mlp.py``): the backbone feature map is pooled over space; its time-pooled vector
goes through the projection head (instance term for global clips, all terms for local clips),
and for the global clip each of the N=4 temporal positions goes through the same head
separately (the "local sparse" slices of the global-local term). A backbone whose feature map
has a temporal length other than 4 (anything but ``r3d_18_tclr`` on 16 frames) is adaptively
average-pooled to 4 positions along time (repeating positions when it has fewer).
Loss: :func:`training.losses.tclr.tclr_loss` (``weighting="paper"`` or ``"official"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from training.losses.nt_xent import nt_xent_extra_negatives
from training.losses.tclr import tclr_loss_terms
from training.methods.base import CommonHparams, Method
from training.methods.heads import MLPHead
from training.methods.registry import register_method
from training.methods.reversal import reverse_time
from training.methods.views import GlobalLocalClips

WEIGHTINGS = ("paper", "official")


@dataclass(frozen=True)
class TCLRHparams(CommonHparams):
    """TCLR defaults (official ``parameters.py``): temperature 0.1, 4 temporal positions.

    Attributes:
        num_local: N, local clips per global clip and temporal slices of its feature map (4).
        global_step: frame step of the global clip (4: 16 frames span 64).
        weighting: ``"paper"`` (L_IC + L_LL + L_GL, each a mean) or ``"official"`` (the code's
            sums, with the extra local instance term).
        brightness, contrast, saturation, hue, grayscale_p, blur_p: TCLR's colour ranges are
            ``U(0.75, 1.25)`` for brightness / contrast / saturation and hue +-0.1, no blur.
            (Its random erasing, channel drop and BGR input are not reproduced.)
        reverse_negatives: the instance term (``ic``) also contrasts each global clip with
            every global clip played backwards (:mod:`training.methods.reversal`); off in the
            paper.
    """

    temperature: float = 0.1
    num_local: int = 4
    global_step: int = 4
    weighting: str = "paper"
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    blur_p: float = 0.0
    reverse_negatives: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_local < 2:
            raise ValueError(f"num_local must be >= 2, got {self.num_local!r}")
        if self.global_step < 1:
            raise ValueError(f"global_step must be >= 1, got {self.global_step!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")


@register_method("tclr")
class TCLR(Method[TCLRHparams]):
    """TCLR: 1 global + 4 local clips x 2 augmentations, instance + local-local + global-local terms (T=0.1)."""

    Hparams: ClassVar[type[CommonHparams]] = TCLRHparams
    optim_defaults: ClassVar[dict[str, Any]] = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-9}

    def __init__(self, *, backbone, spec, hparams: TCLRHparams, seed: int = 0) -> None:
        super().__init__(backbone=backbone, spec=spec, hparams=hparams, seed=seed)
        d = self.embed_dim
        self.head = MLPHead(d, d, hparams.proj_dim, hidden_bn=True, out_bn=True, normalize=True)
        self.num_views = 2 * (1 + hparams.num_local)

    @property
    def views(self) -> GlobalLocalClips:
        return GlobalLocalClips(self.spec, self.hparams.global_step, self.hparams.num_local, copies=2)

    def _time_map(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x T x S x S`` -> ``B x D x N`` feature map pooled over space, N positions."""
        f = self.backbone.forward_features(x).mean(dim=(3, 4))
        if f.shape[2] != self.hparams.num_local:
            f = F.adaptive_avg_pool1d(f, self.hparams.num_local)
        return f

    def training_step(self, clips: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """``B x 10 x 3 x T x S x S`` in [0, 1] (``[g, g, l0, l0, ..., l3, l3]``) -> loss and terms."""
        self.check_clips(clips)
        g = self.generator(step)
        n = self.hparams.num_local
        # one forward per view, as the official loop does: BN statistics per view
        globals_, slices = [], []
        for a in range(2):
            fmap = self._time_map(self.augment(clips[:, a], g))
            globals_.append(self.head(fmap.mean(dim=2)))
            slices.append(torch.stack([self.head(fmap[:, :, t]) for t in range(n)], dim=1))
        locals_: list[list[torch.Tensor]] = [[], []]
        for t in range(n):
            for a in range(2):
                fmap = self._time_map(self.augment(clips[:, 2 + 2 * t + a], g))
                locals_[a].append(self.head(fmap.mean(dim=2)))
        local_a, local_b = torch.stack(locals_[0], dim=1), torch.stack(locals_[1], dim=1)
        terms = tclr_loss_terms(
            globals_[0], globals_[1], slices[0], slices[1], local_a, local_b,
            self.hparams.temperature, self.hparams.weighting,
        )
        if self.hparams.reverse_negatives:
            backwards = self.head(self._time_map(reverse_time(self.augment(clips[:, 0], g))).mean(dim=2))
            terms["ic"] = nt_xent_extra_negatives(globals_[0], globals_[1], backwards, self.hparams.temperature)
        out = {"loss": torch.stack(list(terms.values())).sum()}
        out.update({f"loss_{k}": v.detach() for k, v in terms.items()})
        return out
