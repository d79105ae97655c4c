"""Console-script entry points of the torch side (``vcl-train``, ``vcl-train-eval``, ``vcl-export``).

They are installed by the base install too, where torch is absent. Without this wrapper a
user got a raw ``ModuleNotFoundError: No module named 'torch'`` traceback; now the command
says which extra to install and exits with status 1. Only the packages an extra provides are
translated: any other import error is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

# extra -> top-level modules it installs (pyproject.toml [project.optional-dependencies])
_EXTRA_MODULES = {
    "train": {"torch", "yaml", "matplotlib", "scipy"},
    "export": {"torch", "onnx", "onnxscript", "safetensors"},
}
_TORCH_HINT = ("on a machine without a GPU install the CPU build of torch first, "
               "e.g. pip install torch --index-url https://download.pytorch.org/whl/cpu")


def missing_extra_message(program: str, extra: str, module: str) -> str:
    """The one-line error for ``program`` when ``module`` (from ``extra``) is not installed."""
    message = f"Error: {program} needs the '{module}' package, which is not installed: pip install 'vcl[{extra}]'"
    return message + (f" ({_TORCH_HINT})" if module == "torch" else "")


def run_guarded(program: str, target: str, extra: str) -> None:
    """Import ``target`` (``module:function``) and call it; a missing package of ``extra`` -> clean exit 1."""
    from vcl_infer.errors import MissingDependency

    module_name, function = target.split(":")
    try:
        getattr(importlib.import_module(module_name), function)()
    except MissingDependency as exc:  # already names its extra
        sys.exit(f"Error: {exc}")
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in _EXTRA_MODULES[extra]:
            raise
        sys.exit(missing_extra_message(program, extra, top))


def train() -> None:
    """``vcl-train``."""
    run_guarded("vcl-train", "training.cli:main", "train")


def train_eval() -> None:
    """``vcl-train-eval``."""
    run_guarded("vcl-train-eval", "training.eval_cli:main", "train")


def export() -> None:
    """``vcl-export``."""
    run_guarded("vcl-export", "export.cli:main", "export")
