"""Typed errors of the video index (all :class:`vcl_infer.errors.VclError`)."""

from __future__ import annotations

from vcl_infer.errors import VclError


class IndexError_(VclError):
    """Base class of the index's own errors."""


class IndexCorrupt(IndexError_):
    """A FAISS file or the catalog does not match what the catalog recorded; the message names the fix."""


class IndexLocked(IndexError_):
    """Another process holds the index for writing (one writer at a time)."""


class EncoderMismatch(IndexError_):
    """The index was built with a different encoder (fingerprint or dim) than the one given."""


class IndexNotFound(IndexError_, FileNotFoundError):
    """The folder holds no index (no ``catalog.sqlite``)."""


class IndexExists(IndexError_, FileExistsError):
    """``create`` was asked to write into a folder that is not empty."""


class IndexDiskFull(IndexError_, OSError):
    """The disk (or the catalog's size limit) ran out while writing; the last commit is intact."""
