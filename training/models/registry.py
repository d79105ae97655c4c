"""The backbone registry.

Every registered constructor takes keyword arguments only and returns an ``nn.Module`` that
follows the backbone contract: ``forward_features(x)`` maps ``B x 3 x T x H x W`` clips to the
last feature map ``B x D x t x h x w``, ``forward_head(feats)`` pools it to ``B x D``,
``forward(x) = forward_head(forward_features(x))``, and ``embed_dim`` is ``D``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vcl_infer.registry import Registry


class Backbone(nn.Module):
    """The backbone contract as a base class (see the module docstring); subclasses set
    ``embed_dim`` and implement :meth:`forward_features`."""

    embed_dim: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x T x H x W`` clips -> ``B x D x t x h x w`` last feature map."""
        raise NotImplementedError

    def forward_head(self, feats: torch.Tensor) -> torch.Tensor:
        """``B x D x t x h x w`` -> ``B x D`` by global average pooling."""
        return feats.mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x T x H x W`` clips -> ``B x D`` pooled (not normalised) embeddings."""
        return self.forward_head(self.forward_features(x))


BACKBONES: Registry = Registry("backbone")
register_backbone = BACKBONES.register
list_backbones = BACKBONES.describe


def create_backbone(name: str, **kwargs: Any) -> Backbone:
    """Build the backbone registered as ``name``; an unknown name lists the valid ones."""
    backbone: Backbone = BACKBONES.get(name)(**kwargs)
    return backbone
