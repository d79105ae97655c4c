"""Backend registry: name -> class."""

from __future__ import annotations

from typing import Callable

_BACKENDS: dict[str, type] = {}


def register_backend(name: str) -> Callable[[type], type]:
    def decorate(cls: type) -> type:
        _BACKENDS[name] = cls
        return cls

    return decorate


def backend_class(name: str) -> type:
    # the built-in backends register themselves on import; import lazily (heavy deps inside)
    from vcl_infer.backends import onnxruntime_backend, tensorrt_backend, torch_backend  # noqa: F401

    if name not in _BACKENDS:
        raise KeyError(f"unknown backend {name!r}; valid: {', '.join(sorted(_BACKENDS))}")
    return _BACKENDS[name]


def list_backends() -> list[str]:
    backend_class("onnxruntime")
    return sorted(_BACKENDS)
