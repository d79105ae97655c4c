"""Extraction past one machine: Ray Data decode tasks and encoder actors writing Parquet
vector shards, and the single ingest writer that puts shards into an index.

Importing this package loads neither Ray nor pyarrow (``pip install 'vcl[distributed]'``
for those); they are imported when a build or an ingest runs.

- :func:`build_with_ray`: ``vcl-index build VIDEOS --engine ray [--address ADDR]``.
- :func:`ingest_shards`: ``vcl-index ingest SHARDS --index IDX``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "build_with_ray": "vcl_infer.distributed.pipeline",
    "RayBuildReport": "vcl_infer.distributed.pipeline",
    "ingest_shards": "vcl_infer.distributed.ingest",
    "IngestReport": "vcl_infer.distributed.ingest",
    "read_rows": "vcl_infer.distributed.shards",
    "write_shard": "vcl_infer.distributed.shards",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vcl_infer.distributed' has no attribute {name!r}")
    return getattr(import_module(module), name)
