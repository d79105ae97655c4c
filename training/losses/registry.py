"""The loss registry: a name -> ``nn.Module`` class dict with a decorator to fill it.

Every registered class takes keyword hyperparameters only, validates them in ``__init__``
(``ValueError`` on a bad value) and maps embeddings to a scalar loss in ``forward``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from torch import nn

C = TypeVar("C", bound=type[nn.Module])


@dataclass(frozen=True)
class LossEntry:
    """One registered loss: its class and a one-line description."""

    name: str
    cls: type[nn.Module]
    description: str


_LOSSES: dict[str, LossEntry] = {}


def register_loss(name: str, description: str = "") -> Callable[[C], C]:
    """Class decorator registering a loss ``nn.Module`` under ``name``.

    Args:
        name: registry name, e.g. ``"info_nce"``.
        description: one line shown by :func:`list_losses`; defaults to the first line of the
            class docstring.
    """

    def decorate(cls: C) -> C:
        if name in _LOSSES:
            raise ValueError(f"loss {name!r} is already registered")
        text = description or next(iter((cls.__doc__ or "").strip().splitlines()), "")
        _LOSSES[name] = LossEntry(name=name, cls=cls, description=text)
        return cls

    return decorate


def create_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build the loss registered as ``name`` with keyword hyperparameters ``kwargs``.

    Raises:
        KeyError: ``name`` is not registered; the message lists the valid names.
        ValueError: a hyperparameter is out of range (raised by the loss itself).
    """
    try:
        entry = _LOSSES[name]
    except KeyError:
        valid = ", ".join(sorted(_LOSSES))
        raise KeyError(f"unknown loss {name!r}; valid losses: {valid}") from None
    return entry.cls(**kwargs)


def list_losses() -> dict[str, str]:
    """Registered loss names mapped to their one-line descriptions, sorted by name."""
    return {name: _LOSSES[name].description for name in sorted(_LOSSES)}
