"""Checks that run before any decoder touches a file.

FFmpeg will happily block forever on a FIFO, read ``/dev/zero`` until memory runs out, or
follow an HLS playlist renamed ``x.mp4`` to other local files (reliability.md A5, A8). So
the path must be a regular file, and its first bytes must look like a binary container,
not a text playlist or description.
"""

from __future__ import annotations

import errno
import os
import stat

from vcl_infer.errors import NotARegularFile, UnsupportedFormat, VideoError

SNIFF_BYTES = 4096

# Text formats that make FFmpeg open further resources (HLS, ffconcat, SDP, DASH, ...).
_TEXT_PREFIXES = {
    b"#EXTM3U": "an HLS playlist",
    b"ffconcat": "an ffconcat script",
    b"v=0": "an SDP session description",
    b"<?xml": "an XML document (DASH manifest?)",
    b"<MPD": "a DASH manifest",
    b"[playlist]": "a PLS playlist",
    b"#!": "a script",
}

# Demuxers PyAV may use, and which the decord path is restricted to (FFmpeg names).
FORMAT_WHITELIST = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,asf,mpegts,mpeg,ogg"


def regular_file(path: str | os.PathLike) -> str:
    """Resolve ``path`` and return it if it is a regular file.

    Uses ``os.stat`` only (never ``open``), because opening a FIFO blocks.

    Raises:
        NotARegularFile: a directory, FIFO, socket or device (also behind a symlink).
        VideoError: the path does not exist or cannot be stat-ed.
    """
    resolved = os.path.realpath(os.fspath(path))
    try:
        mode = os.stat(resolved).st_mode
    except OSError as exc:
        broken = _broken_link(os.fspath(path), exc)
        if broken:
            raise NotARegularFile(str(path), f"refused: {broken}") from None
        raise VideoError(str(path), f"cannot stat file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        kind = (
            "a directory" if stat.S_ISDIR(mode)
            else "a FIFO" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file"
        )
        raise NotARegularFile(str(path), f"refused: {kind} (only regular files are read)")
    return resolved


def _broken_link(path: str, exc: OSError) -> str | None:
    """What is wrong with ``path`` if it is a symbolic link that cannot be followed, else None."""
    if not os.path.islink(path):
        return None
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    if exc.errno == errno.ELOOP:
        return f"a symbolic link loop ({os.path.basename(path)} -> {target} -> ... never reaches a file)"
    if exc.errno == errno.ENOENT:
        return f"a dangling symbolic link (its target {target} does not exist)"
    return f"a symbolic link to {target} that cannot be followed ({exc.strerror or exc})"


def sniff(path: str, shown: str | None = None) -> None:
    """Reject empty files and text content by their first bytes.

    Args:
        path: a resolved regular file (see :func:`regular_file`).
        shown: the path to name in errors (the caller's spelling).

    Raises:
        UnsupportedFormat: empty, a known text playlist/script, or plain text.
    """
    shown = shown or path
    # O_NONBLOCK: if the file was swapped for a FIFO after the stat, open must not block.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotARegularFile(shown, "refused: changed into a non-regular file")
        head = os.read(fd, SNIFF_BYTES)
    finally:
        os.close(fd)
    if not head:
        raise UnsupportedFormat(shown, "empty file")
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    for prefix, what in _TEXT_PREFIXES.items():
        if text[: len(prefix)].lower() == prefix.lower():
            raise UnsupportedFormat(shown, f"refused: the file is {what}, not a video")
    if _looks_like_text(head):
        raise UnsupportedFormat(shown, "refused: the file is text, not a video")


def _looks_like_text(head: bytes) -> bool:
    """Whether ``head`` is plain text: no NUL bytes and nearly all printable ASCII.

    Every container we accept has binary headers (box sizes, EBML ids, RIFF sizes) within
    the first bytes, so they contain NULs or high bytes.
    """
    if b"\x00" in head:
        return False
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    return printable >= 0.97 * len(head)
