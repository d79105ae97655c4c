"""Contrastive losses (and the FAME augmentation) with a small registry.

``create_loss(name, **hyperparameters)`` builds a registered loss module; ``list_losses()``
names them. The pure functions are importable directly from their modules.
"""

from training.losses.fame import FAMEAugment, fame_foreground_mask, fame_merge
from training.losses.info_nce import InfoNCELoss, info_nce_loss
from training.losses.moco import (
    KeyQueue,
    MoCoLoss,
    moco_loss,
    momentum_update,
    split_batch_forward,
    symmetric_moco_loss,
)
from training.losses.registry import create_loss, list_losses, register_loss
from training.losses.tclr import TCLRLoss, global_local_loss, local_local_loss, tclr_loss, tclr_loss_terms

__all__ = [
    "FAMEAugment",
    "InfoNCELoss",
    "KeyQueue",
    "MoCoLoss",
    "TCLRLoss",
    "create_loss",
    "fame_foreground_mask",
    "fame_merge",
    "global_local_loss",
    "info_nce_loss",
    "list_losses",
    "local_local_loss",
    "moco_loss",
    "momentum_update",
    "register_loss",
    "split_batch_forward",
    "symmetric_moco_loss",
    "tclr_loss",
    "tclr_loss_terms",
]
