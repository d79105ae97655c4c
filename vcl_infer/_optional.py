"""Import optional heavy dependencies where they are used, with an error that says the fix."""

from __future__ import annotations

import importlib
from types import ModuleType

from vcl_infer.errors import MissingDependency

# module name -> (pip package, extra of vcl that installs it)
_WHERE = {
    "torch": ("torch", "train"),
    "onnx": ("onnx", "export"),
    "onnxruntime": ("onnxruntime", None),
    "tensorrt": ("tensorrt", "gpu"),
    "faiss": ("faiss-cpu", None),
    "decord": ("decord2", None),
    "av": ("av", None),
    "tqdm": ("tqdm", None),
    "safetensors": ("safetensors", "export"),
    "scipy": ("scipy", "train"),
    "sklearn": ("scikit-learn", "classify"),
    "matplotlib": ("matplotlib", "classify"),
    "ray": ("ray[data]", "distributed"),
    "pyarrow": ("pyarrow", "distributed"),
    "fastapi": ("fastapi", "serve"),
    "uvicorn": ("uvicorn", "serve"),
    "multipart": ("python-multipart", "serve"),
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependency` naming what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package, extra = _WHERE.get(module, (module, None))
        fix = f"pip install 'vcl[{extra}]'" if extra else f"pip install {package}"
        raise MissingDependency(
            f"vcl needs the '{package}' package for this ({exc}); install it with: {fix}"
        ) from exc
