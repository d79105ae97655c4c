"""The backbone registry: a name -> constructor dict with a decorator to fill it.

Every registered constructor takes keyword arguments only and returns an ``nn.Module`` that
follows the backbone contract: ``forward_features(x)`` maps ``B x 3 x T x H x W`` clips to the
last feature map ``B x D x t x h x w``, ``forward_head(feats)`` pools it to ``B x D``,
``forward(x) = forward_head(forward_features(x))``, and ``embed_dim`` is ``D``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from torch import nn

F = TypeVar("F", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class BackboneEntry:
    """One registered backbone: its constructor and a one-line description."""

    name: str
    fn: Callable[..., nn.Module]
    description: str


_BACKBONES: dict[str, BackboneEntry] = {}


def register_backbone(name: str, description: str = "") -> Callable[[F], F]:
    """Decorator registering a backbone constructor under ``name``.

    Args:
        name: registry name, e.g. ``"r3d_18"``.
        description: one line shown by :func:`list_backbones`; defaults to the first line of
            the constructor's docstring.
    """

    def decorate(fn: F) -> F:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} is already registered")
        text = description or next(iter((fn.__doc__ or "").strip().splitlines()), "")
        _BACKBONES[name] = BackboneEntry(name=name, fn=fn, description=text)
        return fn

    return decorate


def create_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build the backbone registered as ``name`` with keyword arguments ``kwargs``.

    Raises:
        KeyError: ``name`` is not registered; the message lists the valid names.
    """
    try:
        entry = _BACKBONES[name]
    except KeyError:
        valid = ", ".join(sorted(_BACKBONES))
        raise KeyError(f"unknown backbone {name!r}; valid backbones: {valid}") from None
    return entry.fn(**kwargs)


def list_backbones() -> dict[str, str]:
    """Registered backbone names mapped to their one-line descriptions, sorted by name."""
    return {name: _BACKBONES[name].description for name in sorted(_BACKBONES)}
