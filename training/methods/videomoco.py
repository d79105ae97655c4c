"""VideoMoCo: MoCo with adversarial frame dropping and temporally decayed queue keys.

Pan et al. 2021, "VideoMoCo: Contrastive Video Representation Learning with Temporally
Adversarial Examples" (CVPR); official code ``tinapan-pt/VideoMoCo`` @ ``42e069ae``
(``moco/builder.py``, ``train.py``). Per step:

1. a generator scores the frames of the query clip and the ``drop`` lowest-scoring frames are
   replaced by their mean (:func:`~training.augment.frame_drop.drop_frames`, straight-through);
2. the query is the encoder's embedding of that frame-dropped clip, the key the momentum
   encoder's embedding of the other view, and the loss MoCo's with negatives decayed by queue
   age, ``t^age`` (:func:`~training.losses.videomoco.decayed_moco_loss`);
3. the generator additionally maximises ``L1(q_fake, q_real)`` (weight 100), the distance
   between the embeddings of the dropped and the intact clip.

Differences from the official code (and why):

- One optimiser instead of two: the returned loss routes gradients so the encoder gets
  ``d L_contrastive`` and the generator ``d (L_contrastive - w * L1)``, exactly what the
  official ``loss_g.backward(); optimizer_d.zero_grad(); loss_d.backward()`` gives (the
  generator therefore also *descends* the contrastive loss through the straight-through
  frame drop, as in the code; the logged ``loss`` is the contrastive loss).
- The generator: the official ``Generator_Mask`` stacks the 32 frames as 96 channels of a 2D
  CNN sized for 112 px crops and needs exactly T=32 and 112x112. Ours (:class:`FrameScorer`)
  embeds each frame with a small 2D CNN, runs a bidirectional LSTM over time and scores every
  frame (softmax over frames, as official), so it works for any T and crop size.
- ``adversarial_start_step``: the README trains the encoder alone for 100 epochs and then
  adversarially for 100 (resuming from ``checkpoint_0100``), the released loop always runs
  both; before this step no frame is dropped and the generator is idle. Default 0 (the code).
- Queue ages are a buffer saved in checkpoints (the official ``count`` is a plain attribute,
  lost on resume).
- Views: as official, q and k are the same temporal window with two independent spatial crops
  (``same_clip=True``); ``same_clip=False`` takes two distinct clips as our MoCo does. Colour
  jitter is drawn per clip, where the official kornia pipeline draws it per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.augment.frame_drop import drop_frames
from training.distributed import gather_no_grad, is_distributed
from training.losses.videomoco import check_decay, decayed_moco_loss, route_adversarial_gradient
from training.methods.base import CommonHparams
from training.methods.moco import MoCo, MoCoHparams
from training.methods.momentum import momentum_update, split_batch_forward
from training.methods.queue import AgedKeyQueue
from training.methods.registry import register_method
from training.methods.views import DistinctClips, ViewSampler
from vcl_infer.clips.sampling import ClipWindow, random_clip
from vcl_infer.clips.spec import ClipSpec


@dataclass(frozen=True)
class VideoMoCoHparams(MoCoHparams):
    """VideoMoCo defaults (official README command and ``train.py`` arguments).

    Attributes:
        temperature: 0.07; queue_size: 65536; momentum: 0.999; mlp: False (fc -> 128).
        decay: temporal decay t of queue keys, 0.99999.
        adversarial_weight: w of the generator's ``-w * L1(q_fake, q_real)``, 100.
        dropped_frames: frames dropped per clip; None = T // 4 (official 8 of 32), at least 1.
        adversarial_start_step: first step with the generator (README: half-way; code: 0).
        same_clip: q and k from the same temporal window (official) or two distinct clips.
        generator_width: channels of the frame scorer's CNN (its LSTM has 64 units per direction).
        jitter_p, hue, blur_p: official ``MoCoAugment`` (ColorJitter(0.4, 0.4, 0.4, 0.4) always,
            grayscale 0.2, no blur).
    """

    temperature: float = 0.07
    mlp: bool = False
    decay: float = 0.99999
    adversarial_weight: float = 100.0
    dropped_frames: int | None = None
    adversarial_start_step: int = 0
    same_clip: bool = True
    generator_width: int = 32
    jitter_p: float = 1.0
    hue: float = 0.4
    blur_p: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_decay(self.decay)
        if not 0.0 <= self.adversarial_weight < float("inf"):
            raise ValueError(
                f"adversarial_weight must be a finite number >= 0, got {self.adversarial_weight!r}"
            )
        if self.dropped_frames is not None and self.dropped_frames < 1:
            raise ValueError(f"dropped_frames must be >= 1 or None, got {self.dropped_frames!r}")
        if self.adversarial_start_step < 0:
            raise ValueError(f"adversarial_start_step must be >= 0, got {self.adversarial_start_step!r}")
        if self.generator_width < 2:
            raise ValueError(f"generator_width must be >= 2, got {self.generator_width!r}")
        if self.symmetric:
            raise ValueError("symmetric is not supported by videomoco (the generator perturbs one view)")


@dataclass(frozen=True)
class SameClipTwice:
    """One random clip of the spec, listed twice: the data set crops each copy independently."""

    spec: ClipSpec

    def __call__(self, timestamps: np.ndarray, rng: np.random.Generator) -> list[ClipWindow]:
        window = random_clip(timestamps, self.spec, rng)
        return [window, window]


class FrameScorer(nn.Module):
    """VideoMoCo's generator: ``B x 3 x T x H x W`` clip -> ``B x T`` frame scores (softmax over T).

    Per frame: three stride-2 3x3 convolutions (BN, ReLU) and global average pooling; over
    time: a bidirectional LSTM; per step: a linear score. Any T and crop size work.
    """

    def __init__(self, width: int = 32, hidden: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = [3, width // 2, width, width]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        self.frames = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.rnn = nn.LSTM(width, hidden, batch_first=True, bidirectional=True)
        self.score = nn.Linear(2 * hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        per_frame = self.frames(x.transpose(1, 2).reshape(b * t, c, h, w)).view(b, t, -1)
        states, _ = self.rnn(per_frame)
        return torch.softmax(self.score(states).squeeze(-1), dim=1)


@register_method("videomoco")
class VideoMoCo(MoCo[VideoMoCoHparams]):
    """VideoMoCo: MoCo (T=0.07, K=65536) on generator-dropped query frames (T/4, adversarial L1 x100), keys decayed 0.99999^age."""

    Hparams: ClassVar[type[CommonHparams]] = VideoMoCoHparams
    # official README: lr 0.005 at batch 32 (SGD, momentum 0.9, wd 1e-4, steps at 120/160 of 200 epochs)
    optim_defaults: ClassVar[dict[str, Any]] = {"optimizer": "sgd", "lr": 0.005, "weight_decay": 1e-4}
    queue: AgedKeyQueue  # replaces MoCo's KeyQueue in __init__ (keys keep their age)

    def __init__(self, *, backbone, spec, hparams: VideoMoCoHparams, seed: int = 0) -> None:
        super().__init__(backbone=backbone, spec=spec, hparams=hparams, seed=seed)
        t = spec.frames_per_clip
        self.num_dropped = hparams.dropped_frames or max(1, t // 4)
        if not self.num_dropped < t:
            raise ValueError(
                f"videomoco drops {self.num_dropped} of {t} frames per clip; need dropped_frames < T"
            )
        aged = AgedKeyQueue(hparams.queue_size, hparams.proj_dim)
        aged.keys.copy_(self.queue.keys)  # keep the seeded initial keys
        self.queue = aged
        self.frame_scorer = FrameScorer(hparams.generator_width)

    @property
    def views(self) -> ViewSampler:
        return SameClipTwice(self.spec) if self.hparams.same_clip else DistinctClips(self.spec, 2)

    def contrastive_terms(self, q, k, queue, *, step, generator, labels=None) -> dict[str, torch.Tensor]:
        """Decayed MoCo loss; ``self.queue.ages`` are still those of ``queue`` (enqueue comes later)."""
        return {
            "loss": decayed_moco_loss(
                q, k, queue, self.queue.ages, self.hparams.decay, self.hparams.temperature
            )
        }

    def training_step(
        self, clips: torch.Tensor, step: int, labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``B x 2 x 3 x T x S x S`` in [0, 1] -> ``{"loss", "feature_l1", ...}``; MoCo's order of updates."""
        self.check_clips(clips)
        hp = self.hparams
        g = self.generator(step)
        b = clips.shape[0]
        groups = self._groups(b)
        x_real = self.augment(clips[:, 0], g)
        x_key = self.augment(clips[:, 1], g)
        ident, perm = torch.arange(b), torch.randperm(b, generator=g)
        adversarial = step >= hp.adversarial_start_step
        x_q = drop_frames(x_real, self.frame_scorer(x_real), self.num_dropped) if adversarial else x_real
        q = self.encode(self.encoder_q, x_q, groups, ident)
        with torch.no_grad():
            momentum_update(self.encoder_q, self.encoder_k, hp.momentum)
            k = self.encode(self.encoder_k, x_key, groups, perm)
        out = self.contrastive_terms(q.z, k.z, self.queue().clone(), step=step, generator=g, labels=labels)
        if self.uses_dense:
            out["loss_global"] = out["loss"]
            out["loss_dense"] = self.dense_terms([(q, k)])
            out["loss"] = out["loss"] + hp.dense_weight * out["loss_dense"]
            self.enqueue_dense([k])
        if adversarial:
            with torch.no_grad():  # the L1 target: a constant for the generator, unused by the encoder
                q_real = split_batch_forward(self.encoder_q, x_real, groups, ident)
            l1 = F.l1_loss(q.z, q_real)
            if hp.adversarial_weight > 0:
                out["loss"] = route_adversarial_gradient(out["loss"], -hp.adversarial_weight * l1, x_q)
            out["feature_l1"] = l1.detach()
        else:
            out["feature_l1"] = torch.zeros((), device=q.z.device)  # nothing dropped yet
            if is_distributed():  # DDP (no find_unused_parameters) needs every parameter in the graph
                out["loss"] = out["loss"] + 0.0 * sum(p.sum() for p in self.frame_scorer.parameters())
        self.enqueue_keys(gather_no_grad(k.z), None if labels is None else gather_no_grad(labels))
        with torch.no_grad():
            out["pos_sim"] = (q.z * k.z).sum(dim=1).mean()
        return out
