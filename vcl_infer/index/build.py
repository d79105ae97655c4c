"""Build and maintain an index: walk a folder, decode in worker processes, encode, commit.

The pipeline (DESIGN.md, "The runtime pipeline"):

    files ─▶ DecodePool (worker processes, per-file timeout) ─▶ queue ─▶ encoder (this process)
                                                                  ─▶ VideoIndex (batched commits)

A feeder thread drives the decode pool, so workers get their next file while the main
thread encodes: decode and encode overlap. On a CPU the encoder gets the cores the decode
workers leave (at least one thread); by default there is one worker per core, since decoding
is the larger cost next to a small encoder (see ``default_workers``).

Incremental: a file whose ``(path, size, mtime_ns)`` is in the catalog is skipped, a changed
one is re-embedded, one that vanished from the folder is removed. Writes are committed every
``commit_every`` videos or ``commit_seconds``, so a killed build loses at most the batch in
flight; re-running it resumes. Every unreadable file is recorded with its reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from vcl_infer.errors import VclError, VideoError

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mkv", ".mov", ".avi", ".webm", ".flv", ".wmv", ".mpg", ".mpeg", ".ts", ".mts",
     ".m2ts", ".3gp", ".ogv", ".vob", ".mxf", ".asf"}
)
REPORT_NAME = "build_report.json"
DEFAULT_CLIPS = 8
DEFAULT_COMMIT_EVERY = 32
DEFAULT_COMMIT_SECONDS = 10.0
MAX_DEFAULT_WORKERS = 8


@dataclass
class Failure:
    """One file that could not be indexed."""

    path: str
    kind: str
    reason: str


@dataclass
class BuildReport:
    """What a build, ``add`` or ``remove`` did (also written as ``build_report.json``).

    Attributes:
        added: files new to the index, embedded.
        updated: files whose size or mtime changed, re-embedded.
        clips_per_video: the fixed clip count (``--clips N``), None for a stride.
        sampling: the clip sampling rule (:meth:`vcl_infer.clips.sampling.ClipSampling.to_dict`).
        skipped: files unchanged since the last build (including known failures).
        removed: files dropped from the index (vanished, or asked for).
        failed: files that could not be read this run, with their reasons.
        clips: clip vectors written this run.
        seconds: wall-clock time of the run.
    """

    index: str
    videos_dir: str | None = None
    model: str | None = None
    fingerprint: str = ""
    clips_per_video: int | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    workers: int = 1
    encoder_threads: int = 1
    added: int = 0
    updated: int = 0
    skipped: int = 0
    removed: int = 0
    failed: list[Failure] = field(default_factory=list)
    clips: int = 0
    seconds: float = 0.0
    completed: bool = False

    @property
    def embedded(self) -> int:
        return self.added + self.updated

    @property
    def videos_per_s(self) -> float:
        return (self.embedded + len(self.failed)) / self.seconds if self.seconds > 0 else 0.0

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failed"] = [asdict(f) for f in self.failed]
        data.update(failed_count=len(self.failed), videos_per_s=round(self.videos_per_s, 3),
                    clips_per_s=round(self.clips_per_s, 3), seconds=round(self.seconds, 3))
        return data

    def summary(self) -> str:
        return (f"{self.added} added, {self.updated} updated, {self.skipped} unchanged, {self.removed} removed, "
                f"{len(self.failed)} failed in {self.seconds:.1f} s ({self.videos_per_s:.2f} videos/s, "
                f"{self.clips_per_s:.1f} clips/s)")


# ---------------------------------------------------------------- files


def find_videos(videos_dir: str | os.PathLike) -> list[str]:
    """Video files under ``videos_dir`` (recursive, by suffix), as sorted absolute paths.

    Anything that is not a directory is listed (a FIFO named ``x.mp4``, a dangling link or a
    link loop too: the decoder refuses it and the build records why); symlinked directories
    are not followed.
    """
    root = Path(videos_dir)
    if not root.is_dir():
        raise VclError(f"{videos_dir} is not a folder; pass the folder that holds the videos")
    found = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for name in files:
            if Path(name).suffix.lower() in VIDEO_SUFFIXES:
                found.append(os.path.abspath(os.path.join(folder, name)))
    return sorted(found)


def file_hash(path: str, chunk: int = 1 << 20) -> str:
    """``sha256:<hex>`` of a file's bytes, read in chunks; '' when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                digest.update(block)
    except OSError:
        return ""
    return "sha256:" + digest.hexdigest()


def _stat(path: str) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of the file; of the link itself for a link that cannot be followed
    (dangling, or a loop), so it goes to a decode worker and fails there with its reason."""
    try:
        st = os.stat(path)
    except OSError:
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if not os.path.islink(path):
            return None
    return int(st.st_size), int(st.st_mtime_ns)


def available_cores() -> int:
    """Cores this process may run on (CPU affinity, e.g. ``taskset`` or a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers() -> int:
    """Decode workers: one per core, at most 8.

    Cores are not split statically between decoding and encoding: the encoder gets every core
    (``load_embedder``) and the decode workers share them (``DECODE_PRIORITY``), so whichever
    side is the bottleneck gets the CPU: the bounded queue between them stops the decoders
    when the encoder lags. (A static split, cores - workers encoder threads, left a 2-core
    build of r3d_18 with one encoder thread: b/a 0.56, slower than the naive loop.)
    """
    return max(1, min(MAX_DEFAULT_WORKERS, available_cores()))


DECODE_PRIORITY: dict[str, Any] = {"nice": 0, "batch": True}
"""How the build's decode workers share the CPU (``DecodePool``'s ``nice`` and ``batch``).

The build's own priority under ``SCHED_BATCH``: they do not preempt the encoder's threads,
and beside another job they keep a normal share. Nice 10 (before) gave them a weight of 110
against 1024 for any other process: beside two busy processes on 2 cores every file of a
small build hit the decode timeout, where now the build takes its fair 2x
(``benchmarks/decode_priority.py``).
"""


# ---------------------------------------------------------------- encoder and index


def load_embedder(model: str | os.PathLike | None, workers: int):
    """The encoder with a CPU thread per core (the decode workers share them, see ``DECODE_PRIORITY``)."""
    from vcl_infer.encode.embedder import Embedder

    threads = available_cores()
    return Embedder.load(model, threads=threads), threads


def open_index_for(index_dir: str | os.PathLike, embedder, index_type: str | None = None,
                   target_recall: float | None = None):
    """Open (or create) the index for writing with this encoder; refuses another encoder's."""
    from vcl_infer.index import VideoIndex

    spec = embedder.spec
    return VideoIndex.open_or_create(
        os.fspath(index_dir), fingerprint=spec.fingerprint, spec_json=spec.to_json(), dim=spec.embed_dim,
        index_type=index_type, target_recall=target_recall,
    )


def clip_vectors(embedder, uint8_clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``N x T x S x S x 3`` uint8 clips -> (video vector ``(D,)``, clip vectors ``N x D``), unit length."""
    from vcl_infer.clips.preprocess import to_model_input
    from vcl_infer.encode.pooling import l2_normalize, pool_clips

    clips = l2_normalize(embedder.embed_clips(to_model_input(uint8_clips, embedder.spec.clip))).astype(np.float32)
    return pool_clips(clips), clips


def _decoded_in_background(pool, requests: list, depth: int) -> Iterator[tuple[int, Any]]:
    """``pool.imap_unordered(requests, parts=True)`` driven by a thread, so workers start their
    next file (or batch) while the caller encodes (the generator hands out work only while it
    is being advanced). At most ``depth`` batches wait in between: memory stays bounded."""
    results: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def feed() -> None:
        try:
            for item in pool.imap_unordered(requests, parts=True):
                while not stop.is_set():
                    try:
                        results.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            results.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            results.put(exc)

    thread = threading.Thread(target=feed, name="vcl-decode-feeder", daemon=True)
    thread.start()
    try:
        while True:
            item = results.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def _start_decoders(workers: int | None, timeout_s: float, wanted: bool):
    """The build's decode pool, started before the encoder loads so that the workers' imports
    overlap the model load and the index open (None when there is nothing to decode or
    ``workers`` is invalid: ``_start`` says why)."""
    from vcl_infer.video.isolated import DecodePool

    if not wanted or (workers is not None and workers < 1):
        return None
    return DecodePool(workers=workers or default_workers(), timeout_s=timeout_s, **DECODE_PRIORITY)


def _index_files(index, embedder, files: Sequence[str], stats: dict[str, tuple[int, int]], report: BuildReport,
                 *, replace: set[str], clips, workers: int, timeout_s: float, commit_every: int,
                 commit_seconds: float, progress: bool, pool=None) -> None:
    """Decode, embed and add ``files``; paths in ``replace`` are removed first (re-embedding).

    ``pool``: a started ``DecodePool`` to use (the caller closes it), else one is started here.
    """
    import contextlib

    from tqdm import tqdm

    from vcl_infer.video.clips import ClipBatch
    from vcl_infer.video.isolated import DecodePool

    if not files:
        return
    # largest files first (longest decodes, as far as size tells): the last files to finish are
    # then short ones, so no worker sits idle long at the end while another decodes a long video
    files = sorted(files, key=lambda p: stats[p][0], reverse=True)
    spec = embedder.spec.clip
    pending = 0
    last_commit = time.monotonic()
    bar = tqdm(total=len(files), unit="video", desc="indexing", disable=not progress, dynamic_ncols=True)
    # a long video arrives as batches of clips: only their vectors are kept until it is done
    partial: dict[int, tuple[list[np.ndarray], list[tuple[float, float]]]] = {}
    own = pool is None
    with DecodePool(workers=workers, timeout_s=timeout_s, **DECODE_PRIORITY) if own else contextlib.nullcontext(pool) as pool:
        requests = [(path, spec, clips) for path in files]
        for index_pos, result in _decoded_in_background(pool, requests, depth=2 * workers + 2):
            if isinstance(result, ClipBatch):
                vecs, spans = partial.setdefault(index_pos, ([], []))
                vecs.append(clip_vectors(embedder, result.clips)[1])
                spans.extend((float(w.start_sec), float(w.end_sec)) for w in result.windows)
                continue
            earlier_vecs, earlier_spans = partial.pop(index_pos, ([], []))
            path = files[index_pos]
            size, mtime_ns = stats[path]
            if path in replace:
                index.remove([path])
            if isinstance(result, VideoError):
                index.add_failure(path, size=size, mtime_ns=mtime_ns, error_kind=result.kind, error=result.reason)
                report.failed.append(Failure(path, result.kind, result.reason))
            else:
                from vcl_infer.encode.pooling import pool_clips

                clip_vecs = np.concatenate([*earlier_vecs, clip_vectors(embedder, result.clips)[1]])
                info = result.info.to_dict()
                info.update(frames=int(result.info.num_frames), damaged_frames=int(result.damaged_frames))
                index.add_video(
                    path, size=size, mtime_ns=mtime_ns, content_hash=file_hash(path), info=info,
                    video_vector=pool_clips(clip_vecs), clip_vectors=clip_vecs,
                    windows=earlier_spans + [(float(w.start_sec), float(w.end_sec)) for w in result.windows],
                )
                report.clips += len(clip_vecs)
                if path in replace:
                    report.updated += 1
                else:
                    report.added += 1
            pending += 1
            bar.update(1)
            if pending >= commit_every or time.monotonic() - last_commit >= commit_seconds:
                index.commit()
                pending, last_commit = 0, time.monotonic()
    bar.close()
    index.commit()


def write_report(index_dir: str | os.PathLike, report: BuildReport) -> Path:
    """Write ``build_report.json`` atomically into the index folder."""
    path = Path(index_dir) / REPORT_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_report(index_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The last ``build_report.json`` of an index, or None."""
    try:
        return json.loads((Path(index_dir) / REPORT_NAME).read_text())
    except (OSError, ValueError):
        return None


def _start(index_dir, model, sampling, workers) -> tuple[BuildReport, Any, float, Any]:
    """Validate the options, load the encoder, resolve the clip sampling against the index's."""
    from vcl_infer.clips.sampling_record import requested_sampling, resolve_sampling

    if workers is not None and workers < 1:
        raise VclError("--workers must be at least 1")
    rule = resolve_sampling(index_dir, requested_sampling(**sampling))
    workers = workers or default_workers()
    embedder, threads = load_embedder(model, workers)
    report = BuildReport(index=os.path.abspath(index_dir), model=str(embedder.path),
                         fingerprint=embedder.spec.fingerprint, clips_per_video=rule.count,
                         sampling=rule.to_dict(), workers=workers, encoder_threads=threads)
    return report, embedder, time.monotonic(), rule


# ---------------------------------------------------------------- public entry points


def build_index(
    videos_dir: str | os.PathLike,
    index_dir: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    clips: int | None = None,
    clip_every: float | None = None,
    min_clips: int | None = None,
    max_clips: int | None = None,
    workers: int | None = None,
    index_type: str | None = None,
    progress: bool = True,
    timeout_s: float = 60.0,
    commit_every: int = DEFAULT_COMMIT_EVERY,
    commit_seconds: float = DEFAULT_COMMIT_SECONDS,
    target_recall: float | None = None,
) -> BuildReport:
    """Index every video under ``videos_dir`` into ``index_dir`` (incremental on re-runs).

    Args:
        videos_dir: folder walked recursively for video files (by suffix).
        index_dir: the index folder (created when missing).
        model: encoder bundle; the packaged default encoder when None.
        clips: a fixed number of clips per video, uniformly spaced, however long it is
            (instead of a stride).
        clip_every / min_clips / max_clips: a clip every ``clip_every`` seconds, at least
            ``min_clips`` and at most ``max_clips`` per video (the default: every 1 s, 8 to
            3600, see :class:`vcl_infer.clips.sampling.ClipSampling`). An existing index keeps the
            rule it was built with (recorded in ``sampling.json``); a different one is refused.
        workers: decode processes (default: one per core, at most 8).
        index_type: FAISS factory string for a new index (chosen by size when None).
        progress: show a progress bar (stderr).
        timeout_s: hard decode time limit per file.
        commit_every / commit_seconds: commit after this many videos or seconds.
        target_recall: recall@10 vs exact search the index's search parameters are tuned to
            (default 0.95, recorded in the catalog).

    Returns:
        The :class:`BuildReport`, also written to ``index_dir/build_report.json``.

    Raises:
        VclError: the folder is missing, the model cannot be loaded, or the index was built
            with another encoder (``EncoderMismatch``), is locked or corrupt.
    """
    files = find_videos(videos_dir)
    sampling = dict(clips=clips, clip_every=clip_every, min_clips=min_clips, max_clips=max_clips)
    pool = _start_decoders(workers, timeout_s, bool(files))
    try:
        report = _build(videos_dir, index_dir, files, sampling, pool, model=model, workers=workers,
                        index_type=index_type, target_recall=target_recall, timeout_s=timeout_s,
                        commit_every=commit_every, commit_seconds=commit_seconds, progress=progress)
    finally:
        if pool is not None:
            pool.close()
    write_report(index_dir, report)
    return report


def _build(videos_dir, index_dir, files: list[str], sampling: dict, pool, *, model, workers, index_type,
           target_recall, timeout_s, commit_every, commit_seconds, progress) -> BuildReport:
    """``build_index``'s work once the decode pool is starting."""
    report, embedder, t0, rule = _start(index_dir, model, sampling, workers)
    report.videos_dir = os.path.abspath(videos_dir)
    root = report.videos_dir.rstrip(os.sep) + os.sep
    index = open_index_for(index_dir, embedder, index_type, target_recall)
    try:
        _record(index_dir, rule)
        known = index.known_files()
        stats: dict[str, tuple[int, int]] = {}
        todo: list[str] = []
        replace: set[str] = set()
        for path in files:
            st = _stat(path)
            if st is None:
                continue  # vanished while walking: treated as vanished below
            stats[path] = st
            old = known.get(path)
            if old is not None and (int(old[0]), int(old[1])) == st:
                report.skipped += 1
                continue
            todo.append(path)
            if old is not None:
                replace.add(path)
        vanished = [p for p in known if p.startswith(root) and p not in stats]
        if vanished:
            report.removed = int(index.remove(vanished))
            index.commit()
        _index_files(index, embedder, todo, stats, report, replace=replace, clips=rule,
                     workers=report.workers, timeout_s=timeout_s, commit_every=commit_every,
                     commit_seconds=commit_seconds, progress=progress, pool=pool)
    finally:
        _close(index)
    report.seconds = time.monotonic() - t0
    report.completed = True
    return report


def add_files(
    index_dir: str | os.PathLike,
    files: Iterable[str | os.PathLike],
    *,
    model: str | os.PathLike | None = None,
    clips: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    timeout_s: float = 60.0,
    clip_every: float | None = None,
    min_clips: int | None = None,
    max_clips: int | None = None,
) -> BuildReport:
    """Embed ``files`` into an existing (or new) index; files already indexed are re-embedded.

    Clips are sampled by the rule the index was built with (``sampling.json``); sampling
    options, when given, must agree with it. Missing paths are reported as failures
    (``not_found``), not raised.
    """
    paths = sorted({os.path.abspath(os.fspath(f)) for f in files})
    sampling = dict(clips=clips, clip_every=clip_every, min_clips=min_clips, max_clips=max_clips)
    report, embedder, t0, rule = _start(index_dir, model, sampling, workers)
    index = open_index_for(index_dir, embedder)
    try:
        _record(index_dir, rule)
        known = index.known_files()
        stats = {}
        todo = []
        for path in paths:
            st = _stat(path)
            if st is None:
                report.failed.append(Failure(path, "not_found", "no such file"))
                continue
            stats[path] = st
            todo.append(path)
        replace = {p for p in todo if p in known}
        _index_files(index, embedder, todo, stats, report, replace=replace, clips=rule,
                     workers=min(report.workers, max(1, len(todo))), timeout_s=timeout_s,
                     commit_every=DEFAULT_COMMIT_EVERY, commit_seconds=DEFAULT_COMMIT_SECONDS, progress=progress)
    finally:
        _close(index)
    report.seconds = time.monotonic() - t0
    report.completed = True
    return report


def remove_files(index_dir: str | os.PathLike, files: Iterable[str | os.PathLike]) -> BuildReport:
    """Remove ``files`` (their videos, clips and failure records) from the index.

    Paths are matched as given and as absolute paths. Each file that is not removed is listed
    in ``report.failed`` with why (``not_indexed``: not in the index, or in it under another
    spelling of the path, which is named; ``not_found``: neither indexed nor on disk).
    """
    from vcl_infer.index import VideoIndex

    t0 = time.monotonic()
    index = VideoIndex.open(os.fspath(index_dir), writable=True)
    report = BuildReport(index=os.path.abspath(index_dir), fingerprint=index.fingerprint)
    try:
        known = index.known_files()
        wanted = []
        for f in files:
            match = next((c for c in (os.fspath(f), os.path.abspath(os.fspath(f))) if c in known), None)
            if match is not None:
                wanted.append(match)
            else:
                report.failed.append(_not_indexed(os.fspath(f), known))
        if wanted:
            report.removed = int(index.remove(wanted))
            index.commit()
    finally:
        _close(index)
    report.seconds = time.monotonic() - t0
    report.completed = True
    return report


def _record(index_dir, rule) -> None:
    """Write ``sampling.json`` (under the writer lock, before any video is added)."""
    from vcl_infer.clips.sampling_record import write_sampling

    write_sampling(index_dir, rule)


def _not_indexed(path: str, known: dict) -> Failure:
    """Why ``path`` is not in the index: another spelling of it is, it is a folder, or it is unknown."""
    name = os.path.basename(path.rstrip(os.sep))
    same_name = [k for k in known if os.path.basename(k) == name]
    real = os.path.realpath(path)
    for other in same_name:
        if os.path.realpath(other) == real:
            return Failure(path, "not_indexed", f"not in the index under this path; it is indexed as {other} "
                                                "(pass that path)")
    if os.path.isdir(path):
        inside = sum(k.startswith(os.path.abspath(path).rstrip(os.sep) + os.sep) for k in known)
        return Failure(path, "not_indexed", f"a folder, not an indexed file ({inside} indexed file(s) under it; "
                                            "pass the files, or rebuild without them)")
    hint = f"; a file of that name is indexed as {same_name[0]}" if same_name else ""
    if not os.path.lexists(path):
        return Failure(path, "not_found", f"not in the index, and no such file on disk (check the path){hint}")
    return Failure(path, "not_indexed", f"not in the index (it was never built or added){hint}")


def _close(index) -> None:
    close = getattr(index, "close", None)
    if close is not None:
        close()
