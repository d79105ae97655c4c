"""Hyperparameter and shape checks shared by losses, augmentations and methods (raise ``ValueError``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor


def check_temperature(temperature: float) -> float:
    """Return ``temperature`` as a float; raise ``ValueError`` unless it is finite and > 0."""
    t = float(temperature)
    if not (t > 0.0 and t != float("inf")):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return t


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """Return ``value``; raise ``ValueError`` naming the valid ``choices`` if it is not one."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_shape(name: str, x: Tensor, ndim: int, layout: str) -> None:
    """Raise ``ValueError`` unless ``x`` has ``ndim`` dimensions (``layout`` names them)."""
    if x.dim() != ndim:
        raise ValueError(f"{name} must be {layout} ({ndim}-D), got shape {tuple(x.shape)}")


def check_weight(name: str, value: float) -> float:
    """Return a loss-term weight as a float; raise ``ValueError`` unless it is finite and >= 0."""
    w = float(value)
    if not (w >= 0.0 and math.isfinite(w)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return w
