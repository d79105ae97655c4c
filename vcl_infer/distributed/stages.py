"""The two stages of a distributed build, as Ray Data runs them (``map_batches``).

- :func:`decode_batch` is a Ray *task*: it decodes a batch of files with the runtime's own
  safe decode path (a :class:`~vcl_infer.video.isolated.DecodePool` child process per
  task: regular files only, magic bytes checked, a hard per-file timeout, a frame-size cap,
  the decord -> PyAV fallback, the clip windows cut from each file's own timestamps by the
  build's sampling rule) and hands uint8 clips on as Arrow binary columns, one file at a time.
- :class:`EncodeToShard` is a Ray *actor*: it loads the encoder bundle once, embeds every
  decoded file exactly as a local build does (:func:`vcl_infer.index.build.clip_vectors`, one
  call per decoded part of the video, as the local build embeds parts as they arrive) and
  writes the batch as one Parquet shard, returning only its name, so vectors travel through
  the object store once, as files.

Limit: a file's decoded clips travel as one row (about 0.6 MB a clip for 16 x 112 x 112
RGB frames), so a 1-hour video at the default stride puts ~2 GB in the object store; the
local build streams it in parts of 16 clips instead.

Both take and return ``pyarrow.Table`` batches. No stage raises for a bad file: its error
kind and reason travel in the row, as in a local build.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from vcl_infer.distributed.shards import ShardMeta, ShardRow, write_shard
from vcl_infer.errors import VideoError


def _decoded_row(path: str, size: int, mtime_ns: int, result: Any, parts: list) -> dict[str, Any]:
    """One file's decoded clips (``parts``: earlier batches of clips of a long video, if the
    decoder streams them) as a row of Arrow-friendly values."""
    from vcl_infer.index.build import file_hash

    row: dict[str, Any] = {"path_bytes": os.fsencode(path), "size": size, "mtime_ns": mtime_ns, "status": "ok",
                           "error_kind": "", "error": "", "content_hash": "", "info": "{}", "starts": [],
                           "ends": [], "clips": b"", "clip_shape": [], "part_sizes": []}
    if isinstance(result, VideoError):
        row.update(status="failed", error_kind=result.kind, error=result.reason)
        return row
    info = result.info.to_dict()
    info.update(frames=int(result.info.num_frames), damaged_frames=int(result.damaged_frames))
    pieces = [*parts, result]
    clips = np.ascontiguousarray(np.concatenate([p.clips for p in pieces]), dtype=np.uint8)
    windows = [w for p in pieces for w in p.windows]
    # the parts' sizes: the encoder embeds each part in its own call, as the local build does
    # (a model's output can depend on the batch it is computed in, by a last bit)
    row.update(content_hash=file_hash(path), info=json.dumps(info), clips=clips.tobytes(),
               clip_shape=list(clips.shape), starts=[float(w.start_sec) for w in windows],
               ends=[float(w.end_sec) for w in windows], part_sizes=[len(p.windows) for p in pieces])
    return row


DECODED_SCHEMA = (
    ("path_bytes", "binary"), ("size", "int64"), ("mtime_ns", "int64"), ("status", "string"),
    ("error_kind", "string"), ("error", "string"), ("content_hash", "string"), ("info", "string"),
    ("starts", "list<float64>"), ("ends", "list<float64>"), ("clips", "large_binary"),
    ("clip_shape", "list<int64>"), ("part_sizes", "list<int64>"),
)


def _decoded_schema():
    import pyarrow as pa

    types = {"binary": pa.binary(), "int64": pa.int64(), "string": pa.string(), "large_binary": pa.large_binary(),
             "list<float64>": pa.list_(pa.float64()), "list<int64>": pa.list_(pa.int64())}
    return pa.schema([(name, types[kind]) for name, kind in DECODED_SCHEMA])


def decode_batch(batch, *, spec, clips, timeout_s: float, nice: int = 10, batch_policy: bool = False):
    """Ray task: ``(path_bytes, size, mtime_ns)`` rows -> decoded rows (clips as uint8 bytes),
    one table per file as each is done, so a task holds one file's clips at a time, not its
    batch's.

    ``clips``: the clip count or :class:`~vcl_infer.clips.sampling.ClipSampling` (windows are cut
    from each file's own timestamps in the decode worker, as in a local build). ``nice`` and
    ``batch_policy``: the decode worker's priority (``vcl_infer.index.build.DECODE_PRIORITY``)."""
    import pyarrow as pa

    from vcl_infer.video.clips import DecodedVideo
    from vcl_infer.video.isolated import DecodePool

    paths = [os.fsdecode(p) for p in batch.column("path_bytes").to_pylist()]
    sizes = batch.column("size").to_pylist()
    mtimes = batch.column("mtime_ns").to_pylist()
    schema = _decoded_schema()
    parts: dict[int, list] = {}
    with DecodePool(workers=1, timeout_s=timeout_s, nice=nice, batch=batch_policy) as pool:
        for pos, result in pool.imap_unordered([(p, spec, clips) for p in paths], parts=True):
            if not isinstance(result, (DecodedVideo, VideoError)):  # a part of a long video (its
                parts.setdefault(pos, []).append(result)  # DecodedVideo comes last, or an error)
                continue
            row = _decoded_row(paths[pos], int(sizes[pos]), int(mtimes[pos]), result, parts.pop(pos, []))
            yield pa.Table.from_pylist([row], schema=schema)


class EncodeToShard:
    """Ray actor: decoded rows -> vectors -> one shard file per batch; returns the shard's name.

    Args:
        model: the encoder bundle (a path every node can read).
        shards_dir: where shards are written (shared storage on a cluster).
        meta: encoder and sampling recorded in each shard.
        threads: ONNX Runtime CPU threads (None: every core, as a local build).
    """

    def __init__(self, model: str, shards_dir: str, meta: ShardMeta, threads: int | None = None):
        from vcl_infer.encode.embedder import Embedder
        from vcl_infer.index.build import available_cores

        self.embedder = Embedder.load(model, threads=threads or available_cores())
        if self.embedder.spec.fingerprint != meta.fingerprint:
            raise RuntimeError(f"{model} on this node is not the encoder the build started with")
        self.shards_dir = shards_dir
        self.meta = meta

    def _row(self, data: dict[str, list], i: int) -> ShardRow:
        from vcl_infer.index.build import clip_vectors

        row = ShardRow(path=os.fsdecode(data["path_bytes"][i]), size=data["size"][i], mtime_ns=data["mtime_ns"][i],
                       status=data["status"][i], error_kind=data["error_kind"][i], error=data["error"][i],
                       content_hash=data["content_hash"][i], info=json.loads(data["info"][i]),
                       windows=list(zip(data["starts"][i], data["ends"][i])))
        if row.status != "ok":
            return row
        from vcl_infer.encode.pooling import pool_clips

        uint8_clips = np.frombuffer(data["clips"][i], np.uint8).reshape(data["clip_shape"][i])
        sizes = data["part_sizes"][i] if "part_sizes" in data else None
        bounds = np.cumsum([0, *(sizes or [len(uint8_clips)])])
        clip_vecs = np.concatenate([clip_vectors(self.embedder, uint8_clips[a:b])[1]
                                    for a, b in zip(bounds[:-1], bounds[1:])])
        video_vec = pool_clips(clip_vecs)
        if not (np.isfinite(video_vec).all() and np.isfinite(clip_vecs).all()):
            row.status, row.error_kind = "failed", "encoder_error"
            row.error, row.windows = "the encoder produced non-finite values (NaN/inf); not indexed", []
            return row
        row.video_vector, row.clip_vectors = video_vec, clip_vecs
        return row

    def __call__(self, batch):
        import pyarrow as pa

        data = batch.to_pydict()
        rows = [self._row(data, i) for i in range(batch.num_rows)]
        shard = write_shard(self.shards_dir, rows, self.meta)
        return pa.table({"shard": [str(shard)], "files": [len(rows)]})
