"""The method registry: a name -> :class:`~training.methods.base.Method` subclass dict.

``create_method(name, backbone=..., spec=..., **overrides)`` builds a method with the paper's
hyperparameters, replaced by ``overrides`` (validated by the method's hyperparameter
dataclass); ``list_methods()`` maps names to one-line descriptions.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from vcl_infer.clips.spec import ClipSpec
from vcl_infer.registry import Registry

if TYPE_CHECKING:
    from training.methods.base import Method
    from training.models.registry import Backbone

M = TypeVar("M", bound="type[Method[Any]]")
METHODS: Registry = Registry("method")


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator registering a ``Method`` subclass under ``name`` (sets ``cls.name``)."""

    def decorate(cls: M) -> M:
        cls.name = name
        return METHODS.register(name)(cls)

    return decorate


def method_class(name: str) -> type[Method[Any]]:
    """The class registered as ``name``; an unknown name lists the valid ones (KeyError)."""
    cls: type[Method[Any]] = METHODS.get(name)
    return cls


def method_hparams(name: str, **overrides: Any) -> Any:
    """The method's hyperparameter dataclass with ``overrides`` applied and validated.

    Raises:
        KeyError: unknown method.
        ValueError: unknown hyperparameter name or invalid value.
    """
    cls = method_class(name)
    fields = {f.name for f in dataclasses.fields(cls.Hparams)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"method {name!r} has no hyperparameter(s) {unknown}; valid: {sorted(fields)}")
    return cls.Hparams(**overrides)


def create_method(name: str, *, backbone: Backbone, spec: ClipSpec, seed: int = 0, **overrides: Any) -> Method[Any]:
    """Build method ``name`` around ``backbone`` for clips described by ``spec``.

    Args:
        name: registry name (``simclr``, ``moco``, ``tclr``, ``fame``).
        backbone: a registered backbone (``forward_features`` / ``forward_head`` / ``embed_dim``).
        spec: the clip spec of the training views (T, crop, mean/std).
        seed: base seed of the per-step randomness (augmentation, shuffles, initial queue).
        **overrides: hyperparameters replacing the paper defaults.
    """
    hparams = method_hparams(name, **overrides)
    return method_class(name)(backbone=backbone, spec=spec, hparams=hparams, seed=seed)


list_methods = METHODS.describe
