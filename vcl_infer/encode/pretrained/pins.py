"""Trust-on-first-use pins: the full sha256 of a file whose publisher gives only a hash prefix.

torchvision names each checkpoint by the first 8 hex digits of its sha256 and torch.hub checks
exactly that prefix. vcl checks the same prefix on the first download (the publisher's own
check), then records the file's full sha256 here, beside the cached file, as JSON (never
pickle). From then on the cached file and any re-download must match the full pin, so a later
swap needs a full sha256 collision, not an 8-digit one.

The pin is written to a temporary file in the same folder, fsynced and renamed into place, so a
pin file that exists is whole; a damaged one is refused (never silently re-pinned).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path

from vcl_infer.encode.pretrained.cache import fsync_dir
from vcl_infer.errors import VclError

PIN_FORMAT = "vcl-sha256-pin/1"
PIN_SUFFIX = ".sha256.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class PinError(VclError):
    """A pin file exists but cannot be trusted (unreadable, damaged, or for another file)."""


def pin_path(checkpoint: Path) -> Path:
    """The pin file of the cached checkpoint ``checkpoint`` (``<file>.sha256.json`` beside it)."""
    return checkpoint.with_name(checkpoint.name + PIN_SUFFIX)


def read_pin(checkpoint: Path, prefix: str) -> str | None:
    """The full sha256 pinned for ``checkpoint``, or ``None`` when nothing is pinned yet.

    Raises:
        PinError: the pin file is not valid JSON, not a pin, or its hash does not start with ``prefix``.
    """
    path = pin_path(checkpoint)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PinError(f"the sha256 pin {path} cannot be read ({exc}); delete it to download and pin again") from None
    full = data.get("sha256") if isinstance(data, dict) else None
    if data.get("format") != PIN_FORMAT or not isinstance(full, str) or not _SHA256.match(full):
        raise PinError(f"{path} is not a vcl sha256 pin; delete it to download and pin again")
    if not full.startswith(prefix):
        raise PinError(
            f"the sha256 pinned in {path} ({full[:16]}...) does not start with the published prefix {prefix}; "
            "delete it to download and pin again"
        )
    return full


def write_pin(checkpoint: Path, full: str, *, url: str, prefix: str, prefix_source: str) -> Path:
    """Record ``full`` as the sha256 of ``checkpoint`` (atomically: temp file, fsync, rename)."""
    path = pin_path(checkpoint)
    record = {
        "format": PIN_FORMAT, "sha256": full, "sha256_prefix": prefix, "prefix_source": prefix_source,
        "url": url, "file": checkpoint.name, "pinned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "how": "trust on first use: the first download matched the publisher's prefix; later ones must match this",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(record, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise PinError(f"could not write the sha256 pin {path} ({exc}); the download was not used") from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path
