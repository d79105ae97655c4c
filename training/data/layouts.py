"""Data set layouts: re-exported from :mod:`vcl_infer.probe.labels`, where the pure-Python parsing lives
(so the runtime reads labels without importing ``training``)."""

from vcl_infer.probe.labels import (  # noqa: F401
    SUBSETS,
    VIDEO_SUFFIXES,
    VideoItem,
    class_folders,
    group_leakage,
    hmdb51_split,
    load_labels,
    load_layout,
    read_csv_labels,
    scan_videos,
    ucf101_split,
    ucf_group,
)

__all__ = [
    "SUBSETS",
    "VIDEO_SUFFIXES",
    "VideoItem",
    "class_folders",
    "group_leakage",
    "hmdb51_split",
    "load_labels",
    "load_layout",
    "read_csv_labels",
    "scan_videos",
    "ucf101_split",
    "ucf_group",
]
