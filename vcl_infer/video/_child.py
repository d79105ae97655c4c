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
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import weakref
from multiprocessing.connection import Connection
from typing import Any

# Runs in the child: only the standard library until sys.path is the parent's.
_BOOT = (
    "import sys\n"
    "from multiprocessing.connection import Connection\n"
    "conn = Connection(int(sys.argv[1]))\n"
    "sys.path[:] = conn.recv()\n"
    "from vcl_infer.video._child import run_target\n"
    "run_target(conn)\n"
)

_LIVE: "weakref.WeakSet[ChildProcess]" = weakref.WeakSet()


class ChildProcess:
    """``target(conn, *args)`` (``target`` as ``"module:function"``) in a fresh interpreter.

    Attributes:
        conn: the parent's end of the connection (the child gets the other end as ``conn``).
    """

    def __init__(self, target: str, args: tuple = ()):
        if not sys.executable:
            raise RuntimeError("cannot start decode workers: sys.executable is not set")
        ours, theirs = socket.socketpair()
        self.conn = Connection(ours.detach())
        try:
            self._popen = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(theirs.fileno())],
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

    def handles(self) -> list[Any]:
        """What :func:`multiprocessing.connection.wait` should watch for this child."""
        return [self.conn] + ([self.sentinel] if self.sentinel is not None else [])


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
