"""Training methods and their registry.

``create_method(name, backbone=..., spec=..., seed=..., **overrides)`` builds one of
``simclr``, ``moco``, ``tclr``, ``fame``, ``videomoco``, ``cyclecontrast``, ``vclr``, ``hcl``, ``mochi``,
``kcl``, ``tsc``, ``crossclr``, ``longshort``, ``supervised`` (see ``list_methods()``); each is an ``nn.Module``
whose ``training_step(clips, step)`` returns the loss (see :mod:`training.methods.base`).
"""

from training.methods import crossclr as _crossclr  # noqa: F401
from training.methods import cyclecontrast as _cyclecontrast  # noqa: F401
from training.methods import fame as _fame  # noqa: F401  (registers)
from training.methods import hcl as _hcl  # noqa: F401
from training.methods import longshort as _longshort  # noqa: F401
from training.methods import mochi as _mochi  # noqa: F401
from training.methods import moco as _moco  # noqa: F401
from training.methods import simclr as _simclr  # noqa: F401
from training.methods import supervised as _supervised  # noqa: F401
from training.methods import tclr as _tclr  # noqa: F401
from training.methods import tsc as _tsc  # noqa: F401
from training.methods import vclr as _vclr  # noqa: F401
from training.methods import videomoco as _videomoco  # noqa: F401
from training.methods.base import CommonHparams, Method, step_seed
from training.methods.registry import (
    create_method,
    list_methods,
    method_class,
    method_hparams,
    register_method,
)
from training.methods.views import DistinctClips, GlobalLocalClips

__all__ = [
    "CommonHparams",
    "DistinctClips",
    "GlobalLocalClips",
    "Method",
    "create_method",
    "list_methods",
    "method_class",
    "method_hparams",
    "register_method",
    "step_seed",
]
