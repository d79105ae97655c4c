"""The backbone registry.

Every registered constructor takes keyword arguments only and returns an ``nn.Module`` that
follows the backbone contract: ``forward_features(x)`` maps ``B x 3 x T x H x W`` clips to the
last feature map ``B x D x t x h x w``, ``forward_head(feats)`` pools it to ``B x D``,
``forward(x) = forward_head(forward_features(x))``, and ``embed_dim`` is ``D``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vcl_infer.registry import Registry

BACKBONES: Registry = Registry("backbone")
register_backbone = BACKBONES.register
list_backbones = BACKBONES.describe


def create_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build the backbone registered as ``name``; an unknown name lists the valid ones."""
    return BACKBONES.get(name)(**kwargs)
