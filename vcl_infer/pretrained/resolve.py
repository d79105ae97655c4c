"""``--model`` resolution: a bundle path stays a path; a published encoder's name becomes its cached bundle."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from vcl_infer.pretrained.cache import bundle_dir, checkpoint_path, exclusive
from vcl_infer.pretrained.convert import BUNDLE_FILE, convert_checkpoint
from vcl_infer.pretrained.download import download_verified
from vcl_infer.pretrained.entries import PretrainedEntry, RegistryError, load_registry


def _looks_like_path(model: str) -> bool:
    return os.sep in model or (os.altsep is not None and os.altsep in model) or model.lower().endswith(".onnx")


def fetch_checkpoint(entry: PretrainedEntry, *, progress: bool = False) -> Path:
    """The verified checkpoint file of ``entry`` in the cache, downloaded (or resumed) if needed."""
    sha256 = entry.pinned_sha256()
    dest = checkpoint_path(sha256, entry.filename)
    with exclusive(dest.with_name(".lock")):
        if progress and not dest.is_file():
            print(f"downloading {entry.name} from {entry.url} (licence: {entry.licence})", file=sys.stderr, flush=True)
        return download_verified(entry.url, sha256, dest, size=entry.size, progress=progress)


def pretrained_bundle(entry: PretrainedEntry, *, progress: bool = False) -> Path:
    """The cached bundle of ``entry`` (``.../model.onnx``), downloaded and converted on first use."""
    folder = bundle_dir(entry.name, entry.pinned_sha256())
    bundle = folder / BUNDLE_FILE
    if bundle.is_file():
        return bundle
    with exclusive(folder.with_name(f".{folder.name}.lock")):
        if bundle.is_file():  # another process converted it while we waited
            return bundle
        checkpoint = fetch_checkpoint(entry, progress=progress)
        return convert_checkpoint(entry, checkpoint, folder, progress=progress)


def resolve_model(model: str | os.PathLike | None, *, progress: bool | None = None) -> Path | None:
    """What ``--model`` names: ``None`` stays ``None`` (the default encoder), an existing path or
    anything path-like is returned as a path, a registry name gives its cached bundle.

    Args:
        model: a bundle path (``.onnx`` file or folder) or a published encoder name (``r2plus1d_18-k400``).
        progress: messages and a download bar on stderr; default: when stderr is a terminal.

    Raises:
        RegistryError: neither an existing path nor a known name (the known names are listed), or an
            entry without a pinned sha256.
        DownloadError / HashMismatch / ConversionFailed / MissingDependency: from the first use of a name.
    """
    if model is None:
        return None
    if isinstance(model, Path) or os.path.exists(model) or _looks_like_path(str(model)):
        return Path(model)
    entries = load_registry()
    if model not in entries:
        raise RegistryError(
            f"--model {model!r} is neither a bundle on disk nor a published encoder name; a bundle is an .onnx "
            f"file or a folder with model.onnx, the names are: {', '.join(sorted(entries))}"
        )
    if progress is None:
        progress = sys.stderr.isatty()
    return pretrained_bundle(entries[model], progress=progress)


def describe_published() -> dict[str, str]:
    """Registry names mapped to one line: description, architecture, licence, whether it is pinned."""
    lines = {}
    for name, entry in sorted(load_registry().items()):
        pinned = "" if entry.sha256 else " [sha256 not pinned yet]"
        lines[name] = f"{entry.description} ({entry.arch}, {entry.licence}){pinned}"
    return lines

