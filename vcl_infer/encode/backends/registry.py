"""Backend registry: name -> backend class (built-ins register themselves on import)."""

from __future__ import annotations

from vcl_infer.registry import Registry

BACKENDS: Registry = Registry("backend")
register_backend = BACKENDS.register


def _load_builtins() -> None:
    # imported lazily: each module imports its heavy package only when a backend is created
    from vcl_infer.encode.backends import onnxruntime_backend, tensorrt_backend, torch_backend  # noqa: F401


def backend_class(name: str) -> type:
    """The backend class registered as ``name``; an unknown name lists the valid ones."""
    _load_builtins()
    return BACKENDS.get(name)


def list_backends() -> list[str]:
    _load_builtins()
    return list(BACKENDS.describe())
