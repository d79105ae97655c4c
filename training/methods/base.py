"""The contract every training method follows, and what they share.

A method is an ``nn.Module`` holding everything that is trained or carried between steps
(backbone, heads, momentum encoder, key queue), so ``state_dict()`` is its whole state and a
resumed run continues exactly. It defines:

- ``Hparams``: a dataclass of its hyperparameters with the paper's defaults (validated);
- ``views``: a picklable ``views(timestamps, rng) -> list[ClipWindow]`` (which clips);
- ``batch_keys``: the names of the per-item inputs ``training_step`` takes besides the clips
  (``("labels",)``, ``("pairs",)``, ...), and ``prepare(config, items, classes)``, which builds
  them from the data set before the method exists (:class:`Prepared`: one tensor row per item,
  plus hyperparameters the data decides). The loop knows no method: it indexes those tensors
  with each batch's item indices and calls ``method({"clips": ..., **inputs}, step)``;
- ``training_step(clips, step, **inputs) -> dict``: ``clips`` are ``B x V x 3 x T x S x S`` float RGB in
  ``[0, 1]`` (crops and flips done by the data set); colour augmentation and mean/std
  normalisation happen here, on the device. Returns ``{"loss": scalar tensor, ...}`` with
  further scalars to log. ``forward(batch, step)`` unpacks the dict batch into
  ``training_step`` (so DDP can wrap the method);
- ``optim_defaults``: optimiser, lr and weight decay the paper trained with;
- ``backbone``: the network exported by ``vcl-export``.

Randomness inside a step (colour parameters, shuffles, FAME donors) comes from a generator
seeded by ``(seed, step, rank)`` alone, so a resumed run draws what the uninterrupted run drew.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Sequence, TypeVar

import numpy as np
import torch
from torch import nn

from training.augment import ColorAugment
from training.data.dataset import normalize_clips
from training.distributed import get_rank
from training.errors import TrainError
from training.methods.views import ViewSampler
from training.models.registry import Backbone
from vcl_infer.clips.spec import ClipSpec

if TYPE_CHECKING:
    from training.config import TrainConfig
    from training.data.layouts import VideoItem


@dataclass(frozen=True)
class CommonHparams:
    """Hyperparameters every method has.

    Attributes:
        temperature: softmax temperature of the contrastive loss.
        proj_dim: output size of the projection head (128 in all four papers).
        jitter_p, brightness, contrast, saturation, hue, grayscale_p, blur_p: colour
            augmentation (:class:`training.augment.ColorAugment`), MoCo v2 values by default.
    """

    temperature: float = 0.1
    proj_dim: int = 128
    # the colour augmentation's own defaults (MoCo v2 values), overridable per method
    jitter_p: float = ColorAugment.jitter_p
    brightness: float = ColorAugment.brightness
    contrast: float = ColorAugment.contrast
    saturation: float = ColorAugment.saturation
    hue: float = ColorAugment.hue
    grayscale_p: float = ColorAugment.grayscale_p
    blur_p: float = ColorAugment.blur_p

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        if self.proj_dim < 1:
            raise ValueError(f"proj_dim must be >= 1, got {self.proj_dim!r}")
        self.color()  # validates the augmentation fields

    def color(self) -> ColorAugment:
        return ColorAugment(
            jitter_p=self.jitter_p,
            brightness=self.brightness,
            contrast=self.contrast,
            saturation=self.saturation,
            hue=self.hue,
            grayscale_p=self.grayscale_p,
            blur_p=self.blur_p,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def step_seed(seed: int, step: int, rank: int = 0, stream: int = 0) -> int:
    """A 63-bit seed that depends on ``(seed, step, rank, stream)`` only."""
    return int(np.random.SeedSequence([int(seed), int(step), int(rank), int(stream)]).generate_state(1, np.uint64)[0] >> 1)


H = TypeVar("H", bound=CommonHparams)


@dataclass
class Prepared:
    """What a method takes from the data set before it is built (see :meth:`Method.prepare`).

    Attributes:
        hparams: hyperparameters the data decides (``num_classes``, ``pair_dim``); a value the
            user set with ``--set`` wins.
        inputs: one tensor per name in ``batch_keys``, row ``i`` belonging to data set item ``i``;
            the loop passes a batch's rows to ``training_step`` under that name.
    """

    hparams: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)


def class_labels(method: str, items: Sequence[VideoItem], classes: Sequence[str] | None) -> Prepared:
    """``labels`` (each item's class id) and ``num_classes`` for the methods that learn from classes.

    Raises:
        TrainError: the layout has no classes, or an item has none.
    """
    if not classes or any(it.label < 0 for it in items):
        raise TrainError(f"method {method} needs labels: give a class-folder or UCF101/HMDB51 split layout")
    labels = torch.tensor([int(it.label) for it in items], dtype=torch.long)
    return Prepared(hparams={"num_classes": len(classes)}, inputs={"labels": labels})


class Method(nn.Module, Generic[H]):
    """Base class of the registered training methods (see the module docstring).

    Generic over its hyperparameter dataclass: ``class MoCo(Method[MoCoHparams])`` makes
    ``self.hparams.queue_size`` type-check.
    """

    name: ClassVar[str] = ""
    Hparams: ClassVar[type[CommonHparams]] = CommonHparams
    optim_defaults: ClassVar[dict[str, Any]] = {"optimizer": "sgd", "lr": 0.03, "weight_decay": 1e-4}
    num_views = 2
    batch_keys: ClassVar[tuple[str, ...]] = ()
    hparams: H

    @classmethod
    def prepare(cls, config: TrainConfig, items: Sequence[VideoItem], classes: Sequence[str] | None) -> Prepared:
        """Build the per-item inputs named by ``batch_keys`` (and data-decided hyperparameters).

        Args:
            config: the run (``config.method_args`` holds the user's ``--set`` values).
            items: the data set's videos, in data set index order.
            classes: the layout's class names (None or empty when it has none).

        Raises:
            TrainError: the data cannot feed this method (no labels, no paired features, ...).
        """
        return Prepared()

    def __init__(self, *, backbone: Backbone, spec: ClipSpec, hparams: H, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(hparams, self.Hparams):
            raise TypeError(f"{type(self).__name__} needs {self.Hparams.__name__}, got {type(hparams).__name__}")
        self.backbone = backbone
        self.spec = spec
        self.hparams = hparams
        self.seed = int(seed)
        self.color = hparams.color()

    @property
    def embed_dim(self) -> int:
        return int(self.backbone.embed_dim)

    @property
    def views(self) -> ViewSampler:
        """Picklable ``views(timestamps, rng) -> list[ClipWindow]`` for the data set."""
        raise NotImplementedError

    def generator(self, step: int, stream: int = 0) -> torch.Generator:
        """CPU generator for the randomness of ``step`` on this rank."""
        return torch.Generator().manual_seed(step_seed(self.seed, step, get_rank(), stream))

    def augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Colour-augment then normalise ``B x 3 x T x S x S`` clips in [0, 1]."""
        return normalize_clips(self.color(x, generator), self.spec)

    def check_clips(self, clips: torch.Tensor) -> None:
        expected = (self.num_views, 3, self.spec.frames_per_clip, self.spec.crop_size, self.spec.crop_size)
        if clips.ndim != 6 or tuple(clips.shape[1:]) != expected:
            raise ValueError(f"{self.name}: expected B x {' x '.join(map(str, expected))} clips, got {tuple(clips.shape)}")

    def training_step(self, clips: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """``training_step(batch["clips"], step, **{key: batch[key] for key in batch_keys})``."""
        return self.training_step(batch["clips"], step, **{key: batch[key] for key in self.batch_keys})
