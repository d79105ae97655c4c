"""The preprocessing spec every path shares, and the encoder bundle's self-description.

:class:`ClipSpec` says how a video becomes model input (clip length, frame step or target
fps, resize rule, crop, mean/std, layout). :class:`EncoderSpec` wraps it with what an
exported encoder is (architecture, embedding size, weight fingerprint, verification numbers);
it is stored as JSON in the ONNX ``metadata_props`` under :data:`SPEC_METADATA_KEY` and in a
sidecar ``<name>.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from vcl_infer.errors import SpecMismatch

SPEC_METADATA_KEY = "vcl.spec"
SPEC_FORMAT_VERSION = 1

# Kinetics-400 statistics that torchvision's video models (and FAME's pretraining) use.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)

RESIZE_MODES = ("short_side", "square", "none")
CHANNEL_ORDERS = ("RGB", "BGR")
SHORT_VIDEO_RULES = ("clamp", "loop")


@dataclass(frozen=True)
class ClipSpec:
    """How frames become one clip of model input.

    Attributes:
        frames_per_clip: T, frames in one clip.
        frame_step: take every ``frame_step``-th decoded frame (index based). Exactly one of
            ``frame_step`` and ``target_fps`` is set.
        target_fps: sample frames on presentation timestamps at this rate (right for
            variable-frame-rate video).
        resize_mode: ``short_side`` scales so the shorter side is ``resize_size`` keeping the
            aspect ratio; ``square`` scales to ``resize_size x resize_size``; ``none`` keeps
            the frame at its decoded (native) scale and only crops, as FAME's retrieval
            (``CenterCropVideo(112)`` with no resize); a frame smaller than the crop is
            scaled up until its shorter side is ``crop_size``.
        resize_size: pixels, see ``resize_mode`` (unused by ``none``).
        crop_size: side of the centred square crop taken after resizing.
        mean: per-channel RGB mean subtracted from pixels scaled to [0, 1].
        std: per-channel RGB std divided out after the mean.
        layout: tensor layout of the model input; always ``NCTHW``.
        short_video: how a video shorter than one clip span is padded: ``clamp`` repeats the
            last frame, ``loop`` starts again from the first frame.
        channel_order: channel order the model was trained on; ``BGR`` for models trained
            on OpenCV-decoded frames (TCLR's published checkpoints). Mean and std are given
            in this order.
    """

    frames_per_clip: int = 16
    frame_step: int | None = 2
    target_fps: float | None = None
    resize_mode: str = "short_side"
    resize_size: int = 128
    crop_size: int = 112
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD
    layout: str = "NCTHW"
    short_video: str = "clamp"
    channel_order: str = "RGB"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        problems = []
        if self.frames_per_clip < 1:
            problems.append("frames_per_clip must be >= 1")
        if (self.frame_step is None) == (self.target_fps is None):
            problems.append("set exactly one of frame_step and target_fps")
        if self.frame_step is not None and self.frame_step < 1:
            problems.append("frame_step must be >= 1")
        if self.target_fps is not None and not (self.target_fps > 0 and math.isfinite(self.target_fps)):
            problems.append("target_fps must be a positive number")
        if self.resize_mode not in RESIZE_MODES:
            problems.append(f"resize_mode must be one of {RESIZE_MODES}")
        if self.crop_size < 1 or self.resize_size < self.crop_size:
            problems.append("need 1 <= crop_size <= resize_size")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            problems.append("mean and std need 3 values, std > 0")
        if self.layout != "NCTHW":
            problems.append("layout must be NCTHW")
        if self.short_video not in SHORT_VIDEO_RULES:
            problems.append(f"short_video must be one of {SHORT_VIDEO_RULES}")
        if self.channel_order not in CHANNEL_ORDERS:
            problems.append(f"channel_order must be one of {CHANNEL_ORDERS}")
        if problems:
            raise ValueError("invalid ClipSpec: " + "; ".join(problems))

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """``C x T x H x W`` of one preprocessed clip."""
        return (3, self.frames_per_clip, self.crop_size, self.crop_size)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClipSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class EncoderSpec:
    """What an exported encoder is and how to feed it (the bundle's ``vcl.spec``).

    Serialised flat: the :class:`ClipSpec` fields sit at the top level next to the model's.

    Attributes:
        arch: backbone registry name (``r2plus1d_18``, ...).
        method: training method that produced the weights (``untrained`` when none).
        embed_dim: D, length of one embedding.
        l2_normalized: whether the model's outputs are already unit length.
        clip: the preprocessing spec.
        fingerprint: ``sha256:<hex>`` of the weights (see ``training.fingerprint``).
        trained: False for an exported untrained backbone (smoke tests only).
        input_name / output_name: tensor names in the ONNX graph.
        verification: numbers achieved at export (``max_abs_error``, ``min_cosine``, ...).
        feature_layer: what one output vector is: ``pooled`` (the last feature map averaged
            over time and space, ``D`` channels) or ``temporal`` (averaged over space only:
            ``channels x feature_steps`` flattened channel-major, as TCLR's retrieval uses it;
            ``vcl-export --features temporal``).
        feature_steps: time steps kept per channel (1 for ``pooled``).
        quantization: empty for a float model; for an int8 one (``vcl-export --int8``) the scheme,
            the calibration clips and the fidelity to the fp32 model it came from.
    """

    arch: str
    embed_dim: int
    clip: ClipSpec = field(default_factory=ClipSpec)
    method: str = "untrained"
    l2_normalized: bool = True
    fingerprint: str = ""
    trained: bool = False
    input_name: str = "clips"
    output_name: str = "embeddings"
    verification: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)
    format_version: int = SPEC_FORMAT_VERSION
    feature_layer: str = "pooled"
    feature_steps: int = 1

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format_version": self.format_version,
            "arch": self.arch,
            "method": self.method,
            "trained": self.trained,
            "embed_dim": self.embed_dim,
            "l2_normalized": self.l2_normalized,
            "feature_layer": self.feature_layer,
            "feature_steps": self.feature_steps,
        }
        data.update(self.clip.to_dict())
        data.update(
            fingerprint=self.fingerprint,
            input_name=self.input_name,
            output_name=self.output_name,
            verification=dict(self.verification),
        )
        if self.quantization:  # float bundles keep the spec they always had
            data["quantization"] = dict(self.quantization)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EncoderSpec":
        version = data.get("format_version")
        if version != SPEC_FORMAT_VERSION:
            raise SpecMismatch(
                f"encoder spec format_version {version!r} is not supported (this vcl reads "
                f"{SPEC_FORMAT_VERSION}); re-export the model with this version of vcl-export"
            )
        missing = [k for k in ("arch", "embed_dim") if k not in data]
        if missing:
            raise SpecMismatch(f"encoder spec lacks {missing}; re-export the model")
        own = {f.name for f in dataclasses.fields(cls)} - {"clip"}
        return cls(
            clip=ClipSpec.from_dict(data),
            **{k: v for k, v in data.items() if k in own},
        )

    @classmethod
    def from_json(cls, text: str) -> "EncoderSpec":
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> "EncoderSpec":
        return dataclasses.replace(self, **changes)
