"""Contrastive losses: per method a pure function plus a thin module that validates its
hyperparameters, with the paper cited and the shapes stated.

The methods (:mod:`training.methods`) call the pure functions; the modules are for using a loss
on its own. Queues, momentum updates and heads live in :mod:`training.methods`, augmentations
and generators (FAME, frame dropping, segment shuffles) in :mod:`training.augment`.
"""

from training.losses.crossclr import CrossCLRLoss, crossclr_loss
from training.losses.cyclecontrast import CycleContrastLoss, cycle_contrast_terms, soft_nearest_neighbour
from training.losses.dense import DenseContrastLoss, dense_contrast_loss, dense_correspondence
from training.losses.hcl import HCLLoss, hcl_loss
from training.losses.info_nce import InfoNCELoss, info_nce_loss
from training.losses.longshort import LongShortLoss, longshort_loss_terms
from training.losses.mochi import MochiDraws, MoCHiLoss, draw_mochi, mochi_loss
from training.losses.moco import MoCoLoss, moco_loss, symmetric_moco_loss
from training.losses.tclr import TCLRLoss, global_local_loss, local_local_loss, tclr_loss, tclr_loss_terms
from training.losses.tsc import KCLLoss, TSCLoss, generate_targets, kcl_loss, tsc_loss
from training.losses.vclr import VCLRLoss, vclr_loss_terms
from training.losses.videomoco import DecayedMoCoLoss, decayed_moco_loss, route_adversarial_gradient

__all__ = [
    "CrossCLRLoss",
    "CycleContrastLoss",
    "DecayedMoCoLoss",
    "DenseContrastLoss",
    "HCLLoss",
    "InfoNCELoss",
    "KCLLoss",
    "LongShortLoss",
    "MoCHiLoss",
    "MoCoLoss",
    "MochiDraws",
    "TCLRLoss",
    "TSCLoss",
    "VCLRLoss",
    "crossclr_loss",
    "cycle_contrast_terms",
    "decayed_moco_loss",
    "dense_contrast_loss",
    "dense_correspondence",
    "draw_mochi",
    "generate_targets",
    "global_local_loss",
    "hcl_loss",
    "info_nce_loss",
    "kcl_loss",
    "local_local_loss",
    "longshort_loss_terms",
    "mochi_loss",
    "moco_loss",
    "route_adversarial_gradient",
    "soft_nearest_neighbour",
    "symmetric_moco_loss",
    "tclr_loss",
    "tclr_loss_terms",
    "tsc_loss",
    "vclr_loss_terms",
]
