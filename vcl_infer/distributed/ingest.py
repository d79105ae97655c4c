"""The single writer: vector shards into the catalog and FAISS files of an index.

Every row goes through the index's public write API (``add_video`` / ``add_failure`` /
``commit``), so ingest has the guarantees of a local build: one writer (the index lock),
atomic and checksummed commits. Commits are batched (every ``DEFAULT_COMMIT_ROWS`` rows or
``DEFAULT_COMMIT_SECONDS``): a crash loses only uncommitted rows, which are still in their
shards and are read again on the next run.

Idempotent: a row whose file is already in the catalog with the same (size, mtime_ns) is
skipped, so re-ingesting a shard adds nothing twice. A row for an older version of a file
than the catalog holds is skipped as stale; with ``current`` (what a build passes: the
files' stats on disk now) only rows matching the file as it is now are taken.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from vcl_infer.distributed.shards import (
    ShardError,
    ShardMeta,
    ShardRow,
    list_shards,
    read_keys,
    read_meta,
    read_rows,
)
from vcl_infer.errors import VclError
from vcl_infer.index.build import Failure

DEFAULT_COMMIT_ROWS = 256
DEFAULT_COMMIT_SECONDS = 10.0


@dataclass
class IngestReport:
    """What an ingest did.

    Attributes:
        shards: shard files read; ``bad_shards``: those that could not be used, with why.
        added / updated: files new to the index / replacing an older version.
        skipped: rows already in the index (same size and mtime): re-ingesting adds nothing.
        stale: rows for another version of the file than the one to keep.
        failed: files whose row records a failure (with its reason), as a local build lists them.
        vectors: clip + video vectors written; ``vectors_per_s`` is the ingest rate.
    """

    index: str
    shards: int = 0
    bad_shards: list[str] = field(default_factory=list)
    added: int = 0
    updated: int = 0
    skipped: int = 0
    stale: int = 0
    failed: list[Failure] = field(default_factory=list)
    clips: int = 0
    vectors: int = 0
    seconds: float = 0.0

    @property
    def vectors_per_s(self) -> float:
        return self.vectors / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(failed=[asdict(f) for f in self.failed], vectors_per_s=round(self.vectors_per_s, 1),
                    seconds=round(self.seconds, 3))
        return data

    def summary(self) -> str:
        return (f"{self.shards} shard(s): {self.added} added, {self.updated} updated, {self.skipped} already "
                f"indexed, {self.stale} stale, {len(self.failed)} failed, {len(self.bad_shards)} bad shard(s); "
                f"{self.vectors} vectors in {self.seconds:.1f} s ({self.vectors_per_s:.0f} vectors/s)")


def open_index_for_shards(index_dir: str | os.PathLike, meta: ShardMeta, index_type: str | None = None,
                          target_recall: float | None = None):
    """Open (or create) the index for writing with the shards' encoder; refuses another encoder's,
    and an index whose videos are cut another way (``sampling.json``, recorded here when new).

    ``index_type`` and ``target_recall`` (recall@10 the search parameters are tuned to) apply
    to a new index, as in a local build."""
    from vcl_infer.clips.sampling_record import resolve_sampling, write_sampling
    from vcl_infer.index import VideoIndex

    rule = resolve_sampling(index_dir, meta.sampling)  # before a catalog exists
    index = VideoIndex.open_or_create(os.fspath(index_dir), fingerprint=meta.fingerprint, spec_json=meta.spec_json,
                                      dim=meta.dim, index_type=index_type, target_recall=target_recall)
    try:  # under the writer lock, before any row is added
        write_sampling(index_dir, rule)
    except BaseException:
        index.close()
        raise
    return index


def _take(row: ShardRow, known: dict, current: dict[str, tuple[int, int]] | None) -> str:
    """'skip', 'stale', 'add' or 'update' for one row."""
    old = known.get(row.path)
    if old is not None and (int(old[0]), int(old[1])) == row.key:
        return "skip"
    if current is not None and current.get(row.path) != row.key:
        return "stale"
    if current is None and old is not None and int(old[1]) > row.mtime_ns:
        return "stale"
    return "update" if old is not None else "add"


def _write_row(index, row: ShardRow, report: IngestReport) -> None:
    if row.status != "ok":
        index.add_failure(row.path, size=row.size, mtime_ns=row.mtime_ns, error_kind=row.error_kind, error=row.error)
        report.failed.append(Failure(row.path, row.error_kind, row.error))
        return
    if row.clip_vectors is None:  # read_shard gives every ok row its vectors; a hand-made row may not
        raise VclError(f"shard row for {row.path} is marked ok but carries no clip vectors")
    index.add_video(row.path, size=row.size, mtime_ns=row.mtime_ns, content_hash=row.content_hash, info=row.info,
                    video_vector=row.video_vector, clip_vectors=row.clip_vectors, windows=row.windows)
    report.clips += len(row.clip_vectors)
    report.vectors += len(row.clip_vectors) + 1


class ShardIngester:
    """Puts shards into one open, writable index, committing every ``commit_rows`` rows or
    ``commit_seconds`` (and on :meth:`flush`).

    Coarse commits cost nothing in safety: a shard stays on disk until it is ingested again,
    so what a crash discards before its commit is re-read from the shard, never re-embedded.
    The catalog's file list is read once, not per shard.
    """

    def __init__(self, index, report: IngestReport, *, current: dict[str, tuple[int, int]] | None = None,
                 commit_rows: int = DEFAULT_COMMIT_ROWS, commit_seconds: float = DEFAULT_COMMIT_SECONDS):
        self.index, self.report, self.current = index, report, current
        self.commit_rows, self.commit_seconds = commit_rows, commit_seconds
        self.known = index.known_files()
        self.sampling = _recorded_sampling(index)
        self.pending = 0
        self.last_commit = time.monotonic()

    def ingest(self, shard: str | os.PathLike) -> None:
        """Add one shard's rows (a bad shard is recorded in the report and writes nothing).

        Its rows are read and checked in full before the first write.
        """
        t0 = time.monotonic()
        report = self.report
        report.shards += 1
        try:
            meta = read_meta(shard)
            if meta.fingerprint != self.index.fingerprint:
                raise ShardError(f"{shard}: made with encoder {meta.fingerprint[:19]}..., the index holds "
                                 f"{self.index.fingerprint[:19]}...; ingest it into an index of that encoder")
            if self.sampling is not None and meta.sampling != self.sampling:
                raise ShardError(f"{shard}: its videos were cut into {meta.sampling.describe()}, the index's into "
                                 f"{self.sampling.describe()}; ingest it into an index built that way")
            rows = read_rows(shard)
        except ShardError as exc:
            report.bad_shards.append(str(exc))
            return
        for row in rows:
            action = _take(row, self.known, self.current)
            if action == "skip":
                report.skipped += 1
                continue
            if action == "stale":
                report.stale += 1
                continue
            _write_row(self.index, row, report)
            self.known[row.path] = (row.size, row.mtime_ns, row.status)
            self.pending += 1
            if action == "update":
                report.updated += 1
            elif row.status == "ok":
                report.added += 1
        report.seconds += time.monotonic() - t0
        if self.pending >= self.commit_rows or time.monotonic() - self.last_commit >= self.commit_seconds:
            self.flush()

    def flush(self) -> None:
        """Commit what is pending."""
        t0 = time.monotonic()
        if self.pending:
            self.index.commit()
        self.pending, self.last_commit = 0, time.monotonic()
        self.report.seconds += self.last_commit - t0


def _recorded_sampling(index):
    """The clip sampling rule recorded with ``index`` (None where it has no folder on disk)."""
    from vcl_infer.clips.sampling_record import read_sampling

    folder = getattr(index, "path", None)
    return read_sampling(folder) if folder is not None else None


def ingest_shards(shards: str | os.PathLike | Iterable[str | os.PathLike], index_dir: str | os.PathLike, *,
                  index_type: str | None = None, target_recall: float | None = None,
                  progress: bool = False) -> IngestReport:
    """Ingest shard files (or folders of them) into ``index_dir`` (created when missing).

    Args:
        shards: a shard file, a folder of ``shard-*.parquet``, or a list of both.
        index_dir: the index folder; a new one takes the encoder recorded in the shards.
        index_type: FAISS factory string for a new index.
        target_recall: recall@10 vs exact search a new index's search parameters are tuned to.
        progress: show a progress bar (stderr).

    Returns:
        The :class:`IngestReport` (the rate, bad shards, failures with reasons).

    Raises:
        VclError: no shards, or the index is locked, corrupt, or of another encoder.
    """
    from tqdm import tqdm

    from vcl_infer._optional import require

    require("pyarrow")
    t0 = time.monotonic()
    files = list_shards(shards)
    report = IngestReport(index=os.path.abspath(index_dir))
    metas = []
    for f in files:
        try:
            metas.append(read_meta(f))
        except ShardError:
            continue
    if not metas:
        raise VclError(f"no readable vector shards in {shards}; pass the folder a `--engine ray` build wrote")
    index = open_index_for_shards(index_dir, metas[0], index_type, target_recall)
    try:
        ingester = ShardIngester(index, report)
        for shard in tqdm(files, unit="shard", desc="ingesting", disable=not progress, dynamic_ncols=True):
            ingester.ingest(shard)
        ingester.flush()
    finally:
        index.close()
    report.seconds = time.monotonic() - t0
    return report


def shard_keys(folder: str | os.PathLike, meta: ShardMeta | None = None) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of every file held by the readable shards in ``folder`` (only
    those made with ``meta``'s encoder and clip sampling, when given)."""
    keys: dict[str, tuple[int, int]] = {}
    if not Path(folder).is_dir():
        return keys
    for shard in list_shards(folder):
        try:
            if meta is not None:
                made = read_meta(shard)
                if (made.fingerprint, made.sampling) != (meta.fingerprint, meta.sampling):
                    continue
            keys.update(read_keys(shard))
        except ShardError:
            continue
    return keys
