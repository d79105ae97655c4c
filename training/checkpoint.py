"""vcl's own checkpoint format: save atomically, load without executing pickled code.

A checkpoint is a plain dict written with ``torch.save``::

    {"format": "vcl-checkpoint", "format_version": 1,
     "arch": "r3d_18", "arch_kwargs": {...}, "method": "tclr",
     "model": <backbone state_dict>, "clip_spec": ClipSpec.to_dict() | None,
     "config": {...resolved config...},
     ...training state under other keys ("optimizer", "scaler", "epoch", ...)}

It is read only with ``torch.load(path, map_location="cpu", weights_only=True)``: a file that
needs anything beyond tensors and plain containers is refused, never retried unsafely. A
``.safetensors`` file holds the model tensors only, with arch, method, arch_kwargs,
clip_spec and config as JSON strings in its metadata.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vcl_infer.clips.spec import ClipSpec
from vcl_infer.errors import VclError

FORMAT_NAME = "vcl-checkpoint"
FORMAT_VERSION = 1
RESERVED_KEYS = frozenset(
    {"format", "format_version", "arch", "arch_kwargs", "method", "model", "clip_spec", "config"}
)


class CheckpointError(VclError, ValueError):
    """A checkpoint file is missing, unsafe, of an unknown format, or does not fit the model."""


def _is_safetensors(path: Path) -> bool:
    return path.suffix == ".safetensors"


def _model_state(model: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(model, nn.Module):
        model = getattr(model, "module", model)  # unwrap DataParallel / DDP
        model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
        model = model.state_dict()
    return {k: v.detach().cpu().contiguous() for k, v in model.items()}


def _write_atomic(path: Path, write: Any) -> None:
    """Write through ``write(fileobj)`` to a temp file in the same folder, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: nn.Module | Mapping[str, torch.Tensor],
    arch: str,
    method: str,
    arch_kwargs: Mapping[str, Any] | None = None,
    clip_spec: ClipSpec | None = None,
    config: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Save a backbone (and optional training state) as a vcl checkpoint, atomically.

    Args:
        path: destination; a ``.safetensors`` suffix writes model tensors + JSON metadata.
        model: the backbone or its state dict (DataParallel / DDP / compiled wrappers unwrapped).
        arch: backbone registry name (``create_backbone(arch, **arch_kwargs)`` rebuilds it).
        method: training method (``"simclr"``, ``"tclr"``, ``"untrained"``, ...).
        arch_kwargs: keyword arguments the backbone was built with.
        clip_spec: preprocessing the weights expect.
        config: the resolved training config (plain, JSON-able values).
        extra: further top-level entries (``optimizer``, ``scaler``, ``epoch``, ...); must be
            tensors / plain containers so ``weights_only`` loading can read them back. Not
            supported for ``.safetensors``.

    Returns:
        The path written.
    """
    path = Path(path)
    extra = dict(extra or {})
    clash = sorted(RESERVED_KEYS & set(extra))
    if clash:
        raise ValueError(f"extra must not override checkpoint keys {clash}")
    state = _model_state(model)
    header: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "arch": str(arch),
        "arch_kwargs": dict(arch_kwargs or {}),
        "method": str(method),
        "clip_spec": clip_spec.to_dict() if clip_spec is not None else None,
        "config": dict(config or {}),
    }
    if _is_safetensors(path):
        if extra:
            raise ValueError("a .safetensors checkpoint holds model weights only; save training state as .pt")
        from safetensors.torch import save as st_save

        metadata = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in header.items()}
        blob = st_save(state, metadata=metadata)
        _write_atomic(path, lambda f: f.write(blob))
        return path
    payload = {**header, "model": state, **extra}
    _write_atomic(path, lambda f: torch.save(payload, f))
    return path


def read_weights_file(
    path: str | os.PathLike[str], *, inert_globals: list[Any] | None = None
) -> tuple[Any, dict[str, str] | None]:
    """Read a ``torch.save`` file with ``weights_only=True`` or a ``.safetensors`` file, on CPU.

    Args:
        path: regular file to read.
        inert_globals: ``(stand_in, "module.Name")`` pairs the unpickler may resolve to inert
            stand-ins (used to skip training-state objects such as a pickled AMP GradScaler);
            nothing pickled ever runs.

    Returns:
        ``(object, None)`` for a torch file, ``(dict of tensors, metadata)`` for safetensors.

    Raises:
        CheckpointError: missing / not a regular file, or the file needs arbitrary code to load.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file")
    if _is_safetensors(path):
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        if inert_globals:
            with torch.serialization.safe_globals(inert_globals):
                return torch.load(path, map_location="cpu", weights_only=True), None
        return torch.load(path, map_location="cpu", weights_only=True), None
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[-1][:300]
        raise CheckpointError(
            f"{path}: refused: the file contains objects other than tensors and plain containers, "
            f"and vcl never unpickles arbitrary objects (torch.load weights_only=True said: {first}). "
            "If you trust the file, re-save its state dict as .safetensors or a plain dict of "
            "tensors in a separate, trusted environment."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({exc})") from exc


def _from_safetensors_metadata(
    tensors: dict[str, torch.Tensor], meta: dict[str, str], path: Path
) -> dict[str, Any]:
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path}: safetensors file without vcl metadata (format={meta.get('format')!r}); "
            "import foreign weights with training.checkpoint_import.import_checkpoint"
        )
    out: dict[str, Any] = {"format": FORMAT_NAME, "model": tensors}
    for key in ("format_version", "arch_kwargs", "clip_spec", "config"):
        out[key] = json.loads(meta[key]) if key in meta else None
    out["arch"], out["method"] = meta.get("arch"), meta.get("method", "unknown")
    out["arch_kwargs"] = out["arch_kwargs"] or {}
    out["config"] = out["config"] or {}
    return out


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a vcl checkpoint (``torch.save`` dict or ``.safetensors``) onto the CPU.

    Returns:
        The checkpoint dict (see the module docstring); for safetensors the same keys, built
        from the metadata.

    Raises:
        CheckpointError: unsafe or unreadable file, or not a vcl checkpoint (the message says
            how to import TCLR / FAME / torchvision checkpoints instead).
    """
    path = Path(path)
    obj, meta = read_weights_file(path)
    if meta is not None:
        ckpt = _from_safetensors_metadata(obj, meta, path)
    else:
        ckpt = obj
        if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT_NAME:
            keys = sorted(map(str, ckpt))[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
            raise CheckpointError(
                f"{path}: not a vcl checkpoint (top-level keys: {keys}); import TCLR, FAME or "
                "torchvision checkpoints with training.checkpoint_import.import_checkpoint (vcl-export)"
            )
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: vcl checkpoint format_version {version!r} is not supported by this vcl "
            f"(reads <= {FORMAT_VERSION}); upgrade vcl"
        )
    if not isinstance(ckpt.get("arch"), str) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"{path}: vcl checkpoint lacks 'arch' or 'model'")
    return ckpt


def clip_spec_of(ckpt: Mapping[str, Any]) -> ClipSpec | None:
    """The :class:`ClipSpec` stored in a loaded checkpoint, or None."""
    data = ckpt.get("clip_spec")
    return ClipSpec.from_dict(data) if data else None
