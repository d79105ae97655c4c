"""Where a linear probe's two files live: ``PATH.json`` (parameters) and ``PATH.npz`` (arrays).

Kept apart from ``linear.py`` (the probe itself) so the CLI can check the files without importing scikit-learn.
"""

from __future__ import annotations

import os
from pathlib import Path

PROBE_SUFFIXES = (".json", ".npz")


def probe_stem(path: str | os.PathLike) -> Path:
    """The probe's name without its file suffix: ``probe.json``/``probe.npz``/``probe`` -> ``probe``.

    Only ``.json`` and ``.npz`` are stripped, so a dotted name such as ``probe.v2`` keeps its
    ``.v2`` (``Path.with_suffix`` would turn it into ``probe`` and overwrite another probe).
    """
    path = Path(path)
    return path.with_suffix("") if path.suffix.lower() in PROBE_SUFFIXES else path


def probe_files(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(PATH.json, PATH.npz)`` for the probe named ``path``."""
    stem = probe_stem(path)
    return Path(f"{stem}.json"), Path(f"{stem}.npz")
