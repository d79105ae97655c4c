"""The video index: a SQLite catalog (source of truth) and FAISS indexes derived from it.

Importing this package does not import faiss; it is loaded on first use.
"""

from vcl_infer.index._faiss import choose_factory
from vcl_infer.index.errors import (
    EncoderMismatch,
    IndexCorrupt,
    IndexDiskFull,
    IndexExists,
    IndexLocked,
    IndexNotFound,
)
from vcl_infer.index.merge import MergeReport, merge_indexes
from vcl_infer.index.store import ClipRecord, VideoIndex, VideoRecord

__all__ = [
    "VideoIndex",
    "VideoRecord",
    "ClipRecord",
    "IndexCorrupt",
    "IndexDiskFull",
    "merge_indexes",
    "MergeReport",
    "IndexLocked",
    "EncoderMismatch",
    "IndexNotFound",
    "IndexExists",
    "choose_factory",
]
