"""Contrastive losses (and the FAME augmentation) with a small registry.

``create_loss(name, **hyperparameters)`` builds a registered loss module; ``list_losses()``
names them. The pure functions are importable directly from their modules, and the main ones
from here.
"""

from training.losses.crossclr import CrossCLRLoss, crossclr_loss
from training.losses.cyclecontrast import CycleContrastLoss, cycle_contrast_terms, soft_nearest_neighbour
from training.losses.dense import DenseContrastLoss, DenseHead, dense_contrast_loss, dense_correspondence
from training.losses.fame import FAMEAugment, fame_foreground_mask, fame_merge
from training.losses.hcl import HCLLoss, hcl_loss
from training.losses.info_nce import InfoNCELoss, info_nce_loss
from training.losses.longshort import LongShortLoss, longshort_loss_terms
from training.losses.mochi import MochiDraws, MoCHiLoss, draw_mochi, mochi_loss
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
from training.losses.tsc import KCLLoss, TSCLoss, generate_targets, kcl_loss, tsc_loss
from training.losses.vclr import VCLRLoss, vclr_loss_terms
from training.losses.videomoco import AgedKeyQueue, DecayedMoCoLoss, decayed_moco_loss, drop_frames

__all__ = [
    "AgedKeyQueue",
    "CrossCLRLoss",
    "CycleContrastLoss",
    "DecayedMoCoLoss",
    "DenseContrastLoss",
    "DenseHead",
    "FAMEAugment",
    "HCLLoss",
    "InfoNCELoss",
    "KCLLoss",
    "KeyQueue",
    "LongShortLoss",
    "MoCHiLoss",
    "MoCoLoss",
    "MochiDraws",
    "TCLRLoss",
    "TSCLoss",
    "VCLRLoss",
    "create_loss",
    "crossclr_loss",
    "cycle_contrast_terms",
    "decayed_moco_loss",
    "dense_contrast_loss",
    "dense_correspondence",
    "draw_mochi",
    "drop_frames",
    "fame_foreground_mask",
    "fame_merge",
    "generate_targets",
    "global_local_loss",
    "hcl_loss",
    "info_nce_loss",
    "kcl_loss",
    "list_losses",
    "local_local_loss",
    "longshort_loss_terms",
    "mochi_loss",
    "moco_loss",
    "momentum_update",
    "register_loss",
    "soft_nearest_neighbour",
    "split_batch_forward",
    "symmetric_moco_loss",
    "tclr_loss",
    "tclr_loss_terms",
    "tsc_loss",
    "vclr_loss_terms",
]
