"""``vcl-index merge A B ... --into C``: one index from several built with the same encoder.

Index shards built apart (other folders, other machines) become one index. Every source is
opened read-only and checked as a search would (FAISS checksums) and every vector it hands over
against its own checksum; the vectors are copied as stored, bit for bit, so C holds exactly
what one build over all the sources' folders would. C is written in a temporary folder beside
it and renamed into place only once complete: it either does not exist or is a finished,
checksummed index. A file in several sources is taken from the first that holds it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from vcl_infer.index.catalog import _fsync_dir, path_from_db
from vcl_infer.index.checksums import bad_rows, has_checksums, row_ok
from vcl_infer.index.errors import EncoderMismatch, IndexCorrupt, IndexExists
from vcl_infer.index.store import VideoIndex

COMMIT_EVERY = 256  # videos per commit into the merged index

_VIDEO_SQL = (
    "SELECT id, path, size, mtime_ns, content_hash, duration, fps, frames, width, height, backend, status, "
    "error_kind, error, vector, {sum} FROM videos ORDER BY id"
)
_CLIP_SQL = "SELECT id, vector, start_sec, end_sec, {sum} FROM clips WHERE video_id = ? ORDER BY id"
_INFO_KEYS = ("duration", "fps", "frames", "width", "height", "backend")


@dataclass
class MergeReport:
    """What a merge did."""

    into: str
    sources: list[str]
    videos: int = 0
    failures: int = 0
    clips: int = 0
    duplicates: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _check_same_encoder(indexes: Sequence[VideoIndex]) -> None:
    first = indexes[0]
    spec = json.loads(first.spec_json or "{}")
    for other in indexes[1:]:
        if other.fingerprint != first.fingerprint or other.dim != first.dim:
            raise EncoderMismatch(
                f"{other.path} was built with encoder {other.fingerprint[:16]}... ({other.dim}-d), {first.path} "
                f"with {first.fingerprint[:16]}... ({first.dim}-d): only indexes of the same encoder can be "
                "merged; re-index one of them with the other's model"
            )
        if json.loads(other.spec_json or "{}") != spec:
            raise EncoderMismatch(
                f"{other.path} and {first.path} have the same encoder weights but different preprocessing "
                "specs (clip length, stride, crop...): their vectors are not comparable; re-index one of them"
            )


def _target(into: Path) -> None:
    if into.exists() and (not into.is_dir() or any(into.iterdir())):
        raise IndexExists(f"{into}: cannot merge into it, the folder is not empty (choose a new folder)")


def _copy(source: VideoIndex, out: VideoIndex, seen: set[str], report: MergeReport,
          progress: Callable[[int], None] | None) -> None:
    db = source._db
    pending = 0
    with_sums = has_checksums(db)  # a format-1 source has none: its rows are copied unchecked
    video_sql = _VIDEO_SQL.format(sum="vector_checksum" if with_sums else "NULL")
    clip_sql = _CLIP_SQL.format(sum="checksum" if with_sums else "NULL")
    for row in db.execute(video_sql).fetchall():
        vid, path = row[0], path_from_db(row[1])
        if path in seen:
            report.duplicates.append(path)
            continue
        seen.add(path)
        size, mtime_ns, content_hash, status = row[2], row[3], row[4], row[11]
        if status != "ok":
            out.add_failure(path, size=size, mtime_ns=mtime_ns, error_kind=row[12], error=row[13])
            report.failures += 1
        else:
            clips = db.execute(clip_sql, (vid,)).fetchall()
            bad = [c[0] for c in clips if not row_ok("clip", c[1], c[2], c[3], c[4], source.dim)]
            if not row_ok("video", row[14], None, None, row[15], source.dim):
                bad.append(vid)
            if bad:
                raise IndexCorrupt(f"{bad_rows(source.path, 'clip', bad)}; then merge again")
            info = dict(zip(_INFO_KEYS, row[5:11]))
            out._insert_video(path, size, mtime_ns, content_hash, info, row[14],
                              [(c[2], c[3], c[1]) for c in clips])
            report.videos += 1
            report.clips += len(clips)
        pending += 1
        if progress is not None:
            progress(1)
        if pending >= COMMIT_EVERY:
            out.commit()
            pending = 0


def merge_indexes(sources: Sequence[str | os.PathLike], into: str | os.PathLike, *,
                  progress: Callable[[int], None] | None = None) -> MergeReport:
    """Merge the indexes ``sources`` into the new index ``into``.

    Args:
        sources: two or more index folders built with the same encoder (fingerprint, dim, spec).
        into: a new (or empty) folder for the merged index.
        progress: called with 1 per video copied.

    Returns:
        A :class:`MergeReport`.

    Raises:
        EncoderMismatch: the sources were built with different encoders or preprocessing.
        IndexExists: ``into`` is not empty. IndexCorrupt: a source fails its checks (repair it first).
    """
    into = Path(into)
    if len(sources) < 2:
        raise ValueError("merge needs at least two indexes")
    _target(into)
    indexes: list[VideoIndex] = []
    tmp = into.parent / f".{into.name}.merging-{os.getpid()}"
    try:
        for src in sources:
            indexes.append(VideoIndex.open(src))
        _check_same_encoder(indexes)
        first = indexes[0]
        types = {ix.index_type for ix in indexes}
        shutil.rmtree(tmp, ignore_errors=True)
        report = MergeReport(into=str(into), sources=[str(s) for s in sources])
        with VideoIndex.create(tmp, fingerprint=first.fingerprint, spec_json=first.spec_json, dim=first.dim,
                               index_type=types.pop() if len(types) == 1 else None,
                               target_recall=max(ix.target_recall for ix in indexes)) as out:
            seen: set[str] = set()
            for ix in indexes:
                _copy(ix, out, seen, report, progress)
        if into.exists():
            into.rmdir()  # empty, checked above
        os.rename(tmp, into)
        _fsync_dir(into.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for ix in indexes:
            ix.close()
    return report
