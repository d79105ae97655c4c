"""The trained, empty IVF index that a level's segments share, stored without its centroids.

An IVF level's base file holds the trained quantizer (its centroids: ``nlist x dim`` float32,
8 MiB at 4096 lists of 512-d). The template file and every delta segment are written without
them (an empty quantizer in their place, :func:`~.faiss_ops.drop_quantizer`), so a commit
writes, and an open reads, only the vectors of the batch, whatever the size of the index; the
centroids are borrowed from the base that is open anyway (:func:`~.faiss_ops.share_quantizer`)
to fill a delta or to search the segments as one IVF index. Template files written before
carry their own centroids; they are read as well.
"""

from __future__ import annotations

from typing import Any

from vcl_infer.index import faiss_ops as F


class Template:
    """A level's trained empty IVF index: its bytes without centroids, and an index holding them."""

    def __init__(self, light: bytes, centroids: Any) -> None:
        self.light = light  # serialized, with an empty quantizer
        self.centroids = centroids  # an IVF index with the trained quantizer (a base, or a trained copy)

    @classmethod
    def of(cls, trained: Any) -> Template:
        """The template of a freshly trained empty index (copied: the caller goes on to fill it)."""
        blob = F.serialize(trained)
        own, light = F.deserialize(blob), F.deserialize(blob)
        F.drop_quantizer(light)
        return cls(F.serialize(light), own)

    @classmethod
    def opened(cls, template: Any, base: Any | None) -> Template:
        """From a template file as read and the level's open base, whose centroids it takes unless
        it carries its own (written before they were left out). ``ValueError`` when neither has any."""
        if F.has_centroids(template):
            return cls.of(template)
        if base is None or not F.has_centroids(base):
            raise ValueError("the template has no centroids and there is no base to take them from")
        return cls(F.serialize(template), base)

    def empty(self) -> Any:
        """A fresh empty index borrowing the centroids: to fill a delta, or to stack segments under."""
        index = F.deserialize(self.light)
        F.share_quantizer(index, self.centroids)
        return index

    def trained(self) -> Any:
        """An independent trained empty index with its own centroids (what a new base is filled from)."""
        return F.deserialize(F.serialize(self.empty()))

    def stored(self) -> Any:
        """The template as it is written to its file: without centroids."""
        return F.deserialize(self.light)
