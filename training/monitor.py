"""An online kNN monitor: is the run learning, while it runs?

Every ``eval_every`` steps the loop calls :meth:`KnnMonitor.evaluate` with the backbone: it
extracts frozen features (eval mode, no gradients, one centre clip per video) of a labelled
split's train videos (the memory) and test videos (the queries), and scores each query by a
cosine-similarity-weighted vote of its ``k`` nearest memory videos (the weighted kNN of Wu et
al. 2018, "Unsupervised feature learning via non-parametric instance discrimination", as
solo-learn and PySlowFast monitor their runs). The backbone's mode and weights are restored
exactly: BatchNorm statistics do not move in eval mode.

The score goes to ``metrics.csv`` (``knn_top1``) and the progress bar, so a run stuck at
chance shows it at its first evaluation instead of after the linear probe an hour later.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from vcl_infer.clips.spec import ClipSpec

log = logging.getLogger(__name__)


def knn_top1(memory: np.ndarray, memory_labels: np.ndarray, queries: np.ndarray, query_labels: np.ndarray,
             *, k: int = 10, temperature: float = 0.1) -> float:
    """Top-1 of a similarity-weighted kNN vote on L2-normalised features.

    Args:
        memory: ``M x D`` features with ``memory_labels`` (``M`` ints).
        queries: ``Q x D`` features with ``query_labels``.
        k: neighbours (capped at ``M``).
        temperature: votes weigh ``exp(cos / temperature)``.

    Returns:
        Fraction of queries whose weighted vote names their label.
    """
    m = memory / (np.linalg.norm(memory, axis=1, keepdims=True) + 1e-12)
    q = queries / (np.linalg.norm(queries, axis=1, keepdims=True) + 1e-12)
    sim = q @ m.T
    k = max(1, min(k, m.shape[0]))
    nearest = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    weights = np.exp(np.take_along_axis(sim, nearest, axis=1) / temperature)
    classes = int(max(memory_labels.max(), query_labels.max())) + 1
    votes = np.zeros((q.shape[0], classes))
    np.add.at(votes, (np.repeat(np.arange(q.shape[0]), k), memory_labels[nearest].reshape(-1)), weights.reshape(-1))
    return float(np.mean(votes.argmax(1) == query_labels))


@dataclass
class KnnMonitor:
    """kNN top-1 of a frozen backbone on a labelled split (see the module docstring).

    Attributes:
        data: UCF101/HMDB51 split layout or class folders (``training.data.load_layout``).
        spec: the clip spec the run trains with (evaluation resizes and centre-crops).
        split: split number of the layout.
        k: neighbours of the vote.
        batch_size: clips per forward pass.
    """

    data: str
    spec: ClipSpec
    split: int = 1
    k: int = 10
    batch_size: int = 16
    _items: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        from training.data.layouts import load_layout

        memory, classes = load_layout(self.data, split=self.split, subset="train")
        queries, _ = load_layout(self.data, split=self.split, subset="test")
        if not memory or not queries or not classes:
            raise ValueError(f"--eval-data {self.data}: needs a labelled layout with train and test videos "
                             f"(found {len(memory)} train, {len(queries)} test, {len(classes)} classes)")
        self._items = {"memory": memory, "queries": queries}

    def evaluate(self, backbone: nn.Module, device: torch.device | str = "cpu") -> float:
        """kNN top-1 of ``backbone`` now; leaves its mode (train/eval) as it was."""
        from training.linear_eval import extract_features

        was_training = backbone.training
        try:
            mem, mem_y, _ = extract_features(backbone, self._items["memory"], self.spec, num_clips=1,
                                             batch_size=self.batch_size, device=device)
            qry, qry_y, _ = extract_features(backbone, self._items["queries"], self.spec, num_clips=1,
                                             batch_size=self.batch_size, device=device)
        finally:
            backbone.train(was_training)
        return knn_top1(mem[:, 0], mem_y, qry[:, 0], qry_y, k=self.k)
