"""Action recognition with a linear probe on frozen video embeddings (no torch needed).

Training: :func:`fit_probe` fits a :class:`~vcl_infer.probe.linear.LinearProbe` on one pooled vector
per video (``N x D``), optionally on a stratified, seeded fraction of the labels (the
papers' limited-label tables). Inference: :func:`predict_video` embeds ``num_clips``
uniformly spaced clips and combines them in one of two ways:

- ``mean_embedding`` (default): average the L2-normalised clip vectors, renormalise,
  classify once. This is how the probe's training vectors are pooled (the index's video
  vectors, :meth:`vcl_infer.Embedder.embed_decoded`), so train and test see the same kind of
  input.
- ``mean_probability``: classify every clip, average the class probabilities. This is the
  papers' linear-evaluation protocol as we understand it: TCLR's ``linear_eval`` uses 10
  clips per test video and averages the clip predictions (official-methods.md section 1;
  whether it averages softmax probabilities or logits is not verified here). FAME reports
  fine-tuning / linear numbers with multi-clip testing too, details not verified.

Either way the per-clip predictions come back with their time ranges, so a user sees where
in the video the action is. :func:`evaluate_probe` gives top-1 / top-5, per-class accuracy
and the confusion matrix.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from numpy.typing import ArrayLike

from vcl_infer.encode.pooling import l2_normalize, pool_clips

if TYPE_CHECKING:  # the probe imports scikit-learn; the retrieval protocols that use this module do not need it
    from vcl_infer.probe.linear import LinearProbe

MODES = ("mean_embedding", "mean_probability")


def stratified_subset(labels: ArrayLike, fraction: float, seed: int = 0) -> np.ndarray:
    """Indices of a seeded, class-stratified ``fraction`` of ``labels``, at least one per class.

    Each class keeps ``max(1, round(fraction * count))`` of its members, drawn with
    ``numpy.random.default_rng(seed)``; the same labels, fraction and seed give the same
    indices. Returned sorted.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    label_array = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(label_array):
        members = np.flatnonzero(label_array == cls)
        keep = max(1, int(round(fraction * len(members))))
        chosen.append(rng.permutation(members)[:keep])
    return np.sort(np.concatenate(chosen))


def fit_probe(embeddings: np.ndarray, labels: ArrayLike, *, label_fraction: float | None = None,
              seed: int = 0, **probe_params: Any) -> LinearProbe:
    """Fit a linear probe on ``N x D`` video embeddings.

    Args:
        embeddings: ``N x D`` pooled video vectors.
        labels: ``N`` class labels (names or ids); they become ``probe.classes_``.
        label_fraction: train on this stratified fraction of the videos (at least one per
            class); None uses all.
        seed: seeds the subset draw (and is recorded in the probe).
        probe_params: passed to :class:`LinearProbe` (``C``, ``max_iter``, ``tol``).

    Returns:
        The fitted probe; ``probe.train_indices_`` are the rows it was trained on.
    """
    from vcl_infer.probe.linear import LinearProbe

    X = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"need N x D embeddings and N labels, got {X.shape} and {y.shape}")
    rows = np.arange(len(y)) if label_fraction is None else stratified_subset(y, label_fraction, seed)
    probe = LinearProbe(seed=seed, **probe_params).fit(X[rows], y[rows])
    probe.train_indices_ = rows
    return probe


def video_probabilities(probe: LinearProbe, clip_vectors: np.ndarray, mode: str = "mean_embedding") -> np.ndarray:
    """Class probabilities ``(K,)`` of one video from its ``n x D`` clip vectors (see module doc)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "mean_embedding":
        return probe.predict_proba(pool_clips(clip_vectors)[None])[0]
    return probe.predict_proba(l2_normalize(clip_vectors)).mean(axis=0)


def _name(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def predict_clips(probe: LinearProbe, clip_vectors: np.ndarray, windows: Sequence = (), *,
                  mode: str = "mean_embedding", top: int = 5) -> dict[str, Any]:
    """Video-level top-``top`` classes and one prediction per clip.

    Args:
        clip_vectors: ``n x D`` embeddings of the video's clips, in time order.
        windows: the n clip windows (``start_sec``, ``end_sec``), or empty.

    Returns:
        ``{"mode", "top": [{"class", "probability"}], "clips": [{"start_sec", "end_sec",
        "class", "probability"}]}``.
    """
    probs = video_probabilities(probe, clip_vectors, mode)
    order = np.argsort(-probs, kind="stable")[:top]
    per_clip = probe.predict_proba(l2_normalize(clip_vectors))
    clips = []
    for i, row in enumerate(per_clip):
        best = int(np.argmax(row))
        window = windows[i] if i < len(windows) else None
        clips.append({
            "start_sec": None if window is None else round(float(window.start_sec), 3),
            "end_sec": None if window is None else round(float(window.end_sec), 3),
            "class": _name(probe.classes_[best]),
            "probability": float(row[best]),
        })
    return {
        "mode": mode,
        "top": [{"class": _name(probe.classes_[j]), "probability": float(probs[j])} for j in order],
        "clips": clips,
    }


def clip_embeddings(embedder, uint8_clips: np.ndarray, *, clip=None) -> np.ndarray:
    """Decoded ``n x T x S x S x 3`` uint8 clips -> ``n x D`` float32 clip vectors (as the model gives them).

    ``clip``: a ClipSpec whose mean/std/channel order normalise the input instead of the
    bundle's (an evaluation protocol's own normalisation); its geometry must be the bundle's.
    """
    from vcl_infer.clips.preprocess import to_model_input

    spec = embedder.spec.clip if clip is None else clip
    return np.asarray(embedder.embed_clips(to_model_input(uint8_clips, spec)), dtype=np.float32)


def predict_video(embedder, probe: LinearProbe, path: str | os.PathLike, *, num_clips: int = 10,
                  mode: str = "mean_embedding", top: int = 5, timeout_s: float = 60.0) -> dict[str, Any]:
    """Classify one video file.

    Args:
        embedder: a :class:`vcl_infer.Embedder`.
        probe: a probe fitted on this encoder's embeddings.
        num_clips: uniformly spaced clips to embed (10: TCLR's linear-eval test protocol).
        mode: ``mean_embedding`` or ``mean_probability`` (module doc).

    Returns:
        :func:`predict_clips`'s dict plus ``path``.

    Raises:
        VideoError: the file cannot be read.
    """
    from vcl_infer.video.isolated import decode_clips

    decoded = decode_clips(path, embedder.spec.clip, num_clips, timeout_s=timeout_s)
    result = predict_clips(probe, clip_embeddings(embedder, decoded.clips), decoded.windows, mode=mode, top=top)
    return {"path": os.fspath(path), **result}


def evaluate_predictions(probabilities: np.ndarray, labels: Sequence | np.ndarray, classes: Sequence) -> dict[str, Any]:
    """Top-1 / top-5, per-class accuracy and confusion matrix from ``N x K`` probabilities.

    Args:
        probabilities: ``N x K``, columns in ``classes`` order.
        labels: ``N`` true labels, values of ``classes``; a label the probe never saw
            counts as wrong and is left out of the confusion matrix.
        classes: the K class labels (``probe.classes_``).

    Returns:
        ``top1``, ``top5`` (top-min(5, K)), ``per_class`` (class -> accuracy, for classes
        with test videos), ``confusion`` (``K x K`` list, rows true, columns predicted),
        ``classes``, ``num_videos``, ``unknown_labels``.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    names = [_name(c) for c in classes]
    position = {c: i for i, c in enumerate(names)}
    truth = np.array([position.get(_name(v), -1) for v in labels], dtype=np.int64)
    if probs.shape != (len(truth), len(names)):
        raise ValueError(f"probabilities of shape {probs.shape} do not match {len(truth)} labels x {len(names)} classes")
    order = np.argsort(-probs, axis=1, kind="stable")
    hits = order == truth[:, None]
    k = len(names)
    confusion = np.zeros((k, k), dtype=np.int64)
    known = truth >= 0
    np.add.at(confusion, (truth[known], order[known, 0]), 1)
    per_class = {}
    for i, name in enumerate(names):
        total = confusion[i].sum()
        if total:
            per_class[str(name)] = float(confusion[i, i] / total)
    n = max(len(truth), 1)
    return {
        "top1": float(hits[:, :1].any(axis=1).sum() / n),
        "top5": float(hits[:, :5].any(axis=1).sum() / n),
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "classes": [str(c) for c in names],
        "num_videos": int(len(truth)),
        "unknown_labels": int((~known).sum()),
    }


def linear_evaluation(train_clips: Sequence[np.ndarray], train_labels: Sequence | np.ndarray,
                      test_clips: Sequence[np.ndarray], test_labels: Sequence | np.ndarray, *, mode: str = "mean_probability", label_fraction: float | None = None,
                      seed: int = 0, **probe_params: Any) -> tuple[LinearProbe, dict[str, Any]]:
    """The linear-evaluation protocol on frozen clip vectors (``vcl-eval linear`` and ``vcl-train-eval linear``).

    The probe is fitted on one vector per train video (:func:`~vcl_infer.encode.pooling.pool_clips`
    of its clip vectors) and each test video is scored from its clip vectors with
    :func:`video_probabilities` in ``mode``. Both CLIs hand their clip vectors here, so the
    ONNX-bundle path and the torch-checkpoint path run one protocol.

    Args:
        train_clips / test_clips: per video, an ``n x D`` array of clip vectors (any scale: they
            are L2-normalised here).
        train_labels / test_labels: one label per video (names or ids).
        mode: ``mean_probability`` (the papers') or ``mean_embedding``.
        label_fraction, seed, probe_params: as :func:`fit_probe`.

    Returns:
        ``(probe, scores)``; ``scores`` as :func:`evaluate_predictions`.
    """
    X = np.stack([pool_clips(np.asarray(v)) for v in train_clips])
    probe = fit_probe(X, np.asarray(train_labels), label_fraction=label_fraction, seed=seed, **probe_params)
    probs = np.stack([video_probabilities(probe, np.asarray(v), mode) for v in test_clips])
    return probe, evaluate_predictions(probs, test_labels, probe.classes_)


def evaluate_probe(probe: LinearProbe, X: np.ndarray, y: Sequence) -> dict[str, Any]:
    """:func:`evaluate_predictions` for ``N x D`` pooled embeddings ``X`` with labels ``y``."""
    return evaluate_predictions(probe.predict_proba(X), y, probe.classes_)
