"""Child Python processes that never re-run the parent's ``__main__``.

``multiprocessing``'s ``spawn`` re-imports the parent's main script in every child. A plain
script that calls ``decode_clips`` at top level (the README's snippet, pasted as is) is then
run again inside the child, which tries to start its own child while bootstrapping and dies
("decode workers die while starting"). Here a child is a fresh ``python -c`` that imports
only the module it is told to run, talking to the parent over a socket pair with
``multiprocessing.connection`` (the same messages as before). The parent's ``sys.path`` is
sent first, as plain strings, so the child imports the same code.

:class:`ChildProcess` has the subset of ``multiprocessing.Process`` the pools use
(``is_alive``, ``kill``, ``join``, ``exitcode``, ``sentinel``).

Native decoder logs: decord and FFmpeg write to file descriptor 2 directly (decord's
"Failed to skip frames effectively" lines, hundreds for one file, ignore its log level), so
a child's fd 2 is a private log file. The parent reads it after each task
(:meth:`ChildProcess.drain_log`) and reports one line per file through :mod:`logging`
(logger ``vcl_infer.decoder``, INFO: quiet by default); when a child dies, the end of its log
says why.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import subprocess
import sys
import tempfile
import weakref
from multiprocessing.connection import Connection
from typing import Any

# Runs in the child: only the standard library until sys.path is the parent's.
_BOOT = (
    "import sys\n"
    "from multiprocessing.connection import Connection\n"
    "import os\n"
    "log = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND)\n"
    "os.dup2(log, 2)\n"
    "os.close(log)\n"
    "conn = Connection(int(sys.argv[1]))\n"
    "sys.path[:] = conn.recv()\n"
    "from vcl_infer.video._child import run_target\n"
    "run_target(conn)\n"
)

_LIVE: "weakref.WeakSet[ChildProcess]" = weakref.WeakSet()
_READ_AT_MOST = 1 << 20  # bytes of a child's log read per drain (a flood is counted, not kept)
logger = logging.getLogger("vcl_infer.decoder")


class ChildProcess:
    """``target(conn, *args)`` (``target`` as ``"module:function"``) in a fresh interpreter.

    Attributes:
        conn: the parent's end of the connection (the child gets the other end as ``conn``).
    """

    def __init__(self, target: str, args: tuple = ()):
        if not sys.executable:
            raise RuntimeError("cannot start decode workers: sys.executable is not set")
        fd, self.log_path = tempfile.mkstemp(prefix="vcl-decoder-", suffix=".log")
        os.close(fd)
        ours, theirs = socket.socketpair()
        self.conn = Connection(ours.detach())
        try:
            self._popen = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(theirs.fileno()), self.log_path],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, close_fds=True,
            )
        finally:
            theirs.close()  # so EOF on our end means the child is gone
        self.pid = self._popen.pid
        self.sentinel: int | None = _pidfd(self.pid)
        self.conn.send(list(sys.path))
        self.conn.send((target, tuple(args)))
        _LIVE.add(self)

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    @property
    def exitcode(self) -> int | None:
        """None while running; negative ``-N`` when killed by signal N (as multiprocessing)."""
        return self._popen.poll()

    def kill(self) -> None:
        if self.is_alive():
            self._popen.kill()

    def join(self, timeout: float | None = None) -> None:
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return
        if self.sentinel is not None:
            os.close(self.sentinel)
            self.sentinel = None

    def drain_log(self) -> tuple[int, str]:
        """``(lines, first line)`` the child wrote to its fd 2 since the last drain; the log is emptied."""
        try:
            with open(self.log_path, "r+b") as fh:
                size = os.fstat(fh.fileno()).st_size
                head = fh.read(min(size, _READ_AT_MOST))
                fh.truncate(0)
        except OSError:
            return 0, ""
        lines = [line for line in head.decode("utf-8", "replace").splitlines() if line.strip()]
        count = len(lines)
        if size > len(head):  # a flood: estimate its length from the part that was read
            count = int(count * size / max(len(head), 1))
        return count, (lines[0].strip()[:300] if lines else "")

    def last_words(self) -> str:
        """The last line the child wrote to its fd 2 (why it died, often), or ''."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(max(0, os.fstat(fh.fileno()).st_size - 4096))
                tail = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        return lines[-1][:300] if lines else ""

    def remove_log(self) -> None:
        try:
            os.unlink(self.log_path)
        except OSError:
            pass

    def handles(self) -> list[Any]:
        """What :func:`multiprocessing.connection.wait` should watch for this child."""
        return [self.conn] + ([self.sentinel] if self.sentinel is not None else [])


def log_decoder_output(path: str, child: ChildProcess) -> None:
    """One INFO line for ``path`` if its decoding wrote anything to the child's fd 2."""
    lines, first = child.drain_log()
    if lines:
        logger.info("%s: the decoder wrote %d line(s); first: %s", path, lines, first)


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits (Linux >= 5.3), else None: the
    connection's EOF then tells that the child is gone."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return opener(pid)
    except OSError:
        return None


def run_target(conn: Connection) -> None:
    """Child side: receive ``(module:function, args)`` and run ``function(conn, *args)``."""
    import importlib

    target, args = conn.recv()
    module, _, name = target.partition(":")
    getattr(importlib.import_module(module), name)(conn, *args)


@atexit.register
def _kill_leftovers() -> None:
    """Children of a pool that was never closed die with the parent (like daemon processes)."""
    for child in list(_LIVE):
        child.kill()
        child.remove_log()
