"""The loss registry.

Every registered class takes keyword hyperparameters only, validates them in ``__init__``
(``ValueError`` on a bad value) and maps embeddings to a scalar loss in ``forward``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from vcl_infer.registry import Registry

LOSSES: Registry = Registry("loss", plural="losses")
register_loss = LOSSES.register
list_losses = LOSSES.describe


def create_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build the loss registered as ``name``; an unknown name lists the valid ones."""
    return LOSSES.get(name)(**kwargs)
