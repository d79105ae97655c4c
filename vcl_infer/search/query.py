"""Query an index with a video (or a time range of one): ranked videos or moments.

A query is a file, or ``FILE@START-END`` (seconds). It is decoded in a child process (the
file is untrusted like any other), cut into clips with the index's own clip spec, and
embedded with the index's own encoder (a model with another weight fingerprint is refused).

- Video level (default): videos ranked by the Chamfer similarity of their clips to the query's
  clips (each query clip's best cosine in the video, averaged; the video similarity of
  near-duplicate video retrieval, e.g. Kordopatis-Zilos et al., ViSiL, ICCV 2019), so a
  whole-video query and a cut from one scene of a long video both find their source; the
  reported time range is where the query's clips align best with the video's clips in time
  (:func:`vcl_infer.search.moments.align`), so it is as precise as the index's clip stride.
- Moment level (``moments=True``): individual clips ranked by their best cosine to any query
  clip.

The query is cut into clips by the index's own sampling rule (``sampling.json``: the same
stride, with its floor of clips so a 2-second cut still gets several), capped at
``QUERY_MAX_CLIPS``.
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
QUERY_MAX_CLIPS = 600
KEEP_SIMS = 8_000_000  # query x video cosines kept between scoring and aligning (32 MB)


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
    matches: tuple = ()  # ClipMatch per query clip: which clip of the video it matched (the "why")

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


def decode_range(path: str, spec, num_clips, start: float, end: float):
    """In this process: the clips inside ``[start, end)`` of ``path`` (``num_clips``: a count or
    a :class:`vcl_infer.clips.sampling.ClipSampling`), decoded a bounded batch at a time.

    Returns:
        ``(clips N x T x S x S x 3 uint8, windows [(start_sec, end_sec)], duration)``.
    """
    from vcl_infer.clips.sampling import ClipWindow, sample_windows
    from vcl_infer.video.clips import fit_windows, inside_video
    from vcl_infer.video.open import open_video

    reader = open_video(path)
    try:
        ts = np.asarray(reader.timestamps, dtype=np.float64)
        inside = range_indices(ts, start, end)
        if inside.size == 0:
            raise VideoError(path, f"no frame in {start:g}-{end:g} s (the video spans "
                                   f"{ts[0]:.2f}-{reader.info.duration:.2f} s)")
        windows = inside_video([ClipWindow(inside[w.indices], w.start_sec, w.end_sec)
                                for w in sample_windows(ts[inside], spec, num_clips)], reader)
        clips = fit_windows(reader, spec, windows)
        return clips, [(w.start_sec, w.end_sec) for w in windows], float(reader.info.duration)
    finally:
        reader.close()


def query_clips(query: Query, spec, num_clips, timeout_s: float = 60.0) -> tuple[np.ndarray, list[tuple[float, float]]]:
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
    from vcl_infer.encode.bundle import load_bundle_spec
    from vcl_infer.encode.embedder import DEFAULT_BUNDLE, Embedder
    from vcl_infer.index.build import read_report
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


def query_sampling(index_dir):
    """How a query is cut into clips: the index's rule (``sampling.json``), at most
    ``QUERY_MAX_CLIPS`` clips; a fixed count for an index built with ``--clips N``."""
    from dataclasses import replace

    from vcl_infer.clips.sampling import ClipSampling
    from vcl_infer.clips.sampling_record import read_sampling

    rule = read_sampling(index_dir) or ClipSampling()
    if rule.count is not None:
        return rule
    return replace(rule, max_clips=max(rule.min_clips, min(rule.max_clips, QUERY_MAX_CLIPS)))


def embed_query(embedder, query: Query, num_clips) -> tuple[np.ndarray, np.ndarray, list[tuple[float, float]]]:
    """-> (pooled vector ``(D,)``, clip vectors ``Q x D``, the query clips' time ranges)."""
    from vcl_infer.index.build import clip_vectors

    clips, windows = query_clips(query, embedder.spec.clip, num_clips)
    video_vec, clip_vecs = clip_vectors(embedder, clips)
    return video_vec, clip_vecs, windows


def _clip_sims(index, video_id: int, query_clip_vecs: np.ndarray) -> np.ndarray:
    """Cosines ``Q x N`` between the query clips and the clips of ``video_id`` (time order)."""
    vecs = np.asarray(index.clip_vectors(video_id), dtype=np.float32)
    return query_clip_vecs @ vecs.T


def _locate(index, video_id: int, sims: np.ndarray, query_windows) -> tuple[float, float, tuple]:
    """``(start, end, matches)`` of the query in one video, from its ``Q x N`` cosines."""
    from vcl_infer.search.moments import align

    clips = list(index.clips_of(video_id))
    if query_windows is not None and len(query_windows) == len(sims):
        moment = align(sims, query_windows, [(c.start_sec, c.end_sec) for c in clips])
        return moment.start, moment.end, moment.matches
    per_clip = sims.max(axis=0)
    best = int(np.argmax(per_clip >= per_clip.max() - 1e-6))  # ties (a whole-file self match): the earliest
    return float(clips[best].start_sec), float(clips[best].end_sec), ()


def match_video(index, video_id: int, query_clip_vecs: np.ndarray,
                query_windows=None) -> tuple[float, float, float, tuple]:
    """How well the query matches one video: ``(score, start, end, matches)``.

    ``score`` is the Chamfer similarity: for each query clip, the cosine of its best-matching
    clip of the video, averaged over the query clips. A query that is the whole video, a
    re-encoded copy, or a part of it (a cut) scores near 1; the video's pooled vector would
    not show a cut from one scene of a long video. With ``query_windows`` (the query clips'
    time ranges) ``start``/``end`` are the range where the query's clips align best with the
    video's (:func:`vcl_infer.search.moments.align`) and ``matches`` says which clip matched which;
    without, the video's clip most similar to any query clip, and no matches.
    """
    sims = _clip_sims(index, video_id, query_clip_vecs)
    if not sims.shape[1]:
        record = index.video(video_id)
        return float("-inf"), 0.0, float(record.duration or 0.0), ()
    return (float(sims.max(axis=1).mean()), *_locate(index, video_id, sims, query_windows))


def search_vectors(index, video_vec: np.ndarray, clip_vecs: np.ndarray, *, k: int = 10,
                   moments: bool = False, candidates: int | None = None, query_windows=None) -> list[Hit]:
    """Rank the index against an embedded query (see the module docstring).

    Video level: candidates are the nearest videos by pooled vector and the videos of the
    nearest clips of every query clip (``candidates`` each, default ``max(4 k, 20)``); they
    are ranked by :func:`match_video`'s score; ``query_windows`` (the query clips' time
    ranges) lets it align the query in time for each hit's range. Only the ``k`` returned
    hits are aligned, and a long query asks for fewer neighbours per clip (at most about
    ``4000`` clip neighbours in all), so the cost follows ``k`` and the query, not the index.
    """
    clip_vecs = np.ascontiguousarray(clip_vecs, dtype=np.float32)
    hits: list[Hit] = []
    if moments:
        scores, ids = index.search(clip_vecs, k, level="clip")
        best: dict[int, tuple[float, int]] = {}
        for row, (row_scores, row_ids) in enumerate(zip(scores, ids)):
            for s, i in zip(row_scores, row_ids):
                if i >= 0 and float(s) > best.get(int(i), (-math.inf, 0))[0]:
                    best[int(i)] = (float(s), row)
        for rank, (clip_id, (score, row)) in enumerate(sorted(best.items(), key=lambda kv: -kv[1][0])[:k], start=1):
            from vcl_infer.search.moments import ClipMatch

            clip = index.clip(clip_id)
            why: tuple[ClipMatch, ...] = ()
            if query_windows is not None and row < len(query_windows):
                q0, q1 = query_windows[row]
                why = (ClipMatch(float(q0), float(q1), float(clip.start_sec), float(clip.end_sec), score),)
            hits.append(Hit(rank, clip.path, score, float(clip.start_sec), float(clip.end_sec), why))
        return hits
    wide = candidates or max(4 * k, 20)
    _, video_ids = index.search(np.ascontiguousarray(video_vec[None], dtype=np.float32), wide, level="video")
    per_clip = max(5, min(wide, 4000 // max(1, len(clip_vecs))))
    clip_scores, clip_ids = index.search(clip_vecs, per_clip, level="clip")
    owner = {int(c): int(index.clip(int(c)).video_id) for c in np.unique(clip_ids) if c >= 0}
    found = {int(v) for v in video_ids.ravel() if v >= 0} | set(owner.values())
    bounds = _chamfer_bounds(clip_scores, clip_ids, owner, found)
    kept: dict[int, np.ndarray] = {}  # cosines of the candidates, while they fit in KEEP_SIMS floats
    scored: list[tuple[float, int]] = []
    for bound, vid in sorted(((b, v) for v, b in bounds.items()), key=lambda t: (-t[0], t[1])):
        if len(scored) >= k and bound < sorted(scored, key=lambda t: -t[0])[k - 1][0] - 1e-6:
            break  # no unscored candidate can enter the top k
        m = _clip_sims(index, vid, clip_vecs)
        scored.append((float(m.max(axis=1).mean()) if m.shape[1] else float("-inf"), vid))
        if sum(x.size for x in kept.values()) + m.size <= KEEP_SIMS:
            kept[vid] = m
    scored.sort(key=lambda t: (-t[0], t[1]))
    for rank, (score, vid) in enumerate(scored[:k], start=1):
        record = index.video(vid)
        m = kept[vid] if vid in kept else _clip_sims(index, vid, clip_vecs)
        if m.shape[1]:
            start, end, why = _locate(index, vid, m, query_windows)
        else:
            start, end, why = 0.0, float(record.duration or 0.0), ()
        hits.append(Hit(rank, record.path, score, start, end, why))
    return hits


def _chamfer_bounds(clip_scores: np.ndarray, clip_ids: np.ndarray, owner: dict[int, int],
                    candidates: set[int]) -> dict[int, float]:
    """An upper bound of each candidate video's Chamfer score from the clip neighbours alone.

    Query clip ``j``'s best cosine in video ``v`` is its best retrieved neighbour in ``v``, or
    at most the score of its last retrieved neighbour (``v`` has nothing nearer: exact for
    Flat, near-exact at the tuned recall for IVF). Scoring candidates in the order of this
    bound, and stopping when it falls below the k-th exact score, reads the clip vectors of
    few videos instead of all candidates', with the same top k.
    """
    tails = np.full(len(clip_scores), -1.0)
    for j, (row_s, row_i) in enumerate(zip(clip_scores, clip_ids)):
        valid = row_i >= 0
        if valid.all() and valid.size:  # a full row: unretrieved clips score at most its last
            tails[j] = float(row_s[-1])
    best = {v: tails.copy() for v in candidates}
    for j, (row_s, row_i) in enumerate(zip(clip_scores, clip_ids)):
        for sc, c in zip(row_s, row_i):
            if c >= 0:
                v = owner[int(c)]
                best[v][j] = max(best[v][j], float(sc))
    return {v: float(b.mean()) for v, b in best.items()}


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
        num_clips: a fixed number of query clips (default: cut like the index's videos,
            see :func:`query_sampling`).

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
        video_vec, clip_vecs, windows = embed_query(embedder, parsed, num_clips or query_sampling(index_dir))
        hits = search_vectors(index, video_vec, clip_vecs, k=k, moments=moments, query_windows=windows)
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
