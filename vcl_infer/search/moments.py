"""Where in a video a query matches: align the query's clips with the video's clips in time.

Both are cut into clips (:class:`vcl_infer.clips.sampling.ClipSampling`); ``sims[j, i]`` is the
cosine of query clip ``j`` and stored clip ``i``. A cut of the video, played from offset
``t``, shows query clip ``j`` at ``t + q_j`` (``q_j``: the clip's start relative to the
query's first clip). So instead of trusting the single most similar stored clip (one noisy
cosine), every offset ``t`` that puts some query clip on some stored clip is scored by the
cosines of each query clip to the stored clip starting nearest ``t + q_j`` (the better
half of them, averaged: :func:`_robust_mean`), among the offsets that hold a pair within
``PEAK_TOLERANCE`` of the most similar pair: the
diagonal of the similarity matrix (the temporal alignment of e.g. Douze et al., "Circulant
temporal encoding for video retrieval", ECCV 2010, reduced to one offset). The best offset's
stored clips give the reported range and, per query clip, the "why" of the match.

With stored clips every ``s`` seconds the aligned range starts within about one stride of
the true one whenever the encoder tells the matched moment from its neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_ALIGN_WORK = 4_000_000
"""Offsets x query clips evaluated at most; beyond it only the first query clip anchors."""

PEAK_TOLERANCE = 0.005
"""Offsets whose best clip pair is this far (in cosine) below the best pair anywhere are not
considered: the single most similar pair is the strongest evidence a weak encoder gives (a
re-encoded copy of a moment scores near 1), the alignment decides between near-ties."""


@dataclass(frozen=True)
class ClipMatch:
    """One query clip and the stored clip it was aligned with (the "why" of a hit).

    Attributes:
        query_start, query_end: the query clip, seconds in the query file.
        start, end: the matched clip, seconds in the result video.
        score: their cosine similarity.
    """

    query_start: float
    query_end: float
    start: float
    end: float
    score: float

    def to_dict(self) -> dict:
        return {"query_start": round(self.query_start, 3), "query_end": round(self.query_end, 3),
                "start": round(self.start, 3), "end": round(self.end, 3), "score": round(self.score, 6)}


@dataclass(frozen=True)
class Moment:
    """The aligned range of a video: ``start``/``end`` seconds, its mean cosine, the matches."""

    start: float
    end: float
    score: float
    matches: tuple[ClipMatch, ...]


def _nearest(sorted_starts: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the stored clip whose start is nearest each target time (any shape)."""
    right = np.clip(np.searchsorted(sorted_starts, targets), 0, sorted_starts.size - 1)
    left = np.clip(right - 1, 0, sorted_starts.size - 1)
    pick_left = np.abs(targets - sorted_starts[left]) <= np.abs(sorted_starts[right] - targets)
    return np.where(pick_left, left, right)


def _robust_mean(aligned: np.ndarray) -> np.ndarray:
    """Per offset, the mean of the better half of the query clips' cosines: a query clip that
    straddles a shot change (or a cut's edge) matches no stored clip well, and must not
    outvote the clips that do."""
    keep = max(1, (aligned.shape[1] + 1) // 2)
    return -np.sort(-aligned, axis=1)[:, :keep].mean(axis=1)


def align(sims: np.ndarray, query_windows, clip_windows) -> Moment:
    """The best-aligned moment of a video for a query.

    Args:
        sims: ``Q x N`` cosines of the query clips to the video's clips.
        query_windows: ``Q`` ``(start, end)`` seconds of the query clips, in the query file.
        clip_windows: ``N`` ``(start, end)`` seconds of the video's clips.

    Returns:
        The :class:`Moment`: the span of the stored clips the best offset aligns with the
        query's clips (ties: the earliest offset).
    """
    sims = np.asarray(sims, dtype=np.float64)
    q = np.asarray(query_windows, dtype=np.float64).reshape(-1, 2)
    c = np.asarray(clip_windows, dtype=np.float64).reshape(-1, 2)
    if sims.shape != (len(q), len(c)) or not len(q) or not len(c):
        raise ValueError(f"sims of shape {sims.shape} do not match {len(q)} query and {len(c)} video clips")
    order = np.argsort(c[:, 0], kind="stable")
    starts = c[order, 0]
    q_off = q[:, 0] - q[:, 0].min()
    anchors = q_off if len(c) * len(q) * len(q) <= MAX_ALIGN_WORK else q_off[:1]
    offsets = np.unique(np.round((starts[:, None] - anchors[None, :]).ravel(), 6))
    nearest = order[_nearest(starts, offsets[:, None] + q_off[None, :])]  # offsets x Q
    aligned = sims[np.arange(len(q))[None, :], nearest]  # offsets x Q
    peak = aligned.max(axis=1)
    scores = np.where(peak >= peak.max() - PEAK_TOLERANCE, _robust_mean(aligned), -np.inf)
    best = int(np.argmax(scores >= scores.max() - 1e-9))
    picked = nearest[best]
    matches = tuple(ClipMatch(float(q[j, 0]), float(q[j, 1]), float(c[i, 0]), float(c[i, 1]), float(sims[j, i]))
                    for j, i in enumerate(picked))
    return Moment(start=float(c[picked, 0].min()), end=float(c[picked, 1].max()), score=float(scores[best]),
                  matches=matches)
