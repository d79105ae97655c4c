"""The registry of published encoders: name -> where the checkpoint is, its sha256, how to convert it.

Built-in entries cover the published checkpoints ``vcl-export`` already imports exactly
(``training.checkpoint_import``). Users (and tests) add or amend entries with JSON files named
by the ``VCL_REGISTRY`` environment variable (several joined with ``os.pathsep``)::

    {"my-encoder": {"url": "https://host/file.pth", "sha256": "<64 hex>", "format": "vcl",
                    "arch": "r3d_small", "licence": "MIT"}}

An entry is verified by a full ``sha256`` or, where the publisher only gives a prefix of it
(torchvision's file names), by ``sha256_prefix`` plus ``sha256_source`` saying where the prefix
is published. A prefix-only entry is pinned to the file's full sha256 on its first verified
download (``pins.py``, trust on first use). An entry with neither is refused. A file's entry with
the name of a built-in one updates only the fields it gives, which is how a user pins a full
sha256 of their own.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from vcl_infer.errors import VclError

REGISTRY_ENV = "VCL_REGISTRY"
FORMATS = ("vcl", "torchvision", "tclr", "fame")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PREFIX = re.compile(r"^[0-9a-f]{8,64}$")

_TORCHVISION_PREFIX = (
    "torchvision's file name (the first 8 hex digits of the file's sha256; torch.hub checks the same prefix)"
)
_TCLR_NO_HASH = "the authors publish no checksum"


class RegistryError(VclError):
    """An unknown name, or a registry entry / registry file that cannot be used."""


@dataclass(frozen=True)
class PretrainedEntry:
    """One published encoder checkpoint.

    Attributes:
        name: the registry name (``--model NAME``).
        url: ``https://`` (or ``http://``) address of the checkpoint file.
        sha256: full hex sha256 of the file, or ``None`` when only ``sha256_prefix`` is published.
        format: checkpoint layout for ``vcl-export --format`` (``torchvision``, ``tclr``, ``fame``, ``vcl``).
        arch: vcl backbone the weights load into.
        licence: licence of the weights as their publisher states it.
        description: one line for listings.
        source: page the URL and licence were taken from.
        size: bytes of the file, when known (a longer download is refused early).
        sha256_prefix: the publisher's prefix of the sha256 (at least 8 hex digits); checked on the first
            download, after which the full hash is pinned in the cache. ``sha256`` must start with it.
        sha256_source: where ``sha256`` / ``sha256_prefix`` is published, or why there is none.
    """

    name: str
    url: str
    sha256: str | None
    format: str
    arch: str
    licence: str
    description: str = ""
    source: str = ""
    size: int | None = None
    sha256_prefix: str | None = None
    sha256_source: str = ""

    def __post_init__(self) -> None:
        problems = []
        if urlparse(self.url).scheme not in ("https", "http"):
            problems.append(f"url must be http(s), got {self.url!r}")
        if self.sha256 is not None and not _SHA256.match(self.sha256):
            problems.append("sha256 must be 64 lowercase hex digits")
        if self.sha256_prefix is not None and not _PREFIX.match(self.sha256_prefix):
            problems.append("sha256_prefix must be 8 to 64 lowercase hex digits")
        if self.sha256_prefix and not self.sha256 and not self.sha256_source:
            problems.append("a prefix-only entry must say where the prefix is published (sha256_source)")
        if self.sha256 and self.sha256_prefix and not self.sha256.startswith(self.sha256_prefix):
            problems.append(f"sha256 {self.sha256[:12]}... does not start with the published prefix {self.sha256_prefix}")
        if self.format not in FORMATS:
            problems.append(f"format must be one of {', '.join(FORMATS)}")
        if self.size is not None and self.size <= 0:
            problems.append("size must be positive")
        if problems:
            raise RegistryError(f"registry entry {self.name!r}: " + "; ".join(problems))

    @property
    def filename(self) -> str:
        """The checkpoint's file name (the URL's last path part; it keeps the suffix the importer reads)."""
        return Path(urlparse(self.url).path).name or "checkpoint.pth"

    def require_verifiable(self) -> None:
        """Refuse (before any download) an entry with neither a full sha256 nor a published prefix."""
        if self.sha256 or self.sha256_prefix:
            return
        raise RegistryError(
            f"published encoder {self.name!r} has no sha256 to verify it against, so vcl will not download it: "
            f"{self.sha256_source or 'the entry gives none'}. Pin it once: download {self.url}, check the file, "
            f'then write {{"{self.name}": {{"sha256": "<the 64 hex digits of sha256sum {self.filename}>"}}}} '
            f"to a JSON file and set {REGISTRY_ENV}=/path/to/that.json"
        )

    def verification(self) -> str:
        """One line: how a download of this entry is verified."""
        if self.sha256:
            return f"sha256 {self.sha256[:12]}... (full, from {self.sha256_source or 'the registry'})"
        if self.sha256_prefix:
            return (f"sha256 prefix {self.sha256_prefix} from {self.sha256_source}; the full sha256 is pinned on "
                    "the first download (trust on first use)")
        return "no sha256: refused until you pin one with VCL_REGISTRY"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_TORCHVISION_LICENCE = (
    "BSD-3-Clause (torchvision); trained on Kinetics-400, whose videos carry their own YouTube terms"
)
_TORCHVISION_PAGE = "https://pytorch.org/vision/stable/models.html#video-classification"
_TCLR_PAGE = "https://github.com/DAVEISHAN/TCLR#pretrained-weights"


def _drive(file_id: str) -> str:
    # Google Drive's direct-download endpoint; confirm=t skips the "cannot scan for viruses" page
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


BUILTIN: tuple[PretrainedEntry, ...] = (
    PretrainedEntry(
        name="r3d_18-k400", url="https://download.pytorch.org/models/r3d_18-b3b3357e.pth",
        sha256=None, sha256_prefix="b3b3357e", sha256_source=_TORCHVISION_PREFIX,
        format="torchvision", arch="r3d_18", licence=_TORCHVISION_LICENCE, source=_TORCHVISION_PAGE,
        description="torchvision R3D-18, supervised on Kinetics-400",
    ),
    PretrainedEntry(
        name="r2plus1d_18-k400", url="https://download.pytorch.org/models/r2plus1d_18-91a641e6.pth",
        sha256=None, sha256_prefix="91a641e6", sha256_source=_TORCHVISION_PREFIX,
        format="torchvision", arch="r2plus1d_18", licence=_TORCHVISION_LICENCE, source=_TORCHVISION_PAGE,
        description="torchvision R(2+1)D-18, supervised on Kinetics-400",
    ),
    PretrainedEntry(
        name="tclr-r3d_18-ucf101", url=_drive("1wGr6KsC4TcRweAGOFwmOYBPeZe0oGV7r"),
        sha256=None, sha256_source=_TCLR_NO_HASH, format="tclr", arch="r3d_18_tclr",
        licence="MIT (DAVEISHAN/TCLR)", source=_TCLR_PAGE,
        description="TCLR R3D-18, self-supervised on UCF101 (BGR input)",
    ),
    PretrainedEntry(
        name="tclr-r3d_18-k400", url=_drive("1m-u8N18dYFqP9B2JF3dEYOowKg3xDrds"),
        sha256=None, sha256_source=_TCLR_NO_HASH, format="tclr", arch="r3d_18_tclr",
        licence="MIT (DAVEISHAN/TCLR)", source=_TCLR_PAGE,
        description="TCLR R3D-18, self-supervised on Kinetics-400 (BGR input)",
    ),
    PretrainedEntry(
        name="tclr-r2plus1d_18-k400", url=_drive("1cuM4vFJA8wDDYmkQeAhwBUDQD0aDGmqD"),
        sha256=None, sha256_source=_TCLR_NO_HASH, format="tclr", arch="r2plus1d_18",
        licence="MIT (DAVEISHAN/TCLR)", source=_TCLR_PAGE,
        description="TCLR R(2+1)D-18, self-supervised on Kinetics-400 (BGR input)",
    ),
)


def _entry_from(name: str, data: Any, base: PretrainedEntry | None, origin: str) -> PretrainedEntry:
    if not isinstance(data, dict):
        raise RegistryError(f"{origin}: entry {name!r} must be a JSON object")
    known = {f.name for f in fields(PretrainedEntry)} - {"name"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise RegistryError(f"{origin}: entry {name!r} has unknown fields {unknown}; known: {sorted(known)}")
    try:
        if base is not None:
            if "sha256" in data and "sha256_source" not in data:
                data = {**data, "sha256_source": f"pinned in {origin}"}
            return replace(base, **data)
        return PretrainedEntry(name=name, **{"sha256": None, **data})
    except TypeError as exc:  # a required field is missing
        raise RegistryError(
            f"{origin}: entry {name!r} needs url, format, arch, licence and sha256 (or sha256_prefix and "
            f"sha256_source) ({exc})"
        ) from None


def _registry_files() -> list[Path]:
    value = os.environ.get(REGISTRY_ENV, "")
    return [Path(p) for p in value.split(os.pathsep) if p]


def load_registry(extra_files: list[str | os.PathLike] | None = None) -> dict[str, PretrainedEntry]:
    """Built-in entries, updated by the files in ``VCL_REGISTRY`` and then ``extra_files``, in order.

    Raises:
        RegistryError: a file is missing, not JSON, or holds an invalid entry.
    """
    entries = {e.name: e for e in BUILTIN}
    for path in _registry_files() + [Path(p) for p in extra_files or ()]:
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise RegistryError(f"registry file {path} cannot be read ({exc}); fix {REGISTRY_ENV}") from None
        except ValueError as exc:
            raise RegistryError(f"registry file {path} is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise RegistryError(f"registry file {path} must map names to entries")
        for name, fields_ in data.items():
            entries[name] = _entry_from(name, fields_, entries.get(name), str(path))
    return entries


def get_entry(name: str, extra_files: list[str | os.PathLike] | None = None) -> PretrainedEntry:
    """The entry called ``name``; an unknown name lists the known ones."""
    entries = load_registry(extra_files)
    if name not in entries:
        raise RegistryError(f"no published encoder called {name!r}; known: {', '.join(sorted(entries))}")
    return entries[name]
