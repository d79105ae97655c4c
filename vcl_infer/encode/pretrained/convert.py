"""Convert a downloaded checkpoint into an encoder bundle, once, with ``vcl-export`` in a child process.

The runtime never imports ``export`` or torch: the conversion runs ``python -m export.cli`` (the
same command a user would type) and is only possible where the ``export`` extra is installed.
Its bundle is staged in a temporary folder and renamed into the cache, so a later run finds
either a whole, verified bundle or none, and needs no torch.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vcl_infer.encode.pretrained.cache import fsync_dir
from vcl_infer.encode.pretrained.entries import PretrainedEntry
from vcl_infer.errors import MissingDependency, VclError

BUNDLE_FILE = "model.onnx"
SOURCE_FILE = "source.json"
_NEEDED = ("torch", "onnx", "export", "training")


class ConversionFailed(VclError):
    """``vcl-export`` could not turn the checkpoint into a verified bundle."""


def missing_export_modules() -> list[str]:
    """The modules a conversion needs that this environment lacks (found without importing them)."""
    return [name for name in _NEEDED if importlib.util.find_spec(name) is None]


def convert_checkpoint(entry: PretrainedEntry, checkpoint: Path, target: Path, *, progress: bool = False,
                       timeout_s: float = 3600.0) -> Path:
    """Export ``checkpoint`` (verified file of ``entry``) as the bundle folder ``target``.

    Returns:
        ``target / model.onnx``.

    Raises:
        MissingDependency: torch / onnx / the export package are not installed (names the extra).
        ConversionFailed: ``vcl-export`` failed (its message is included); nothing is left at ``target``.
    """
    missing = missing_export_modules()
    if missing:
        raise MissingDependency(
            f"converting the published encoder {entry.name!r} into a bundle needs {', '.join(missing)}, once: "
            f"pip install 'vcl[export]'. The bundle is then cached in {target} and later runs need no torch. "
            f"Or convert it on another machine (`vcl-export --pretrained {entry.name} --out DIR`) and pass "
            "--model DIR/model.onnx"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        command = [sys.executable, "-m", "export.cli", str(checkpoint), "--format", entry.format,
                   "--arch", entry.arch, "--out", str(staging / BUNDLE_FILE), "--json"]
        if progress:
            print(f"converting {entry.name} to an encoder bundle (once) ...", file=sys.stderr, flush=True)
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise ConversionFailed(f"vcl-export could not convert {entry.name!r}: " + " | ".join(detail))
        record = {"entry": entry.to_dict(), "checkpoint": str(checkpoint), "converted_at": time.time(),
                  "export": json.loads(done.stdout).get("checks", [])}
        (staging / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
        fsync_dir(staging)
        staging.rename(target)  # atomic; the caller holds the lock, so target does not exist
        fsync_dir(target.parent)
    except subprocess.TimeoutExpired:
        raise ConversionFailed(f"converting {entry.name!r} took longer than {timeout_s:.0f} s; nothing was kept") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target / BUNDLE_FILE
