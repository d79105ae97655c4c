"""Video backbones and their registry.

Contract shared by every backbone: ``forward_features(x)``: ``B x 3 x T x H x W -> B x D x t x
h x w``; ``forward_head(feats)``: ``-> B x D``; ``forward = forward_head . forward_features``;
attribute ``embed_dim = D``.
"""

from training.models import zoo as _zoo  # noqa: F401  (registers the backbones)
from training.models.registry import Backbone, create_backbone, list_backbones, register_backbone
from training.models.video_resnet import BasicBlock, VideoResNet, r2plus1d_midplanes

__all__ = [
    "Backbone",
    "BasicBlock",
    "VideoResNet",
    "create_backbone",
    "list_backbones",
    "r2plus1d_midplanes",
    "register_backbone",
]
