"""Vector shards: the Parquet files a distributed build writes and the ingest writer reads.

One row per input file, ok or failed::

    path STRING, size INT64, mtime_ns INT64        the file's identity (the build's incremental key)
    status STRING ('ok' | 'failed'), error_kind STRING, error STRING
    content_hash STRING, info STRING (JSON: duration, fps, frames, width, height, backend, ...)
    starts, ends LIST<DOUBLE>                       clip windows in seconds, one per clip
    video_vector FIXED_SIZE_LIST<FLOAT, D>          the pooled vector (null for a failure)
    clip_vectors LIST<FIXED_SIZE_LIST<FLOAT, D>>    one vector per clip window
    checksum STRING                                 sha256 over the row's vectors and windows

The schema metadata carries the encoder (``vcl.fingerprint``, ``vcl.spec_json``, ``vcl.dim``)
and the clip sampling rule (``vcl.sampling``, JSON; shards written before it held only
``vcl.clips_per_video``, a fixed count), so an ingest refuses a shard of another encoder, or
one whose videos were cut another way than the index's. Files are
written to a temporary name, fsynced and renamed (a reader never sees half a shard), with
Parquet page checksums on; the per-row checksum catches a damaged value that still parses.
A shard's name is derived from the files it holds, so re-running a batch rewrites the same
shard instead of adding a second copy.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from vcl_infer.clips.sampling import ClipSampling
from vcl_infer.errors import VclError

SHARD_FORMAT = "1"
SUFFIX = ".parquet"
PREFIX = "shard-"


class ShardError(VclError):
    """A shard that cannot be used (unreadable, damaged, or of another encoder)."""


@dataclass(frozen=True)
class ShardMeta:
    """The encoder and the clip sampling rule a shard was made with."""

    fingerprint: str
    spec_json: str
    dim: int
    sampling: ClipSampling

    @property
    def clips_per_video(self) -> int | None:
        """The fixed clip count, None for a stride."""
        return self.sampling.count

    def to_metadata(self) -> dict[bytes, bytes]:
        data = {b"vcl.shard_format": SHARD_FORMAT.encode(), b"vcl.fingerprint": self.fingerprint.encode(),
                b"vcl.spec_json": self.spec_json.encode(), b"vcl.dim": str(self.dim).encode(),
                b"vcl.sampling": json.dumps(self.sampling.to_dict(), sort_keys=True).encode()}
        if self.sampling.count is not None:  # what readers before vcl.sampling look for
            data[b"vcl.clips_per_video"] = str(self.sampling.count).encode()
        return data

    @classmethod
    def from_metadata(cls, metadata: dict[bytes, bytes] | None, where: str) -> "ShardMeta":
        data = metadata or {}
        if data.get(b"vcl.shard_format") != SHARD_FORMAT.encode():
            raise ShardError(f"{where}: not a vcl vector shard (format {data.get(b'vcl.shard_format')!r})")
        try:
            if b"vcl.sampling" in data:
                sampling = ClipSampling.from_dict(json.loads(data[b"vcl.sampling"]))
            else:
                sampling = ClipSampling.fixed(int(data[b"vcl.clips_per_video"]))
            return cls(data[b"vcl.fingerprint"].decode(), data[b"vcl.spec_json"].decode(), int(data[b"vcl.dim"]),
                       sampling)
        except (KeyError, ValueError, TypeError) as exc:
            raise ShardError(f"{where}: damaged shard metadata ({type(exc).__name__}: {exc})") from None


@dataclass
class ShardRow:
    """One file's outcome, as stored in a shard."""

    path: str
    size: int
    mtime_ns: int
    status: str
    error_kind: str = ""
    error: str = ""
    content_hash: str = ""
    info: dict = field(default_factory=dict)
    windows: list[tuple[float, float]] = field(default_factory=list)
    video_vector: np.ndarray | None = None
    clip_vectors: np.ndarray | None = None

    @property
    def key(self) -> tuple[int, int]:
        return int(self.size), int(self.mtime_ns)

    def checksum(self) -> str:
        """sha256 over the status, windows and vectors (little-endian float32)."""
        digest = hashlib.sha256(f"{self.path}\0{self.status}\0{self.error_kind}\0{self.error}\0".encode("utf-8", "surrogateescape"))
        digest.update(np.asarray(self.windows, dtype="<f8").tobytes())
        for vectors in (self.video_vector, self.clip_vectors):
            if vectors is not None:
                digest.update(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
        return "sha256:" + digest.hexdigest()


def shard_name(keys: Iterable[tuple[str, int, int]]) -> str:
    """``shard-<hash>.parquet`` from the (path, size, mtime_ns) of the files in it."""
    digest = hashlib.sha256()
    for path, size, mtime_ns in sorted(keys):
        digest.update(f"{path}\0{size}\0{mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return f"{PREFIX}{digest.hexdigest()[:24]}{SUFFIX}"


def _vector_columns(rows: list[ShardRow], dim: int):
    import pyarrow as pa

    video = np.zeros((len(rows), dim), np.float32)
    valid = np.zeros(len(rows), bool)
    offsets = [0]
    clip_blocks = []
    for i, row in enumerate(rows):
        if row.video_vector is not None:
            video[i], valid[i] = row.video_vector, True
        clips = np.zeros((0, dim), np.float32) if row.clip_vectors is None else np.asarray(row.clip_vectors, np.float32)
        clip_blocks.append(clips.reshape(-1, dim))
        offsets.append(offsets[-1] + len(clip_blocks[-1]))
    video_col = pa.FixedSizeListArray.from_arrays(pa.array(video.ravel(), pa.float32()), dim, mask=pa.array(~valid))
    flat = np.concatenate(clip_blocks) if clip_blocks else np.zeros((0, dim), np.float32)
    clip_fsl = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel(), pa.float32()), dim)
    clip_col = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), clip_fsl)
    return video_col, clip_col


def write_shard(folder: str | os.PathLike, rows: list[ShardRow], meta: ShardMeta) -> Path:
    """Write ``rows`` as one shard in ``folder`` (atomically); returns its path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = shard_name((r.path, r.size, r.mtime_ns) for r in rows)
    video_col, clip_col = _vector_columns(rows, meta.dim)
    table = pa.table({
        "path": pa.array([r.path.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for r in rows]),
        "path_bytes": pa.array([os.fsencode(r.path) for r in rows], pa.binary()),
        "size": pa.array([r.size for r in rows], pa.int64()),
        "mtime_ns": pa.array([r.mtime_ns for r in rows], pa.int64()),
        "status": pa.array([r.status for r in rows]),
        "error_kind": pa.array([r.error_kind for r in rows]),
        "error": pa.array([r.error for r in rows]),
        "content_hash": pa.array([r.content_hash for r in rows]),
        "info": pa.array([json.dumps(r.info, sort_keys=True) for r in rows]),
        "starts": pa.array([[float(a) for a, _ in r.windows] for r in rows], pa.list_(pa.float64())),
        "ends": pa.array([[float(b) for _, b in r.windows] for r in rows], pa.list_(pa.float64())),
        "video_vector": video_col,
        "clip_vectors": clip_col,
        "checksum": pa.array([r.checksum() for r in rows]),
    }).replace_schema_metadata(meta.to_metadata())
    final = folder / name
    tmp = folder / f".{name}.tmp-{os.getpid()}"
    pq.write_table(table, tmp, write_page_checksum=True, compression="zstd")
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return final


def _open(path: Path, columns: list[str] | None = None):
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=columns, page_checksum_verification=True)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ... for damaged files
        raise ShardError(f"{path}: cannot read the shard ({exc}); delete it and re-run the build to redo its files") from exc


def read_meta(path: str | os.PathLike) -> ShardMeta:
    """The encoder and sampling of a shard (reads only the footer)."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # noqa: BLE001 - as in _open
        raise ShardError(f"{path}: cannot read the shard ({exc}); delete it and re-run the build to redo its files") from exc
    return ShardMeta.from_metadata(schema.metadata, str(path))


def read_keys(path: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of the files a shard holds (only those columns are read)."""
    table = _open(Path(path), ["path_bytes", "size", "mtime_ns"])
    return {os.fsdecode(p): (int(s), int(m)) for p, s, m in zip(table.column("path_bytes").to_pylist(),
                                                                  table.column("size").to_pylist(),
                                                                  table.column("mtime_ns").to_pylist())}


def read_rows(path: str | os.PathLike) -> list[ShardRow]:
    """The rows of a shard, each checked against its checksum.

    Raises:
        ShardError: the file cannot be parsed, or a row's values do not match its checksum
            (a damaged byte either stops the read here or left the values intact).
    """
    path = Path(path)
    table = _open(path)
    try:
        return list(_rows_of(table, path))
    except ShardError:
        raise
    except Exception as exc:  # noqa: BLE001 - damaged bytes surface as any decoding error
        raise ShardError(f"{path}: cannot decode the shard ({type(exc).__name__}: {exc}); delete it and re-run "
                         "the build to redo its files") from exc


def _vectors(table, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(video vectors N x D, their validity, clip vectors M x D, per-row clip offsets N+1) as numpy."""
    video = table.column("video_vector").combine_chunks()
    valid = np.asarray(video.is_valid().to_numpy(zero_copy_only=False), bool)
    video_values = np.asarray(video.flatten().to_numpy(zero_copy_only=False), np.float32)
    video_vecs = np.zeros((len(video), dim), np.float32)
    video_vecs[valid] = video_values.reshape(-1, dim)  # flatten() skips null entries
    clips = table.column("clip_vectors").combine_chunks()
    offsets = np.asarray(clips.offsets.to_numpy(), np.int64)
    clip_values = np.asarray(clips.values.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(-1, dim)
    return video_vecs, valid, clip_values[offsets[0]:], offsets - offsets[0]


def _rows_of(table, path: Path) -> Iterator[ShardRow]:
    meta = ShardMeta.from_metadata(table.schema.metadata, str(path))
    video_vecs, valid, clip_vecs, offsets = _vectors(table, meta.dim)
    data = table.drop_columns(["video_vector", "clip_vectors"]).to_pydict()
    for i in range(table.num_rows):
        row = ShardRow(
            path=os.fsdecode(data["path_bytes"][i]), size=int(data["size"][i]), mtime_ns=int(data["mtime_ns"][i]),
            status=data["status"][i], error_kind=data["error_kind"][i] or "", error=data["error"][i] or "",
            content_hash=data["content_hash"][i] or "", info=json.loads(data["info"][i] or "{}"),
            windows=list(zip(data["starts"][i], data["ends"][i])),
        )
        if valid[i]:
            row.video_vector = video_vecs[i].copy()
            row.clip_vectors = clip_vecs[offsets[i]:offsets[i + 1]].copy()
        if row.checksum() != data["checksum"][i]:
            raise ShardError(f"{path}: row {i} ({row.path}) does not match its checksum (a damaged shard); "
                             "delete the shard and re-run the build to redo its files")
        yield row


def list_shards(where: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Shard files named by ``where``: a folder (its ``shard-*.parquet``), a file, or a list of both."""
    items = [where] if isinstance(where, (str, os.PathLike)) else list(where)
    found: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found.extend(sorted(p.glob(f"{PREFIX}*{SUFFIX}")))
        elif p.is_file():
            found.append(p)
        else:
            raise VclError(f"{p}: no such shard file or folder")
    return found
