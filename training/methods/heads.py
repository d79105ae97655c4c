"""Projection heads that map pooled backbone features to the contrastive embedding space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.checks import check_shape
from training.models.registry import Backbone


class MLPHead(nn.Module):
    """``Linear(D, H) [-> BN] -> ReLU -> Linear(H, out) [-> BN]``, optionally L2-normalised.

    MoCo v2 (Chen et al. 2020): no BN, ``D -> D -> 128``. SimCLR (Chen et al. 2020): BN after
    the hidden layer. TCLR (``mlp.py``): BN after both layers, no bias on the last linear,
    output normalised.

    Args:
        in_dim: D, backbone feature size.
        hidden_dim: H (D in all three papers).
        out_dim: embedding size (128).
        hidden_bn: BatchNorm1d after the hidden linear.
        out_bn: BatchNorm1d after the output linear (then the output linear has no bias).
        normalize: L2-normalise the output.

    Shapes: ``B x D -> B x out_dim``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int = 128,
        *,
        hidden_bn: bool = False,
        out_bn: bool = False,
        normalize: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim)]
        if hidden_bn:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim, bias=not out_bn)]
        if out_bn:
            layers.append(nn.BatchNorm1d(out_dim))
        self.net = nn.Sequential(*layers)
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        return F.normalize(z, dim=1) if self.normalize else z


class Encoder(nn.Module):
    """Backbone + head as one module: ``B x 3 x T x H x W -> B x out_dim`` (L2-normalised).

    The MoCo key encoder is a deep copy of this module, so parameter names match for the
    momentum update. With a ``dense_head`` (DenseCL term), :meth:`forward_dense` also returns
    the backbone's per-location features and the dense projections.
    """

    def __init__(self, backbone: Backbone, head: nn.Module, dense_head: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.dense_head = dense_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(x)), dim=1)

    def forward_dense(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` -> (embedding ``B x P``, backbone features ``B x L x C``, dense projections ``B x L x P``)
        over the ``L = t*h*w`` locations of the last feature map."""
        maps = self.backbone.forward_features(x)
        z = F.normalize(self.head(self.backbone.forward_head(maps)), dim=1)
        return z, maps.flatten(2).transpose(1, 2), self.project_dense(maps)

    def project_dense(self, maps: torch.Tensor) -> torch.Tensor:
        """``B x C x t x h x w`` backbone maps -> ``B x L x P`` dense projections."""
        if self.dense_head is None:
            raise RuntimeError("this encoder has no dense head")
        dense: torch.Tensor = self.dense_head(maps)
        return dense


def pooled_dense_keys(k_dense: Tensor) -> Tensor:
    """``B x M x P`` dense keys -> ``B x P`` L2-normalised means (what DenseCL enqueues)."""
    check_shape("k_dense", k_dense, 3, "B x M x P")
    return F.normalize(k_dense.mean(dim=1), dim=1)


class DenseHead(nn.Module):
    """DenseCL's dense projection: 1x1x1 conv ``C -> C``, ReLU, 1x1x1 conv ``C -> P``, per location.

    ``B x C x t x h x w`` feature map -> ``B x (t*h*w) x P`` L2-normalised projections.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(in_dim, hidden_dim, 1), nn.ReLU(inplace=True), nn.Conv3d(hidden_dim, out_dim, 1)
        )

    def forward(self, maps: Tensor) -> Tensor:
        check_shape("maps", maps, 5, "B x C x t x h x w")
        return F.normalize(self.net(maps).flatten(2).transpose(1, 2), dim=-1)
