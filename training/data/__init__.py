"""Training data: data set layouts, the clip data set, and a synthetic action data set.

``training.data.layouts`` needs neither torch nor a decoder; the torch-side names
(:class:`ClipDataset`, :func:`collate_skip_none`, :func:`to_float_clips`,
:func:`normalize_clips`) load on first use, so ``vcl-synth`` starts without torch.
"""

from __future__ import annotations

from typing import Any

from training.data.layouts import (
    VideoItem,
    class_folders,
    group_leakage,
    hmdb51_split,
    load_layout,
    scan_videos,
    ucf101_split,
)

_DATASET_NAMES = ("ClipDataset", "collate_skip_none", "normalize_clips", "to_float_clips")

__all__ = [
    "VideoItem",
    "class_folders",
    "group_leakage",
    "hmdb51_split",
    "load_layout",
    "scan_videos",
    "ucf101_split",
    *_DATASET_NAMES,
]


def __getattr__(name: str) -> Any:
    if name in _DATASET_NAMES:
        from training.data import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
