"""``--model`` resolution: a bundle path stays a path; a published encoder's name becomes its cached bundle."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import overload

from vcl_infer.encode.pretrained.cache import bundle_dir, checkpoint_path, exclusive, prefix_checkpoint_path
from vcl_infer.encode.pretrained.convert import BUNDLE_FILE, convert_checkpoint
from vcl_infer.encode.pretrained.download import download_verified
from vcl_infer.encode.pretrained.entries import PretrainedEntry, RegistryError, load_registry
from vcl_infer.encode.pretrained.pins import pin_path, read_pin, write_pin


def _looks_like_path(model: str) -> bool:
    return os.sep in model or (os.altsep is not None and os.altsep in model) or model.lower().endswith(".onnx")


def cached_checkpoint_path(entry: PretrainedEntry) -> Path:
    """Where ``entry``'s verified checkpoint is (or will be) cached."""
    entry.require_verifiable()
    if entry.sha256:
        return checkpoint_path(entry.sha256, entry.filename)
    return prefix_checkpoint_path(entry.sha256_prefix or "", entry.filename)


def known_sha256(entry: PretrainedEntry) -> str | None:
    """The full sha256 of ``entry``: from the registry, else pinned on first download, else ``None``."""
    if entry.sha256:
        return entry.sha256
    return read_pin(cached_checkpoint_path(entry), entry.sha256_prefix or "")


def fetch_checkpoint(entry: PretrainedEntry, *, progress: bool = False) -> Path:
    """The verified checkpoint file of ``entry`` in the cache, downloaded (or resumed) if needed.

    A full ``sha256`` is checked as it is. A prefix-only entry is checked against the full hash
    pinned on its first download; before that pin exists, against the publisher's prefix, and the
    file's full sha256 is then pinned before the file is used.
    """
    dest = cached_checkpoint_path(entry)
    with exclusive(dest.with_name(".lock")):
        if progress and not dest.is_file():
            print(f"downloading {entry.name} from {entry.url} (licence: {entry.licence})", file=sys.stderr, flush=True)
        if entry.sha256:
            return download_verified(entry.url, entry.sha256, dest, size=entry.size, progress=progress,
                                     hash_origin=entry.sha256_source)
        prefix = entry.sha256_prefix or ""
        pinned = read_pin(dest, prefix)
        if pinned:
            return download_verified(entry.url, pinned, dest, size=entry.size, progress=progress,
                                     hash_origin=f"pinned on first download in {pin_path(dest)}")

        def pin(full: str) -> None:
            write_pin(dest, full, url=entry.url, prefix=prefix, prefix_source=entry.sha256_source)

        return download_verified(entry.url, None, dest, sha256_prefix=prefix, on_verified=pin, size=entry.size,
                                 progress=progress, hash_origin=entry.sha256_source)


def pretrained_bundle(entry: PretrainedEntry, *, progress: bool = False) -> Path:
    """The cached bundle of ``entry`` (``.../model.onnx``), downloaded and converted on first use."""
    full = known_sha256(entry)
    if full and (bundle_dir(entry.name, full) / BUNDLE_FILE).is_file():
        return bundle_dir(entry.name, full) / BUNDLE_FILE
    checkpoint = fetch_checkpoint(entry, progress=progress)
    folder = bundle_dir(entry.name, known_sha256(entry) or "")  # pinned by now
    bundle = folder / BUNDLE_FILE
    with exclusive(folder.with_name(f".{folder.name}.lock")):
        if bundle.is_file():  # another process converted it while we waited
            return bundle
        return convert_checkpoint(entry, checkpoint, folder, progress=progress)


@overload
def resolve_model(model: None, *, progress: bool | None = None) -> None: ...
@overload
def resolve_model(model: str | os.PathLike, *, progress: bool | None = None) -> Path: ...


def resolve_model(model: str | os.PathLike | None, *, progress: bool | None = None) -> Path | None:
    """What ``--model`` names: ``None`` stays ``None`` (the default encoder), an existing path or
    anything path-like is returned as a path, a registry name gives its cached bundle.

    Args:
        model: a bundle path (``.onnx`` file or folder) or a published encoder name (``r2plus1d_18-k400``).
        progress: messages and a download bar on stderr; default: when stderr is a terminal.

    Raises:
        RegistryError: neither an existing path nor a known name (the known names are listed), or an
            entry with neither a sha256 nor a published prefix.
        PinError: the trust-on-first-use pin in the cache is damaged.
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
    """Registry names mapped to one line: description, architecture, licence, and how it is verified."""
    lines = {}
    for name, entry in sorted(load_registry().items()):
        how = entry.verification()
        if not entry.sha256 and entry.sha256_prefix:
            pinned = read_pin(cached_checkpoint_path(entry), entry.sha256_prefix)
            if pinned:
                how = f"sha256 {pinned[:12]}... pinned on first download (prefix {entry.sha256_prefix} checked then)"
        lines[name] = f"{entry.description} ({entry.arch}, {entry.licence}); verified by {how}"
    return lines
