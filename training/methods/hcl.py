"""HCL on video clips: SimCLR views with the debiased hard-negative loss.

Robinson et al. 2021, "Contrastive Learning with Hard Negative Samples" (ICLR). Official code
``joshr17/HCL`` @ ``7b4647fa``: ``image/main.py`` (loss, Adam lr 1e-3 wd 1e-6, defaults
temperature 0.5, tau_plus 0.1, beta 1.0) and ``image/model.py`` (head
``Linear(2048, 512, bias=False) - BN - ReLU - Linear(512, 128)``). The paper trains a ResNet-50
on images; here the two views are two temporally distinct clips of a video, as in
:mod:`training.methods.simclr`. The official ``--anneal down`` schedule of beta is not provided.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from training.distributed import gather_with_grad
from training.losses.hcl import check_hcl_hparams, hcl_loss
from training.methods.base import CommonHparams, Method
from training.methods.registry import register_method
from training.methods.views import DistinctClips


@dataclass(frozen=True)
class HCLHparams(CommonHparams):
    """HCL defaults (official ``image/main.py``).

    Attributes:
        temperature: 0.5.
        tau_plus: class prior ``tau+`` of the debiasing term, in ``[0, 1)``; 0.1.
        beta: hardness concentration ``>= 0``; 1.0 (README table: 0, 0.5, 1, 2, 6; 1 best).
        estimator: ``"hard"`` (HCL) or ``"easy"`` (plain NT-Xent, the SimCLR baseline).
        hidden_dim: hidden width of the projection head, 512 (official ``model.py``).
    """

    temperature: float = 0.5
    tau_plus: float = 0.1
    beta: float = 1.0
    estimator: str = "hard"
    hidden_dim: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        check_hcl_hparams(self.beta, self.tau_plus, self.estimator)
        if self.hidden_dim < 1:
            raise ValueError(f"hidden_dim must be >= 1, got {self.hidden_dim!r}")


def hcl_head(in_dim: int, hidden_dim: int = 512, out_dim: int = 128) -> nn.Sequential:
    """The official HCL head ``Linear(D, H, bias=False) -> BN -> ReLU -> Linear(H, out)``.

    Shapes: ``B x D -> B x out`` (not normalised; the loss normalises).
    """
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )


@register_method("hcl")
class HCL(Method[HCLHparams]):
    """HCL: 2 distinct clips per video, head D->512->128, debiased hard-negative loss (T=0.5, tau+=0.1, beta=1)."""

    Hparams: ClassVar[type[CommonHparams]] = HCLHparams
    optim_defaults: ClassVar[dict[str, Any]] = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-6}

    def __init__(self, *, backbone, spec, hparams: HCLHparams, seed: int = 0) -> None:
        super().__init__(backbone=backbone, spec=spec, hparams=hparams, seed=seed)
        self.head = hcl_head(self.embed_dim, hparams.hidden_dim, hparams.proj_dim)

    @property
    def views(self) -> DistinctClips:
        return DistinctClips(self.spec, 2)

    def training_step(self, clips: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """``B x 2 x 3 x T x S x S`` in [0, 1] -> ``{"loss", "pos_sim"}``."""
        self.check_clips(clips)
        g = self.generator(step)
        # One forward per view, as the official ``train`` (BatchNorm statistics per view);
        # SimCLR here runs both views through one forward instead.
        z = [self.head(self.backbone(self.augment(clips[:, v], g))) for v in (0, 1)]
        z1, z2 = gather_with_grad(z[0]), gather_with_grad(z[1])
        h = self.hparams
        loss = hcl_loss(z1, z2, h.temperature, h.tau_plus, h.beta, h.estimator)
        with torch.no_grad():
            pos = F.cosine_similarity(z1.float(), z2.float(), dim=1).mean()
        return {"loss": loss, "pos_sim": pos}
