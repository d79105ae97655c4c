"""Long/short view feature decomposition into stationary and non-stationary features.

Behrmann, Fayyaz, Gall, Noroozi 2021, "Long Short View Feature Decomposition via Contrastive
Video Representation Learning" (ICCV). No official code was found; details the paper's
abstract and Fig. 2 do not settle are marked [unverified].

Views (:class:`LongShortClips`): one long clip and ``K`` short clips that tile its span, all
``T`` frames. The backbone's pooled ``D``-dim feature is split by channel: the first ``D/2``
are the stationary features, the last ``D/2`` the non-stationary ones (the exported encoder
outputs either half or both: ``vcl-export --features``). Stationary: a projection head on the
stationary half; the long view and each short view of a video are positives (other videos are
negatives). Non-stationary: the short views' non-stationary halves, in time order, go through
a small temporal aggregator (concatenation -> MLP, or their mean) and then the non-stationary
projection head, which must match the long view's (other videos are negatives). Both terms are
NT-Xent (:mod:`training.losses.longshort`).

[unverified] The channel split (rather than two heads on a shared feature), the aggregator
(the paper's may be a different network), ``K = 4``, the temperature 0.1 and equal term
weights are this implementation's choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.distributed import gather_with_grad
from training.losses.longshort import longshort_loss_terms
from training.methods.base import CommonHparams, Method
from training.methods.heads import MLPHead
from training.methods.registry import register_method
from training.methods.views import window_at
from vcl_infer.clips.sampling import ClipWindow
from vcl_infer.clips.spec import ClipSpec

AGGREGATORS = ("mlp", "mean")
FEATURE_PARTS = ("all", "stationary", "non-stationary")


def feature_range(part: str, embed_dim: int) -> tuple[int, int]:
    """Channels ``[start, stop)`` of the backbone's pooled feature that form ``part``.

    ``"stationary"`` is the first half, ``"non-stationary"`` the second, ``"all"`` everything.
    """
    if part not in FEATURE_PARTS:
        raise ValueError(f"features must be one of {', '.join(FEATURE_PARTS)}; got {part!r}")
    half = int(embed_dim) // 2
    return {"all": (0, int(embed_dim)), "stationary": (0, half), "non-stationary": (half, int(embed_dim))}[part]


@dataclass(frozen=True)
class LongShortClips:
    """One long clip and ``num_short`` short clips tiling its span: ``[long, short_0, ...]``.

    With ``T = spec.frames_per_clip`` and ``s = spec.frame_step`` (1 for a ``target_fps``
    spec): short clip ``j`` takes ``T`` frames at step ``s`` from ``start + j T s`` (exactly
    the clips the exported encoder sees), and the long clip takes ``T`` frames at step
    ``num_short * s`` from ``start``, spanning all of them. ``start`` is uniform over the
    valid range; frames past the end follow ``spec.short_video``.
    """

    spec: ClipSpec
    num_short: int = 4

    def __call__(self, timestamps: np.ndarray, rng: np.random.Generator) -> list[ClipWindow]:
        ts = np.maximum.accumulate(np.asarray(timestamps, dtype=np.float64).reshape(-1))
        n, t, step = ts.size, self.spec.frames_per_clip, int(self.spec.frame_step or 1)
        span = self.num_short * t * step
        start = int(rng.integers(0, max(n - span, 0) + 1))
        offsets = [start + np.arange(t) * step * self.num_short]
        offsets += [start + j * t * step + np.arange(t) * step for j in range(self.num_short)]
        pad = (lambda o: o % n) if self.spec.short_video == "loop" else (lambda o: np.minimum(o, n - 1))
        return [window_at(ts, pad(o)) for o in offsets]


@dataclass(frozen=True)
class LongShortHparams(CommonHparams):
    """Long/short decomposition defaults [unverified: the paper's values could not be read].

    Attributes:
        temperature: NT-Xent temperature of both terms, 0.1.
        num_short: K, short clips per long clip (4); the long clip's frame step is K times the
            spec's.
        aggregator: ``"mlp"`` (the K non-stationary halves concatenated in time order ->
            ``Linear -> ReLU -> Linear``; order-aware) or ``"mean"`` (order-blind).
        stationary_weight, non_stationary_weight: term weights (1, 1).
    """

    temperature: float = 0.1
    num_short: int = 4
    aggregator: str = "mlp"
    stationary_weight: float = 1.0
    non_stationary_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_short < 2:
            raise ValueError(f"num_short must be >= 2, got {self.num_short!r}")
        if self.aggregator not in AGGREGATORS:
            raise ValueError(f"aggregator must be one of {AGGREGATORS}, got {self.aggregator!r}")
        for name in ("stationary_weight", "non_stationary_weight"):
            value = getattr(self, name)
            if not (value >= 0 and np.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


class ShortViewAggregator(nn.Module):
    """``B x K x C`` short-view features (time order) -> ``B x C``: MLP on the concatenation, or mean."""

    def __init__(self, dim: int, num_short: int, kind: str = "mlp") -> None:
        super().__init__()
        if kind not in AGGREGATORS:
            raise ValueError(f"aggregator must be one of {AGGREGATORS}, got {kind!r}")
        self.kind = kind
        self.net = (
            nn.Sequential(nn.Linear(num_short * dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))
            if kind == "mlp"
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1) if self.net is None else self.net(x.flatten(1))


@register_method("longshort")
class LongShort(Method[LongShortHparams]):
    """Long/short views: stationary (first D/2) and non-stationary (last D/2) features, NT-Xent (T=0.1)."""

    Hparams: ClassVar[type[CommonHparams]] = LongShortHparams
    # [unverified] the paper's optimiser; SimCLR-style SGD at MoCo's settings, as simclr here
    optim_defaults: ClassVar[dict[str, Any]] = {"optimizer": "sgd", "lr": 0.03, "weight_decay": 1e-4}

    def __init__(self, *, backbone, spec, hparams: LongShortHparams, seed: int = 0) -> None:
        super().__init__(backbone=backbone, spec=spec, hparams=hparams, seed=seed)
        d = self.embed_dim
        if d < 2 or d % 2:
            raise ValueError(f"longshort splits the backbone feature in halves: embed_dim must be even, got {d}")
        half, p = d // 2, hparams.proj_dim
        self.stationary_head = MLPHead(half, half, p, hidden_bn=True)
        self.non_stationary_head = MLPHead(half, half, p, hidden_bn=True)
        self.aggregator = ShortViewAggregator(half, hparams.num_short, hparams.aggregator)
        self.num_views = 1 + hparams.num_short

    @property
    def views(self) -> LongShortClips:
        return LongShortClips(self.spec, self.hparams.num_short)

    def training_step(self, clips: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """``B x (1 + K) x 3 x T x S x S`` (``[long, short_0, ..., short_{K-1}]``) -> loss and terms."""
        self.check_clips(clips)
        g = self.generator(step)
        b, k = clips.shape[0], self.hparams.num_short
        x = torch.cat([self.augment(clips[:, v], g) for v in range(self.num_views)])
        # one forward over all views: BN sees every clip of the batch, as in SimCLR
        h = self.backbone(x).view(1 + k, b, -1)
        lo, hi = feature_range("stationary", self.embed_dim), feature_range("non-stationary", self.embed_dim)
        stationary, non_stationary = h[..., lo[0] : lo[1]], h[..., hi[0] : hi[1]]
        z_s = F.normalize(self.stationary_head(stationary.flatten(0, 1)), dim=1).view(1 + k, b, -1)
        aggregated = self.aggregator(non_stationary[1:].transpose(0, 1))  # B x D/2
        z_n = F.normalize(self.non_stationary_head(torch.cat([non_stationary[0], aggregated])), dim=1)
        terms = longshort_loss_terms(
            gather_with_grad(z_s[0]),
            gather_with_grad(z_s[1:].transpose(0, 1).contiguous()),
            gather_with_grad(z_n[:b]),
            gather_with_grad(z_n[b:]),
            self.hparams.temperature,
        )
        weights = {"stationary": self.hparams.stationary_weight, "non_stationary": self.hparams.non_stationary_weight}
        out = {"loss": torch.stack([weights[name] * v for name, v in terms.items()]).sum()}
        out.update({f"loss_{name}": v.detach() for name, v in terms.items()})
        return out
