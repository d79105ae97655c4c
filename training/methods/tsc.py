"""KCL and TSC on video clips: supervised MoCo with a labelled queue, for long-tailed data.

Li et al. 2022, "Targeted Supervised Contrastive Learning for Long-Tailed Recognition" (CVPR);
official ``LTH14/targeted-supcon`` (``moco/builder.py::KCL``, ``main_moco_supcon_imba.py``).
Everything but the loss is :class:`~training.methods.moco.MoCo` (two clips, momentum key
encoder, shuffle-BN, optional dense term); the queue also remembers the class of every key
(``queue_labels``), and the loss is :mod:`training.losses.tsc`. Both need class labels: the
loop passes them (``uses_labels``) and fills ``num_classes`` from the data layout. Train on a
long-tailed split (:mod:`training.data.long_tail`, ``vcl-synth --long-tail RHO``).

Two-phase schedule (official, not the paper): with ``--targeted`` the official script trains
``epochs // 2`` epochs of plain KCL, then re-creates the SGD optimiser and trains the rest with
targets under a fresh cosine schedule. Here ``target_start_step`` (default 0: targets from
the start, as the paper describes TSC) switches the targets on at an optimiser step: set it to
``(epochs // 2) x steps_per_epoch`` to get the official phases. The optimiser and LR schedule
are NOT restarted at the switch (one schedule spans the run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence, TypeVar

import torch
import torch.nn.functional as F

from training.distributed import gather_no_grad
from training.losses.tsc import (
    NORMALIZATIONS,
    assign_targets,
    generate_targets,
    sample_class_positives,
    tsc_loss_terms,
    update_class_centres,
)
from training.methods.base import CommonHparams, Prepared, class_labels, step_seed
from training.methods.moco import MoCo, MoCoHparams
from training.methods.registry import register_method
from training.models.registry import Backbone
from vcl_infer.clips.spec import ClipSpec


@dataclass(frozen=True)
class KCLHparams(MoCoHparams):
    """KCL defaults (official ``main_moco_supcon_imba.py`` and README command).

    Attributes:
        temperature: 0.07 (``--moco-t``).
        queue_size: 65536 (``--moco-k``); small data sets want fewer (the queue must hold
            same-class keys for the ``num_positive`` draws to find any).
        num_positive: ``k``, same-class queue keys sampled as positives per query; 6 (``--K``).
        num_classes: classes of the labels; 0 = from the data layout (the loop fills it).
        jitter_p, brightness, contrast, saturation, hue, grayscale_p, blur_p: the official
            augmentation, ``ColorJitter(0.4, 0.4, 0.4, hue=0)`` always, no grayscale or blur.
    """

    temperature: float = 0.07
    num_positive: int = 6
    num_classes: int = 0
    jitter_p: float = 1.0
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.0
    grayscale_p: float = 0.0
    blur_p: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_positive < 0:
            raise ValueError(f"num_positive must be >= 0, got {self.num_positive!r}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes!r}")
        if self.symmetric:
            raise ValueError("symmetric must be False: KCL/TSC contrast one query view with one key view")


@dataclass(frozen=True)
class TSCHparams(KCLHparams):
    """TSC defaults (official README: ``--targeted --tr 1 --sep_t --tw 0.2``).

    Attributes:
        target_weight: ``lambda`` of the target term, 0.2 (``--tw``).
        normalization: ``"paper"`` or ``"official"`` (both terms divided by the number
            of positives including the target), see :mod:`training.losses.tsc`.
        centre_momentum: EMA weight of the old class centre, 0.9 (hard-coded officially).
        target_steps: Adam steps of the target generation (official script: 10000, lr 1e-3).
        target_lr: its learning rate.
        target_start_step: optimiser step from which targets are used (module docstring); 0.
    """

    target_weight: float = 0.2
    normalization: str = "paper"
    centre_momentum: float = 0.9
    target_steps: int = 10000
    target_lr: float = 1e-3
    target_start_step: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.target_weight >= 0:
            raise ValueError(f"target_weight must be >= 0, got {self.target_weight!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if not 0.0 <= self.centre_momentum <= 1.0:
            raise ValueError(f"centre_momentum must be in [0, 1], got {self.centre_momentum!r}")
        if self.target_steps < 0 or not self.target_lr > 0:
            raise ValueError(f"target_steps must be >= 0 and target_lr > 0, got {self.target_steps!r}, "
                             f"{self.target_lr!r}")
        if self.target_start_step < 0:
            raise ValueError(f"target_start_step must be >= 0, got {self.target_start_step!r}")


KH = TypeVar("KH", bound=KCLHparams)


@register_method("kcl")
class KCL(MoCo[KH]):
    """KCL: supervised MoCo (T=0.07), key + 6 same-class queue keys as positives (needs labels)."""

    Hparams: ClassVar[type[CommonHparams]] = KCLHparams
    optim_defaults: ClassVar[dict[str, Any]] = {"optimizer": "sgd", "lr": 0.1, "weight_decay": 1e-4}
    batch_keys: ClassVar[tuple[str, ...]] = ("labels",)

    @classmethod
    def prepare(cls, config: Any, items: Sequence[Any], classes: Sequence[str] | None) -> Prepared:
        """Each item's class id as ``labels``; ``num_classes`` from the layout."""
        return class_labels(cls.name, items, classes)

    queue_labels: torch.Tensor

    def __init__(self, *, backbone: Backbone, spec: ClipSpec, hparams: KH, seed: int = 0) -> None:
        super().__init__(backbone=backbone, spec=spec, hparams=hparams, seed=seed)
        # the class of every queued key; -1 = an initial random key, never a positive
        self.register_buffer("queue_labels", torch.full((hparams.queue_size,), -1, dtype=torch.long))

    def checked_labels(self, q: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """``labels`` as ``B`` long on ``q``'s device; ValueError when missing or out of range."""
        if labels is None:
            raise ValueError(f"{self.name}: training_step needs labels; train on a labelled layout")
        labels = labels.to(q.device).long().reshape(-1)
        if labels.shape != (q.shape[0],):
            raise ValueError(f"{self.name}: expected {q.shape[0]} labels, got shape {tuple(labels.shape)}")
        n = self.hparams.num_classes
        if bool((labels < 0).any()) or (n > 0 and bool((labels >= n).any())):
            raise ValueError(f"{self.name}: labels must be in [0, {n or 'num_classes'}); train on a labelled layout")
        return labels

    def positives(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``B x k`` sampled same-class queue rows (``-1``: fewer in the queue)."""
        return sample_class_positives(labels, self.queue_labels, self.hparams.num_positive, generator)

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
        """KCL loss of ``q`` against its key and the labelled queue."""
        labels = self.checked_labels(q, labels)
        pos = self.positives(labels, generator)
        return {"loss": tsc_loss_terms(q, k, queue, pos, temperature=self.hparams.temperature)["loss"]}

    def enqueue_keys(self, keys: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Push keys and their labels to the same ring positions."""
        if labels is None:
            raise ValueError(f"{self.name}: enqueue_keys needs the keys' labels")
        slots = self.queue.written_slots(keys.shape[0])
        super().enqueue_keys(keys, labels)
        labels = labels.to(self.queue_labels.device).long().reshape(-1)
        self.queue_labels[slots] = labels[labels.shape[0] - slots.shape[0] :]


@register_method("tsc")
class TSC(KCL[TSCHparams]):
    """TSC: KCL plus class targets uniform on the sphere, Hungarian-assigned to EMA class centres (lambda=0.2)."""

    Hparams: ClassVar[type[CommonHparams]] = TSCHparams

    targets: torch.Tensor
    centres: torch.Tensor
    assignment: torch.Tensor

    def __init__(self, *, backbone, spec, hparams: TSCHparams, seed: int = 0) -> None:
        super().__init__(backbone=backbone, spec=spec, hparams=hparams, seed=seed)
        c, d = hparams.num_classes, hparams.proj_dim
        if c < 1:
            raise ValueError("tsc: num_classes is unknown; train on a labelled layout or set num_classes=N")
        # targets and initial centres depend on the seed only, so every rank builds the same ones
        target_gen = torch.Generator().manual_seed(step_seed(seed, 0, 0, stream=2))
        targets = generate_targets(c, d, steps=hparams.target_steps, lr=hparams.target_lr, generator=target_gen)
        centre_gen = torch.Generator().manual_seed(step_seed(seed, 0, 0, stream=3))
        self.register_buffer("targets", targets)
        self.register_buffer("centres", F.normalize(torch.randn(c, d, generator=centre_gen), dim=1))
        self.register_buffer("assignment", torch.arange(c))

    def targets_active(self, step: int) -> bool:
        return step >= self.hparams.target_start_step

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
        """TSC loss (KCL before ``target_start_step``); updates the centres and the assignment."""
        labels = self.checked_labels(q, labels)
        pos = self.positives(labels, generator)
        h = self.hparams
        if not self.targets_active(step):
            terms = tsc_loss_terms(q, k, queue, pos, temperature=h.temperature)
            return {"loss": terms["loss"], "loss_class": terms["loss_class"], "loss_target": terms["loss_target"]}
        with torch.no_grad():  # official order: centres from this batch, then the assignment, then the loss
            self.centres.copy_(update_class_centres(self.centres, gather_no_grad(q.detach()),
                                                    gather_no_grad(labels), h.centre_momentum))
            self.assignment.copy_(assign_targets(self.centres, self.targets))
        return tsc_loss_terms(q, k, queue, pos, targets=self.targets, target_index=self.assignment[labels],
                              temperature=h.temperature, target_weight=h.target_weight,
                              normalization=h.normalization)
