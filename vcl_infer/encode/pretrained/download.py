"""Download one file, resumably, and keep it only if its sha256 is the expected one.

Bytes go to ``<dest>.part`` (its folder is named by the expected hash, see ``cache.py``). A
connection that drops keeps the part; the next attempt (or the next run) asks for the rest with
an HTTP ``Range`` request. When the byte count is complete the whole part is hashed: a match is
renamed to ``dest``, a mismatch is deleted (those bytes can never become the right file).

The expected hash is either the full sha256 or, where the publisher gives only that, a prefix
of it (torchvision's file names; torch.hub checks the same prefix). ``on_verified`` receives the
full digest of a file that passed, before it is renamed into place (``pins.py`` records it).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vcl_infer.encode.pretrained.cache import fsync_dir
from vcl_infer.errors import VclError

CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, socket.timeout, ConnectionError, TimeoutError)


class DownloadError(VclError):
    """The file could not be fetched (network, server, or too few bytes); a ``.part`` may be kept."""


class HashMismatch(DownloadError):
    """The downloaded bytes are not the file the registry names; nothing is kept."""


@dataclass
class _Attempt:
    """What one HTTP request added to the part file."""

    received: int
    total: int | None


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def matches_published_prefix(digest: str, prefix: str) -> bool:
    """Whether ``digest`` starts with the publisher's ``prefix`` (the check torch.hub makes)."""
    return digest.startswith(prefix)


@dataclass(frozen=True)
class Expected:
    """What a download must hash to: a full sha256, or the publisher's prefix of it."""

    sha256: str | None = None
    prefix: str | None = None
    origin: str = ""  # where the hash comes from, for the error message

    def __post_init__(self) -> None:
        if not (self.sha256 or self.prefix):
            raise ValueError("a download needs a sha256 or a sha256 prefix to verify against")

    def accepts(self, digest: str) -> bool:
        if self.sha256:
            return digest == self.sha256
        return matches_published_prefix(digest, self.prefix or "")

    def describe(self) -> str:
        origin = f" ({self.origin})" if self.origin else ""
        if self.sha256:
            return f"the expected sha256 {self.sha256[:16]}...{origin}"
        return f"the publisher's sha256 prefix {self.prefix}{origin}"


def _request(url: str, offset: int) -> urllib.request.Request:
    headers = {"User-Agent": "vcl (published-encoder download)"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.Request(url, headers=headers)


def _start(response, offset: int) -> tuple[int, int | None]:
    """(offset the body starts at, total file size or None) for a 200 or 206 response."""
    length = response.headers.get("Content-Length")
    if response.status == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != offset:
            raise DownloadError(f"the server answered the resume request with a wrong range ({match and match.group(0)})")
        return offset, None if match.group(3) == "*" else int(match.group(3))
    return 0, int(length) if length is not None else None  # 200: the whole file again


def _fetch_once(url: str, part: Path, size: int | None, timeout: float, bar) -> _Attempt:
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    try:
        response = urllib.request.urlopen(_request(url, offset), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing after our bytes: the part may already be whole
            match = re.match(r"bytes \*/(\d+)", exc.headers.get("Content-Range", ""))
            return _Attempt(0, int(match.group(1)) if match else offset)
        raise DownloadError(f"the server refused {url}: HTTP {exc.code} {exc.reason}") from None
    with response:
        if response.headers.get_content_type() == "text/html":
            raise DownloadError(
                f"{url} returned a web page instead of the checkpoint (a login or download-warning page?); "
                "download the file in a browser and put it where the error below says, or fix the entry's url"
            )
        start, total = _start(response, offset)
        if size is not None and total is not None and total != size:
            raise DownloadError(f"{url} is {total} bytes but the registry says {size}; the entry or the file changed")
        total = total or size
        if bar is not None:
            bar.reset(total=total)
            bar.update(start)
        received = 0
        with open(part, "r+b" if start and part.exists() else "wb") as handle:
            handle.seek(start)
            handle.truncate()
            while block := response.read(CHUNK):
                handle.write(block)
                received += len(block)
                if bar is not None:
                    bar.update(len(block))
                if total is not None and start + received > total:
                    break
            handle.flush()
            os.fsync(handle.fileno())
    return _Attempt(received, total)


def _progress_bar(enabled: bool, label: str):
    if not enabled:
        return None
    from vcl_infer._optional import require

    tqdm = require("tqdm")
    return tqdm.tqdm(desc=label, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, leave=False)


def download_verified(url: str, sha256: str | None, dest: Path, *, sha256_prefix: str | None = None,
                      on_verified: Callable[[str], None] | None = None, hash_origin: str = "",
                      size: int | None = None,
                      progress: bool = False, attempts: int = 3, timeout: float = 30.0,
                      retry_wait_s: float = 1.0) -> Path:
    """Fetch ``url`` to ``dest`` unless ``dest`` already holds a file that verifies.

    Args:
        url: http(s) address.
        sha256: expected hex digest of the whole file, or ``None`` to check ``sha256_prefix`` only.
        dest: final path; its ``.part`` sibling holds an unfinished download.
        sha256_prefix: the publisher's prefix of the digest (used when ``sha256`` is ``None``).
        on_verified: called with the full digest of a file that passed, before it is used or renamed
            into place; if it raises, the file is not used.
        hash_origin: where the expected hash comes from (said in errors).
        size: expected byte count when known (refuses a server that disagrees).
        progress: show a byte progress bar on stderr.
        attempts: requests tried (each resumes where the last stopped) before giving up.

    Returns:
        ``dest``.

    Raises:
        HashMismatch: the complete file has another hash (the part is deleted).
        DownloadError: the network or server failed on every attempt; the part is kept.
    """
    expected = Expected(sha256, sha256_prefix, hash_origin)
    if dest.is_file():
        digest = sha256_of(dest)
        if expected.accepts(digest):
            if on_verified is not None:
                on_verified(digest)
            return dest
        dest.unlink()  # a damaged or tampered cache entry: fetch it again
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    bar = _progress_bar(progress, dest.name)
    problem = "no attempt made"
    try:
        for attempt in range(attempts):
            if attempt:
                time.sleep(retry_wait_s * attempt)
            try:
                result = _fetch_once(url, part, size, timeout, bar)
            except _NETWORK_ERRORS as exc:
                problem = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
                continue
            have = part.stat().st_size if part.exists() else 0
            if result.total is not None and have < result.total:
                problem = f"the connection ended after {have} of {result.total} bytes"
                continue
            return _keep_if_verified(part, dest, expected, url, on_verified)
    finally:
        if bar is not None:
            bar.close()
    have = part.stat().st_size if part.exists() else 0
    kept = f"; {have} bytes are kept in {part} and the next run resumes from there" if have else ""
    raise DownloadError(
        f"could not download {url} after {attempts} attempt(s): {problem}{kept}. Check the network (or proxy "
        f"settings), or put a copy of the file at {dest} (it is checked against {expected.describe()})"
    )


def _keep_if_verified(part: Path, dest: Path, expected: Expected, url: str,
                      on_verified: Callable[[str], None] | None) -> Path:
    got = sha256_of(part)
    if not expected.accepts(got):
        size = part.stat().st_size
        part.unlink()
        raise HashMismatch(
            f"{url} gave {size} bytes with sha256 {got[:16]}..., which does not match {expected.describe()}; "
            "the file was deleted. The server may be serving something else (a changed release, a proxy page): "
            "check the url, or the registry entry's sha256"
        )
    if on_verified is not None:
        on_verified(got)  # e.g. the trust-on-first-use pin, written before the file becomes visible
    os.replace(part, dest)
    fsync_dir(dest.parent)
    return dest
