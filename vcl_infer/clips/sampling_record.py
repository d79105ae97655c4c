"""The clip sampling rule an index was built with, recorded next to it (``sampling.json``).

Every video of an index must be cut into clips by the same rule, or its clips are not
comparable (and a query cannot be sampled like the videos it is matched against). The
build records the rule when it starts; ``add`` and ``search`` read it back. The file is
small JSON written to a temporary name, fsynced and renamed while the writer holds the
index lock. Indexes built before the rule was recorded used a fixed clip count, found in
their ``build_report.json`` (8 when that is gone too).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vcl_infer.clips.sampling import ClipSampling
from vcl_infer.errors import VclError

SAMPLING_NAME = "sampling.json"
LEGACY_CLIPS = 8


def read_sampling(index_dir: str | os.PathLike) -> ClipSampling | None:
    """The recorded rule of ``index_dir``, the legacy fixed count, or None for a new folder.

    Raises:
        VclError: the record exists but cannot be read.
    """
    folder = Path(index_dir)
    path = folder / SAMPLING_NAME
    if path.is_file():
        try:
            return ClipSampling.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise VclError(f"{path} is damaged ({exc}); restore it, or rebuild the index in a new folder") from exc
    if not (folder / "catalog.sqlite").is_file():
        return None
    try:
        legacy = json.loads((folder / "build_report.json").read_text()).get("clips_per_video")
    except (OSError, ValueError, AttributeError):
        legacy = None
    return ClipSampling.fixed(int(legacy or LEGACY_CLIPS))


def write_sampling(index_dir: str | os.PathLike, rule: ClipSampling) -> Path:
    """Record ``rule`` for ``index_dir`` atomically (temp file, fsync, rename)."""
    path = Path(index_dir) / SAMPLING_NAME
    tmp = path.with_name(f".{SAMPLING_NAME}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(rule.to_dict(), sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def requested_sampling(clips: int | None, clip_every: float | None, min_clips: int | None,
                       max_clips: int | None) -> ClipSampling | None:
    """The rule the user's options ask for (None: no sampling option given).

    Raises:
        VclError: contradictory or invalid options, with the fix.
    """
    if clips is not None and any(v is not None for v in (clip_every, min_clips, max_clips)):
        raise VclError("--clips N gives every video N clips; it cannot be combined with "
                       "--clip-every/--min-clips/--max-clips (pass one or the other)")
    if clips is not None:
        if clips < 1:
            raise VclError("--clips must be at least 1")
        return ClipSampling.fixed(clips)
    if all(v is None for v in (clip_every, min_clips, max_clips)):
        return None
    base = ClipSampling()
    try:
        return ClipSampling(every_sec=base.every_sec if clip_every is None else float(clip_every),
                            min_clips=base.min_clips if min_clips is None else int(min_clips),
                            max_clips=base.max_clips if max_clips is None else int(max_clips))
    except ValueError as exc:
        raise VclError(f"invalid clip sampling: {exc} (e.g. --clip-every 1 --min-clips 8 --max-clips 3600)") from exc


def resolve_sampling(index_dir: str | os.PathLike, requested: ClipSampling | None) -> ClipSampling:
    """The rule to build with: the index's recorded one, which a request must not contradict.

    Raises:
        VclError: ``requested`` differs from the rule the index was built with.
    """
    recorded = read_sampling(index_dir)
    if recorded is None:
        return requested or ClipSampling()
    if requested is not None and requested != recorded:
        raise VclError(
            f"{index_dir} was built with {recorded.describe()}, not {requested.describe()}: every video of an "
            "index is cut the same way; drop the sampling options, or build a new index in another folder"
        )
    return recorded
