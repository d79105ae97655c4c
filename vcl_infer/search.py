"""Query an index with a video (or a time range of one): ranked videos or moments.

A query is a file, or ``FILE@START-END`` (seconds). It is decoded in a child process (the
file is untrusted like any other), cut into clips with the index's own clip spec, and
embedded with the index's own encoder (a model with another weight fingerprint is refused).

- Video level (default): videos ranked by the Chamfer similarity of their clips to the query's
  clips (each query clip's best cosine in the video, averaged; the video similarity of
  near-duplicate video retrieval, e.g. Kordopatis-Zilos et al., ViSiL, ICCV 2019), so a
  whole-video query and a cut from one scene of a long video both find their source; the
  reported time range is the clip of that video most similar to any query clip.
- Moment level (``moments=True``): individual clips ranked by their best cosine to any query
  clip.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vcl_infer.errors import VclError, VideoError

_RANGE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)-(\d+(?:\.\d*)?|\.\d+)$")
DEFAULT_QUERY_CLIPS = 8


@dataclass(frozen=True)
class Query:
    """A parsed query: the file, and the time range in seconds (None: the whole file)."""

    path: str
    start: float | None = None
    end: float | None = None

    @property
    def text(self) -> str:
        if self.start is None:
            return self.path
        return f"{self.path}@{self.start:g}-{self.end:g}"


@dataclass
class Hit:
    """One result: ``start``/``end`` are seconds in the matched video."""

    rank: int
    video: str
    score: float
    start: float
    end: float

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "video": self.video, "score": round(float(self.score), 6),
                "start": round(float(self.start), 3), "end": round(float(self.end), 3)}


@dataclass
class SearchResult:
    """The ranked hits of one query; :meth:`to_dict` is the ``--json`` format."""

    query: str
    results: list[Hit] = field(default_factory=list)
    moments: bool = False
    query_path: str = ""
    query_windows: list[tuple[float, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "results": [h.to_dict() for h in self.results]}


def parse_query(text: str) -> Query:
    """``"clip.mp4"`` or ``"clip.mp4@12.5-14"`` -> :class:`Query`.

    A path that exists as written is never split (file names may contain ``@``).

    Raises:
        VclError: a malformed or empty range.
    """
    if "@" not in text or os.path.exists(text):
        return Query(text)
    path, _, rng = text.rpartition("@")
    match = _RANGE.match(rng.strip())
    if not match:
        raise VclError(f"cannot read the time range in {text!r}; write FILE@START-END in seconds, e.g. clip.mp4@12.5-14")
    start, end = float(match.group(1)), float(match.group(2))
    if not end > start:
        raise VclError(f"the range in {text!r} is empty: END must be greater than START (seconds)")
    return Query(path, start, end)


# ---------------------------------------------------------------- query decoding


def range_indices(timestamps: np.ndarray, start: float, end: float) -> np.ndarray:
    """Indices of the frames shown in ``[start, end)`` (seconds)."""
    ts = np.asarray(timestamps, dtype=np.float64)
    return np.nonzero((ts >= start - 1e-6) & (ts < end))[0]


def decode_range(path: str, spec, num_clips: int, start: float, end: float):
    """In this process: ``num_clips`` uniform clips inside ``[start, end)`` of ``path``.

    Returns:
        ``(clips N x T x S x S x 3 uint8, windows [(start_sec, end_sec)], duration)``.
    """
    from vcl_infer.preprocess import fit_frames
    from vcl_infer.sampling import uniform_clips
    from vcl_infer.video.clips import inside_video
    from vcl_infer.video.open import open_video

    reader = open_video(path)
    try:
        ts = np.asarray(reader.timestamps, dtype=np.float64)
        inside = range_indices(ts, start, end)
        if inside.size == 0:
            raise VideoError(path, f"no frame in {start:g}-{end:g} s (the video spans "
                                   f"{ts[0]:.2f}-{reader.info.duration:.2f} s)")
        windows = inside_video(uniform_clips(ts[inside], spec, num_clips), reader)
        union = np.unique(np.concatenate([inside[w.indices] for w in windows]))
        frames = reader.get_frames(union)
        where = {int(i): k for k, i in enumerate(union)}
        clips = np.stack([fit_frames(frames[[where[int(i)] for i in inside[w.indices]]], spec) for w in windows])
        return clips, [(w.start_sec, w.end_sec) for w in windows], float(reader.info.duration)
    finally:
        reader.close()


def query_clips(query: Query, spec, num_clips: int, timeout_s: float = 60.0) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """The query's uint8 clips and their time ranges, decoded in a child process."""
    from vcl_infer.video._guards import regular_file

    if not os.path.lexists(query.path):
        raise VclError(f"query file {query.path} not found; pass a video file or FILE@START-END")
    try:
        regular_file(query.path)  # the build's guard: a FIFO, device or broken link says so
    except VideoError as exc:
        raise VclError(f"query file {exc}; pass a video file or FILE@START-END") from None
    if query.start is None:
        from vcl_infer.video.isolated import decode_clips

        decoded = decode_clips(query.path, spec, num_clips, timeout_s=timeout_s)
        return decoded.clips, [(w.start_sec, w.end_sec) for w in decoded.windows]
    from vcl_infer.video.isolated import run_isolated  # the build's decode workers

    clips, windows, _ = run_isolated(decode_range, (query.path, spec, num_clips, query.start, query.end),
                                     query.path, timeout_s)
    return clips, windows


# ---------------------------------------------------------------- encoder of the index


def embedder_for_index(index, model: str | os.PathLike | None, index_dir: str | os.PathLike):
    """The encoder that built ``index``: ``model`` if given (fingerprint checked), else the
    packaged default or the bundle the last build recorded, whichever matches."""
    from vcl_infer.build import read_report
    from vcl_infer.bundle import load_bundle_spec
    from vcl_infer.embedder import DEFAULT_BUNDLE, Embedder
    from vcl_infer.index.errors import EncoderMismatch

    wanted = index.fingerprint
    if model is not None:
        spec = load_bundle_spec(model)
        if spec.fingerprint != wanted:
            raise EncoderMismatch(
                f"--model {model} (weights {spec.fingerprint[:19]}...) is not the encoder this index was built with "
                f"({wanted[:19]}...); pass the bundle used for `vcl-index build`, or rebuild the index with this model"
            )
        return Embedder.load(model)
    candidates = [DEFAULT_BUNDLE]
    recorded = (read_report(index_dir) or {}).get("model")
    if recorded:
        candidates.append(Path(recorded))
    for candidate in candidates:
        try:
            if Path(candidate).is_file() and load_bundle_spec(candidate).fingerprint == wanted:
                return Embedder.load(candidate)
        except VclError:
            continue
    raise VclError(
        f"cannot find the encoder this index was built with (weights {wanted[:19]}...): the packaged default "
        f"encoder does not match{' and ' + str(recorded) + ' is gone or differs' if recorded else ''}; "
        "pass it with --model BUNDLE"
    )


# ---------------------------------------------------------------- search


def _num_query_clips(index_dir) -> int:
    from vcl_infer.build import read_report

    return int((read_report(index_dir) or {}).get("clips_per_video") or DEFAULT_QUERY_CLIPS)


def embed_query(embedder, query: Query, num_clips: int) -> tuple[np.ndarray, np.ndarray, list[tuple[float, float]]]:
    """-> (pooled vector ``(D,)``, clip vectors ``Q x D``, the query clips' time ranges)."""
    from vcl_infer.build import clip_vectors

    clips, windows = query_clips(query, embedder.spec.clip, num_clips)
    video_vec, clip_vecs = clip_vectors(embedder, clips)
    return video_vec, clip_vecs, windows


def _clip_sims(index, video_id: int, query_clip_vecs: np.ndarray) -> tuple[np.ndarray, list]:
    """Cosines ``Q x N`` between the query clips and the clips of ``video_id``, and those clips."""
    vecs = np.asarray(index.clip_vectors(video_id), dtype=np.float32)
    clips = list(index.clips_of(video_id))
    return query_clip_vecs @ vecs.T, clips


def match_video(index, video_id: int, query_clip_vecs: np.ndarray) -> tuple[float, float, float]:
    """How well the query matches one video: ``(score, start, end)``.

    ``score`` is the Chamfer similarity: for each query clip, the cosine of its best-matching
    clip of the video, averaged over the query clips. A query that is the whole video, a
    re-encoded copy, or a part of it (a cut) scores near 1; the video's pooled vector would
    not show a cut from one scene of a long video. ``start``/``end`` are the time range of
    the video's clip most similar to any query clip.
    """
    sims, clips = _clip_sims(index, video_id, query_clip_vecs)
    if not clips:
        record = index.video(video_id)
        return float("-inf"), 0.0, float(record.duration or 0.0)
    score = float(sims.max(axis=1).mean())
    per_clip = sims.max(axis=0)
    best = int(np.argmax(per_clip >= per_clip.max() - 1e-6))  # ties (a whole-file self match): the earliest
    return score, float(clips[best].start_sec), float(clips[best].end_sec)


def search_vectors(index, video_vec: np.ndarray, clip_vecs: np.ndarray, *, k: int = 10,
                   moments: bool = False, candidates: int | None = None) -> list[Hit]:
    """Rank the index against an embedded query (see the module docstring).

    Video level: candidates are the nearest videos by pooled vector and the videos of the
    nearest clips of every query clip (``candidates`` each, default ``max(4 k, 20)``); they
    are ranked by :func:`match_video`'s score.
    """
    clip_vecs = np.ascontiguousarray(clip_vecs, dtype=np.float32)
    hits: list[Hit] = []
    if moments:
        scores, ids = index.search(clip_vecs, k, level="clip")
        best: dict[int, float] = {}
        for row_scores, row_ids in zip(scores, ids):
            for s, i in zip(row_scores, row_ids):
                if i >= 0 and float(s) > best.get(int(i), -math.inf):
                    best[int(i)] = float(s)
        for rank, (clip_id, score) in enumerate(sorted(best.items(), key=lambda kv: -kv[1])[:k], start=1):
            clip = index.clip(clip_id)
            hits.append(Hit(rank, clip.path, score, float(clip.start_sec), float(clip.end_sec)))
        return hits
    wide = candidates or max(4 * k, 20)
    _, video_ids = index.search(np.ascontiguousarray(video_vec[None], dtype=np.float32), wide, level="video")
    _, clip_ids = index.search(clip_vecs, wide, level="clip")
    found = {int(v) for v in video_ids.ravel() if v >= 0}
    found |= {int(index.clip(int(c)).video_id) for c in np.unique(clip_ids) if c >= 0}
    scored = sorted(((*match_video(index, vid, clip_vecs), vid) for vid in found), key=lambda t: (-t[0], t[3]))
    for rank, (score, start, end, vid) in enumerate(scored[:k], start=1):
        hits.append(Hit(rank, index.video(vid).path, score, start, end))
    return hits


def search_index(
    index_dir: str | os.PathLike,
    query: str,
    *,
    k: int = 10,
    moments: bool = False,
    model: str | os.PathLike | None = None,
    num_clips: int | None = None,
) -> SearchResult:
    """Search ``index_dir`` with ``query`` (a file, or ``FILE@START-END`` in seconds).

    Args:
        index_dir: the index folder.
        query: see :func:`parse_query`.
        k: results to return.
        moments: rank individual clips instead of whole videos.
        model: the encoder bundle; must be the index's (same weight fingerprint). When None,
            the packaged default or the bundle recorded by the last build, if it matches.
        num_clips: query clips (default: the index's clips per video).

    Returns:
        A :class:`SearchResult`; ``to_dict()`` is the ``--json`` format.
    """
    from vcl_infer.index import VideoIndex

    if k < 1:
        raise VclError("-k must be at least 1")
    parsed = parse_query(query)
    if not (Path(index_dir) / "catalog.sqlite").is_file():
        raise VclError(f"no index at {index_dir}; build one with `vcl-index build VIDEOS_DIR --index {index_dir}`")
    index = VideoIndex.open(os.fspath(index_dir))
    try:
        embedder = embedder_for_index(index, model, index_dir)
        video_vec, clip_vecs, windows = embed_query(embedder, parsed, num_clips or _num_query_clips(index_dir))
        hits = search_vectors(index, video_vec, clip_vecs, k=k, moments=moments)
    finally:
        close = getattr(index, "close", None)
        if close is not None:
            close()
    return SearchResult(query=query, results=hits, moments=moments, query_path=parsed.path,
                        query_windows=[(float(a), float(b)) for a, b in windows])


def format_table(result: SearchResult) -> str:
    """A readable table of the hits (the default ``vcl-search`` output)."""
    from vcl_infer.index.catalog import printable_path  # names with undecodable bytes print as \\xff

    if not result.results:
        return f"no results for {result.query}"
    width = max(len(h.video) for h in result.results)
    width = min(max(width, 5), 80)
    lines = [f"{'rank':>4}  {'score':>7}  {'start':>8}  {'end':>8}  video"]
    for h in result.results:
        lines.append(f"{h.rank:>4}  {h.score:7.4f}  {h.start:8.2f}  {h.end:8.2f}  {printable_path(h.video)}")
    return "\n".join(lines)
