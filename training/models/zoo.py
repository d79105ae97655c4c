"""Registered video ResNet configurations.

``r3d_18`` and ``r2plus1d_18`` are the 18-layer networks of Tran et al. 2018, "A Closer Look
at Spatiotemporal Convolutions for Action Recognition" (CVPR 2018), parameter-compatible with
torchvision's models of the same names (without ``fc``). ``r3d_18_tclr`` is TCLR's variant
(Dave et al. 2022, "TCLR: Temporal Contrastive Learning for Video Representation", CVIU):
layer4 keeps the temporal resolution by trading its temporal stride for a temporal dilation of
2, so a 16-frame clip yields 4 temporal positions; its parameters have the same names and
shapes as ``r3d_18``. The ``*_small`` variants are narrow, one-block-per-layer networks that
train and run on a 2-core CPU.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F

from training.models.registry import Backbone, register_backbone
from training.models.video_resnet import VideoResNet

_SMALL_WIDTHS = (16, 32, 64, 128)


def _four(values: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """``values`` (a list when it comes from a config file) as a tuple; VideoResNet checks the length."""
    return cast("tuple[int, int, int, int]", tuple(values))


@register_backbone("r3d_18", "R3D-18 (Tran et al. 2018), torchvision-compatible, D=512")
def r3d_18() -> VideoResNet:
    """R3D-18: ``B x 3 x T x H x W -> B x 512`` (feature map ``T/8 x H/16 x W/16``)."""
    return VideoResNet(conv_type="r3d")


@register_backbone("r2plus1d_18", "R(2+1)D-18 (Tran et al. 2018), torchvision-compatible, D=512")
def r2plus1d_18() -> VideoResNet:
    """R(2+1)D-18: ``B x 3 x T x H x W -> B x 512`` (feature map ``T/8 x H/16 x W/16``)."""
    return VideoResNet(conv_type="r2plus1d", stem_midplanes=45)


@register_backbone("r3d_18_tclr", "R3D-18 with TCLR's temporally dilated layer4 (T/4 feature map), D=512")
def r3d_18_tclr() -> VideoResNet:
    """TCLR's R3D-18: layer4 temporal stride 1, dilation 2 (``B x 512 x T/4 x H/16 x W/16``)."""
    return VideoResNet(conv_type="r3d", temporal_strides=(1, 2, 2, 1), temporal_dilations=(1, 1, 1, 2))


@register_backbone("r3d_small", "small R3D (widths 16/32/64/128, 1 block per layer) for CPUs, D=128")
def r3d_small(
    *, widths: tuple[int, int, int, int] = _SMALL_WIDTHS, blocks: tuple[int, int, int, int] = (1, 1, 1, 1)
) -> VideoResNet:
    """Small R3D: ``B x 3 x T x H x W -> B x widths[-1]``."""
    return VideoResNet(conv_type="r3d", widths=_four(widths), blocks=_four(blocks))


def _frame_differences(x: torch.Tensor) -> torch.Tensor:
    """``B x 3 x T x H x W`` clips -> their ``T - 1`` consecutive-frame differences."""
    if x.ndim != 5 or x.shape[2] < 2:
        raise ValueError(f"expected B x 3 x T x H x W input with T >= 2, got shape {tuple(x.shape)}")
    return x[:, :, 1:] - x[:, :, :-1]


class FrameDifferenceResNet(VideoResNet):
    """A video ResNet that sees the differences of consecutive frames, not the frames.

    A static background differs from frame to frame only where the camera shakes, so what the
    network sees is mostly what moves: features that a background correlated with the class
    cannot dominate (residual frames, Tao et al. 2020, "Rethinking Motion Representation:
    Residual Frames with 3D ConvNets"). A ``T``-frame clip gives ``T - 1`` differences; the
    difference is part of the network, so an exported bundle takes the same RGB clips.
    """

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x T x H x W`` clips -> the feature map of their ``T - 1`` frame differences."""
        return super().forward_features(_frame_differences(x))


@register_backbone("r3d_small_diff", "r3d_small on consecutive-frame differences (background-invariant), D=128")
def r3d_small_diff(
    *, widths: tuple[int, int, int, int] = _SMALL_WIDTHS, blocks: tuple[int, int, int, int] = (1, 1, 1, 1)
) -> VideoResNet:
    """Small R3D over frame differences: ``B x 3 x T x H x W -> B x widths[-1]``."""
    return FrameDifferenceResNet(conv_type="r3d", widths=_four(widths), blocks=_four(blocks))


class MovingAppearanceResNet(VideoResNet):
    """A video ResNet that sees the frames only where they change.

    Each frame after the first is weighted, pixel by pixel, by how much it differs from the
    one before (the mean absolute difference over the colour channels, as a share of the
    clip's largest): a static background goes to zero, what moves keeps its colour and
    texture, and a camera pan keeps the whole scene. Beside a frame-difference stream this
    gives search the appearance of what moves without handing a linear probe the background.
    """

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x T x H x W`` clips -> the feature map of their ``T - 1`` moving-pixel frames."""
        change = _frame_differences(x).abs().mean(dim=1, keepdim=True)
        gate = change / (change.amax(dim=(2, 3, 4), keepdim=True) + 1e-6)
        return super().forward_features(x[:, :, 1:] * gate)


@register_backbone("r3d_small_moving", "r3d_small on the frames weighted by how much each pixel changes, D=128")
def r3d_small_moving(
    *, widths: tuple[int, int, int, int] = _SMALL_WIDTHS, blocks: tuple[int, int, int, int] = (1, 1, 1, 1)
) -> VideoResNet:
    """Small R3D over moving pixels: ``B x 3 x T x H x W -> B x widths[-1]``."""
    return MovingAppearanceResNet(conv_type="r3d", widths=_four(widths), blocks=_four(blocks))


class TwoStreamResNet(Backbone):
    """An appearance stream (the RGB frames) beside a motion stream (their differences).

    Each stream's pooled feature is scaled to unit length before the two are joined, so a
    cosine between two embeddings is the mean of the two streams' cosines: search keeps the
    appearance that tells two scenes with the same motion apart, and the motion stream keeps
    a class that is the motion from being drowned by a background that predicts it (two-stream
    networks, Simonyan and Zisserman 2014, with residual frames for the motion stream). The
    streams can be trained apart and joined by passing the trained backbones in.
    """

    def __init__(self, appearance: Backbone, motion: Backbone):
        super().__init__()
        self.appearance, self.motion = appearance, motion
        self.embed_dim = appearance.embed_dim + motion.embed_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Both streams' feature maps joined on channels (the motion map pooled to the
        appearance map's size: ``T - 1`` differences can give a shorter time axis)."""
        a = self.appearance.forward_features(x)
        m = self.motion.forward_features(x)
        if m.shape[2:] != a.shape[2:]:
            t, h, w = a.shape[2:]
            m = F.adaptive_avg_pool3d(m, (t, h, w))
        return torch.cat([a, m], dim=1)

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        """Each stream's pooled feature at unit length, joined: ``B x (Da + Dm)``."""
        a, m = feats.split([self.appearance.embed_dim, self.motion.embed_dim], dim=1)
        return torch.cat([F.normalize(a.mean(dim=(2, 3, 4)), dim=1), F.normalize(m.mean(dim=(2, 3, 4)), dim=1)], dim=1)


@register_backbone("r3d_small_two_stream", "r3d_small on the frames beside r3d_small_diff on their differences, D=256")
def r3d_small_two_stream() -> TwoStreamResNet:
    """``B x 3 x T x H x W -> B x 256``: unit appearance (128) and unit motion (128) features."""
    return TwoStreamResNet(r3d_small(), r3d_small_diff())


@register_backbone("r3d_small_moving_two_stream", "r3d_small_moving beside r3d_small_diff: what moves and how, D=256")
def r3d_small_moving_two_stream() -> TwoStreamResNet:
    """``B x 3 x T x H x W -> B x 256``: unit moving-appearance (128) and unit motion (128) features."""
    return TwoStreamResNet(r3d_small_moving(), r3d_small_diff())


@register_backbone("r2plus1d_small", "small R(2+1)D (widths 16/32/64/128, 1 block per layer) for CPUs, D=128")
def r2plus1d_small(
    *,
    widths: tuple[int, int, int, int] = _SMALL_WIDTHS,
    blocks: tuple[int, int, int, int] = (1, 1, 1, 1),
    stem_midplanes: int = 12,
) -> VideoResNet:
    """Small R(2+1)D: ``B x 3 x T x H x W -> B x widths[-1]``."""
    return VideoResNet(
        conv_type="r2plus1d", widths=_four(widths), blocks=_four(blocks), stem_midplanes=stem_midplanes
    )
