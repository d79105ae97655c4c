"""Reading videos: safe opening, decord/PyAV readers, and isolated decode workers.

* :func:`open_video` (``vcl_infer.video.open``): regular files only, magic-byte sniffing,
  header checks, decord first and PyAV as the fallback; returns a :class:`VideoReader`.
* :func:`read_clips` (``vcl_infer.video.clips``): a file to fitted uint8 clips, in-process.
* :class:`DecodePool` and :func:`decode_clips` (``vcl_infer.video.isolated``): the same in
  worker processes (fresh interpreters, see ``_child``) with a hard timeout, for untrusted files;
  :func:`run_isolated` runs any other read of such a file (a query's time range) in one.

Importing this package loads neither decord nor PyAV; they are imported when a file is opened.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "open_video": "vcl_infer.video.open",
    "read_clips": "vcl_infer.video.clips",
    "DecodedVideo": "vcl_infer.video.clips",
    "DecodePool": "vcl_infer.video.isolated",
    "DecodeRequest": "vcl_infer.video.isolated",
    "decode_clips": "vcl_infer.video.isolated",
    "run_isolated": "vcl_infer.video.isolated",
    "VideoInfo": "vcl_infer.video.reader",
    "VideoReader": "vcl_infer.video.reader",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vcl_infer.video' has no attribute {name!r}")
