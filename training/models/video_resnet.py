"""Video ResNets (R3D and R(2+1)D) as embedding backbones.

Architecture of Tran et al. 2018, "A Closer Look at Spatiotemporal Convolutions for Action
Recognition" (CVPR 2018, arXiv:1711.11248): a ResNet-18 layout whose convolutions are either
full 3D (``3 x 3 x 3``, R3D) or factorised into a spatial ``1 x 3 x 3`` and a temporal
``3 x 1 x 1`` convolution (R(2+1)D), with the intermediate width chosen so the factorised pair
has about as many parameters as the full 3D kernel.

Module and parameter names (``stem``, ``layer1..4``, ``conv1``/``conv2`` as
``Sequential(conv, BN[, ReLU])``, ``downsample`` as ``Sequential(Conv3d 1x1x1, BN)``) follow the
layout of torchvision's ``r3d_18`` / ``r2plus1d_18`` so their state dicts (minus the ``fc``
classifier, which a backbone does not have) load with ``strict=True``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from training.models.registry import Backbone

ConvType = Literal["r3d", "r2plus1d"]


def r2plus1d_midplanes(in_planes: int, out_planes: int) -> int:
    """Width of the (2+1)D intermediate so parameters match a full ``3x3x3`` kernel.

    Tran et al. 2018, Sec. 3.5: ``M = floor(t d^2 N_in N_out / (d^2 N_in + t N_out))``, t=3, d=3.
    """
    return (in_planes * out_planes * 27) // (in_planes * 9 + 3 * out_planes)


def _conv3d(in_planes: int, out_planes: int, stride: tuple[int, int, int], t_dilation: int) -> nn.Conv3d:
    """Full ``3x3x3`` convolution; temporal padding grows with the temporal dilation."""
    return nn.Conv3d(
        in_planes,
        out_planes,
        kernel_size=3,
        stride=stride,
        padding=(t_dilation, 1, 1),
        dilation=(t_dilation, 1, 1),
        bias=False,
    )


def _conv2plus1d(
    in_planes: int, out_planes: int, midplanes: int, stride: tuple[int, int, int], t_dilation: int
) -> nn.Sequential:
    """Spatial ``1x3x3`` conv -> BN -> ReLU -> temporal ``3x1x1`` conv (indices 0, 1, 3)."""
    st, sh, sw = stride
    return nn.Sequential(
        nn.Conv3d(
            in_planes, midplanes, kernel_size=(1, 3, 3), stride=(1, sh, sw), padding=(0, 1, 1), bias=False
        ),
        nn.BatchNorm3d(midplanes),
        nn.ReLU(inplace=True),
        nn.Conv3d(
            midplanes,
            out_planes,
            kernel_size=(3, 1, 1),
            stride=(st, 1, 1),
            padding=(t_dilation, 0, 0),
            dilation=(t_dilation, 1, 1),
            bias=False,
        ),
    )


class BasicBlock(nn.Module):
    """Two-convolution residual block: ``relu(conv2(conv1(x)) + downsample(x))``.

    Args:
        in_planes: input channels C_in.
        planes: output channels C_out.
        conv_type: ``"r3d"`` or ``"r2plus1d"``.
        stride: ``(t, h, w)`` stride of ``conv1`` and of the shortcut.
        t_dilation: temporal dilation of ``conv1`` (TCLR's layer4 uses 2).

    Shapes:
        ``B x C_in x T x H x W`` -> ``B x C_out x T/t x H/h x W/w``.
    """

    def __init__(
        self,
        *,
        in_planes: int,
        planes: int,
        conv_type: ConvType,
        stride: tuple[int, int, int] = (1, 1, 1),
        t_dilation: int = 1,
    ) -> None:
        super().__init__()
        first: nn.Module
        second: nn.Module
        if conv_type == "r2plus1d":
            # torchvision computes one midplanes per block (from C_in, C_out) for both convs.
            mid = r2plus1d_midplanes(in_planes, planes)
            first = _conv2plus1d(in_planes, planes, mid, stride, t_dilation)
            second = _conv2plus1d(planes, planes, mid, (1, 1, 1), 1)
        elif conv_type == "r3d":
            first = _conv3d(in_planes, planes, stride, t_dilation)
            second = _conv3d(planes, planes, (1, 1, 1), 1)
        else:
            raise ValueError(f"conv_type must be 'r3d' or 'r2plus1d', got {conv_type!r}")
        self.conv1 = nn.Sequential(first, nn.BatchNorm3d(planes), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(second, nn.BatchNorm3d(planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != (1, 1, 1) or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm3d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + shortcut)


def _stem(conv_type: ConvType, width: int, midplanes: int) -> nn.Sequential:
    """Stem: spatial stride 2, temporal stride 1 (``B x 3 x T x H x W -> B x width x T x H/2 x W/2``)."""
    if conv_type == "r3d":
        return nn.Sequential(
            nn.Conv3d(3, width, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )
    return nn.Sequential(
        nn.Conv3d(3, midplanes, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
        nn.BatchNorm3d(midplanes),
        nn.ReLU(inplace=True),
        nn.Conv3d(midplanes, width, kernel_size=(3, 1, 1), stride=1, padding=(1, 0, 0), bias=False),
        nn.BatchNorm3d(width),
        nn.ReLU(inplace=True),
    )


class VideoResNet(Backbone):
    """ResNet video backbone without classifier (Tran et al. 2018).

    Args:
        conv_type: ``"r3d"`` (full 3D convs) or ``"r2plus1d"`` (factorised (2+1)D convs).
        widths: channels of layer1..layer4; ``embed_dim = widths[-1]``.
        blocks: BasicBlocks per layer.
        stem_midplanes: intermediate width of the R(2+1)D stem (45 in R(2+1)D-18).
        temporal_strides: temporal stride of the first block of each layer (spatial strides
            are 1, 2, 2, 2 as in ResNet).
        temporal_dilations: temporal dilation of ``conv1`` of the first block of each layer.

    Shapes:
        ``forward_features``: ``B x 3 x T x H x W -> B x D x t x h x w`` with, for the
        defaults, ``t = ceil(T/8)``, ``h = ceil(H/16)``, ``w = ceil(W/16)``.
        ``forward_head``: ``B x D x t x h x w -> B x D`` (global average pool).
    """

    def __init__(
        self,
        *,
        conv_type: ConvType = "r3d",
        widths: tuple[int, int, int, int] = (64, 128, 256, 512),
        blocks: tuple[int, int, int, int] = (2, 2, 2, 2),
        stem_midplanes: int = 45,
        temporal_strides: tuple[int, int, int, int] = (1, 2, 2, 2),
        temporal_dilations: tuple[int, int, int, int] = (1, 1, 1, 1),
    ) -> None:
        super().__init__()
        if not (len(widths) == len(blocks) == len(temporal_strides) == len(temporal_dilations) == 4):
            raise ValueError("widths, blocks, temporal_strides and temporal_dilations need 4 entries each")
        if min(blocks) < 1 or min(widths) < 1:
            raise ValueError("every layer needs >= 1 block and >= 1 channel")
        self.conv_type = conv_type
        self.embed_dim = int(widths[-1])
        self.stem = _stem(conv_type, widths[0], stem_midplanes)
        in_planes = widths[0]
        spatial_strides = (1, 2, 2, 2)
        layers: list[nn.Sequential] = []
        for i in range(4):
            stride = (temporal_strides[i], spatial_strides[i], spatial_strides[i])
            layer = [
                BasicBlock(
                    in_planes=in_planes,
                    planes=widths[i],
                    conv_type=conv_type,
                    stride=stride,
                    t_dilation=temporal_dilations[i],
                )
            ]
            layer += [
                BasicBlock(in_planes=widths[i], planes=widths[i], conv_type=conv_type)
                for _ in range(blocks[i] - 1)
            ]
            layers.append(nn.Sequential(*layer))
            in_planes = widths[i]
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He init (fan_out, ReLU) for convolutions, BN weight 1 and bias 0, as torchvision."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x T x H x W`` clips -> ``B x D x t x h x w`` last feature map."""
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"expected B x 3 x T x H x W input, got shape {tuple(x.shape)}")
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)
