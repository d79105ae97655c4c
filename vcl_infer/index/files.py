"""The derived FAISS files: an immutable base plus delta segments per level, read and checked against
the catalog, written atomically, merged and compacted (see :mod:`.segments` for the layout)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import numpy as np

from vcl_infer.index import faiss_ops as F
from vcl_infer.index import tuning as T
from vcl_infer.index.catalog import FILES, LEVELS, faiss_file_fix
from vcl_infer.index.connection import Catalog
from vcl_infer.index.errors import IndexCorrupt
from vcl_infer.index.faults import wal_lost_note
from vcl_infer.index.level_view import LevelView
from vcl_infer.index.segments import (
    Layout,
    OpenSegment,
    Segment,
    SegmentDamaged,
    SegmentProblem,
    generation_of,
    meta_key,
    owned_by,
    segment_name,
    write_segment,
)
from vcl_infer.index.template import Template

Problem = tuple[str, str]  # ("stale" | "corrupt", message)
MERGE_FANIN = 4  # this many deltas of one tier are merged into one of the next tier
COMPACT_RATIO = 0.5  # the deltas are merged into a new base when they hold this fraction of the base
COMPACT_MIN = 4096  # ... or this many vectors, whichever is more (tiny indexes keep a few deltas)
CLOSE_COMPACT_BYTES = 64 << 20  # a writer closing merges its deltas into a base up to this size


@dataclass
class Built:
    """A level built whole from the catalog: what a compaction publishes as the new base."""

    index: Any
    factory: str
    params: dict  # as tuning.tune returns them
    template: Template | None  # the trained empty index (IVF), None otherwise
    max_id: int


@dataclass
class Delta:
    """The vectors one commit adds to a level (those it also removed left out)."""

    ids: np.ndarray
    vectors: np.ndarray


Change = Built | Delta


class FaissFiles:
    """The FAISS segments of one index and their loaded views (the catalog is the source of truth;
    every file is rebuilt from it)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.path = catalog.path
        self.loaded: dict[str, LevelView] = {}  # level -> what is searched
        self._gpu: dict[str, Any] = {}  # level -> its GPU copy, or None where there is none
        self._layouts: dict[str, Layout | None] = {}  # level -> as loaded (None: old one-file layout)
        self._templates: dict[str, Template] = {}  # level -> the trained empty IVF (deltas are made from it)
        self._template_segs: dict[str, Segment] = {}  # level -> the template file it was read from
        self._open: dict[str, OpenSegment] = {}  # file name -> open segment, reused across commits

    def clear(self) -> None:
        """Forget the loaded indexes (on close)."""
        for view in self.loaded.values():
            view.close()
        self.loaded.clear()
        self._gpu.clear()
        self._layouts.clear()
        self._templates.clear()
        self._template_segs.clear()
        self._open.clear()

    def gpu_copy(self, level: str) -> Any:
        """The GPU copy of ``level``'s index (made on first use) when it is one plain index, else None."""
        if level not in self._gpu:
            single = self.loaded[level].single()
            self._gpu[level] = None if single is None else F.to_gpu(single)
        return self._gpu[level]

    def cleanup_temp(self) -> None:
        for p in self.path.glob(".*.faiss.tmp-*"):
            try:
                p.unlink()
            except OSError:
                pass

    def layout(self, level: str) -> Layout | None:
        """``level``'s segments as loaded (None for an old one-file index, until it is rebuilt)."""
        return self._layouts.get(level)

    # ------------------------------------------------------------------ reading
    def read_checked(self, level: str, meta: dict[str, str], db: sqlite3.Connection | None = None,
                     eager: bool = False, count_rows: bool | None = None) -> tuple[LevelView | None, Problem | None]:
        """Open ``level``'s segments and check them against ``meta``; returns (view, problem or None).

        ``eager`` checks every file's CRC-32 now (verify); otherwise large files are memory-mapped
        and checked before their first answer. ``count_rows`` (default: for verify and writers)
        also counts the catalog's rows against the recorded count: a scan of the clips index, left
        out of a reader's open, whose catalog snapshot and recorded count are of one generation.
        """
        if count_rows is None:
            count_rows = eager or self.catalog.writable
        gen = int(meta["generation"])
        fgen = int(meta[f"{level}.generation"])
        fpath = self.path / FILES[level]
        if fgen < gen:
            return None, ("stale", f"{fpath}: the file is older than the catalog (generation {fgen} < {gen}; "
                                   "a write was interrupted)")
        newer = self._newer_on_disk(level, gen) if self.catalog.wal_lost else None
        if newer is not None:
            return None, ("corrupt", f"{fpath}: segment {newer} was written by a later commit than the catalog "
                                     f"holds (generation {gen})")
        try:
            if meta_key(level) in meta:
                layout = Layout.from_json(meta[meta_key(level)])
                view = self._open_layout(level, layout, meta, db, eager)
            else:
                layout, view = None, self._open_one_file(level, meta)
        except SegmentProblem as exc:
            return None, ("corrupt", str(exc))
        expect = int(meta[f"{level}.count"])
        actual = self.catalog.count(level, db) if count_rows else expect
        dims = {s.index.d for s in view.segments} or {self.catalog.dim}
        if view.ntotal != expect or expect != actual or dims != {self.catalog.dim}:
            return None, ("corrupt", f"{fpath}: holds {view.ntotal} vectors of dim {sorted(dims)}, the catalog "
                                     f"records {expect} and has {actual} rows of dim {self.catalog.dim}")
        params = T.recorded_params(meta, level)
        view.set_params(int(params["nprobe"]), int(params["efsearch"]))
        self._layouts[level] = layout
        return view, None

    def _newer_on_disk(self, level: str, gen: int) -> str | None:
        """A segment file of ``level`` from a generation after ``gen`` (evidence of lost commits), or None."""
        for p in self.path.glob("*.faiss"):
            g = generation_of(level, p.name)
            if g is not None and g > gen:
                return p.name
        return None

    def _segment(self, seg, eager: bool, ivf: bool) -> OpenSegment:
        cached = self._open.get(seg.file)
        if cached is not None and cached.seg == seg and not eager:
            return cached
        opened = OpenSegment(self.path, seg, eager=eager, ivf=ivf)
        if not eager:
            self._open[seg.file] = opened
        return opened

    def _open_layout(self, level: str, layout: Layout, meta: dict[str, str], db, eager: bool) -> LevelView:
        ivf = bool(F.nlist_of(meta[f"{level}.factory"]))
        segs = [self._segment(s, eager, ivf) for s in (layout.base, *layout.deltas) if s is not None]
        shell = None
        # the template: what a writer fills deltas from, and readers stack deltas under (verify checks it)
        if layout.template is not None and (eager or self.catalog.writable or layout.deltas):
            base = segs[0].index if layout.base is not None else None
            template = self._template(level, layout.template, base, eager)
            shell = template.empty() if layout.deltas else None
        tombs = np.array([r[0] for r in (db or self.catalog.db).execute(
            "SELECT id FROM tombstones WHERE level = ? ORDER BY id", (level,))], dtype=np.int64)
        return LevelView(meta[f"{level}.factory"], segs, shell, tombs)

    def _template(self, level: str, seg: Segment, base: Any | None, eager: bool) -> Template:
        """``level``'s template, read and checked once (the same record again: reused)."""
        if not eager and self._template_segs.get(level) == seg and level in self._templates:
            return self._templates[level]
        opened = OpenSegment(self.path, seg, eager=True)
        try:
            template = Template.opened(opened.index, base)
        except ValueError as exc:
            raise SegmentProblem(f"{opened.path}: {exc}") from None
        if not eager:
            self._templates[level], self._template_segs[level] = template, seg
        return template

    def _open_one_file(self, level: str, meta: dict[str, str]) -> LevelView:
        """An index written before segments: one whole file checked by its sha256, read as a base."""
        fpath = self.path / FILES[level]
        try:
            data = fpath.read_bytes()
        except FileNotFoundError:
            raise SegmentProblem(f"{fpath}: the file is missing") from None
        digest = F.sha256(data)
        if digest != meta.get(f"{level}.sha256"):
            raise SegmentProblem(f"{fpath}: checksum mismatch (sha256 {digest[:12]}..., catalog recorded "
                                 f"{meta.get(f'{level}.sha256', '')[:12]}...)")
        try:
            index = F.deserialize(data)
        except Exception as exc:
            raise SegmentProblem(f"{fpath}: FAISS cannot read the file ({exc})") from exc
        return LevelView(meta[f"{level}.factory"], [OpenSegment.of(fpath, index)], None, np.zeros(0, np.int64))

    def explained(self, problem: str, fix: str) -> str:
        """A FAISS-file problem and its fix; after a lost write-ahead log, that cause first."""
        if self.catalog.wal_lost:
            return f"{wal_lost_note(self.path)}. Now {problem}. Otherwise {fix}; re-running the build re-adds the lost videos"
        return f"{problem}; {fix}"

    def damaged(self, exc: SegmentDamaged, level: str) -> IndexCorrupt:
        """The error a search raises when a mapped segment fails its deferred check."""
        return IndexCorrupt(self.explained(str(exc), faiss_file_fix(FILES[level], self.path)))

    def load_writable(self) -> None:
        """Load both levels for a writer, rebuilding one left stale by a crash or still in the old
        one-file layout; ``IndexCorrupt`` for a damaged one."""
        meta = self.catalog.read_meta()
        redo = []
        for level in LEVELS:
            index, problem = self.read_checked(level, meta)
            if index is not None:
                self.loaded[level] = index
                if self._layouts[level] is None:
                    redo.append(level)  # migrate: the next files are segments
                continue
            assert problem is not None
            if problem[0] == "stale":
                redo.append(level)
            else:
                raise IndexCorrupt(self.explained(problem[1], faiss_file_fix(FILES[level], self.path)))
        if redo:
            self.rebuild(tuple(redo))
        self.remove_unreferenced()

    def load_for_reader(self) -> list[tuple[str, Problem]]:
        """Load both levels as of the catalog's snapshot; the problems found (none loaded if any)."""
        problems = []
        for level in LEVELS:
            index, problem = self.read_checked(level, self.catalog.meta)
            if index is not None:
                self.loaded[level] = index
            else:
                assert problem is not None
                problems.append((level, problem))
        if problems:
            self.loaded.clear()
        return problems

    def reader_fix(self, level: str, kind: str) -> str:
        """What a reader should do about a ``kind`` problem of ``level``'s file."""
        if kind == "stale":
            return (
                f"open the index for writing to finish it (e.g. `vcl-index repair {self.path}` "
                "or re-run the build), which rebuilds it from the catalog"
            )
        return faiss_file_fix(FILES[level], self.path)

    # ------------------------------------------------------------------ writing
    def record_tombstones(self, level: str, ids: list[int]) -> None:
        """In the open catalog transaction: tombstones for removed ids that a segment holds."""
        layout = self._layouts.get(level)
        if layout is None or not ids:
            return  # the old layout is rebuilt whole at the next commit anyway
        held = [(level, int(i)) for i in ids if int(i) <= layout.max_id]
        self.catalog.db.executemany("INSERT OR IGNORE INTO tombstones(level, id) VALUES (?, ?)", held)

    def live_after(self, level: str, adds: int, removes: list[int]) -> int:
        """How many vectors ``level`` holds once a batch of ``adds`` new vectors and ``removes`` is applied."""
        layout = self._layouts.get(level)
        view = self.loaded.get(level)
        if layout is None or view is None:
            return self.catalog.count(level)
        return view.ntotal + adds - sum(1 for i in set(removes) if i <= layout.max_id)

    def needs_compaction(self, level: str, adds: int) -> bool:
        layout = self._layouts.get(level)
        if layout is None:
            return True
        base = layout.base.count if layout.base is not None else 0
        return layout.delta_count() + adds > max(COMPACT_RATIO * base, COMPACT_MIN)

    def cheap_to_compact(self) -> bool:
        """Whether some level has deltas or tombstones and every base is small (:data:`CLOSE_COMPACT_BYTES`)."""
        layouts = [self._layouts.get(lv) for lv in LEVELS]
        if any(lay is None for lay in layouts):
            return False
        pending = any(lay.deltas for lay in layouts if lay) or any(
            v.tombstones.size for v in self.loaded.values())
        return pending and all(lay.base is None or lay.base.size <= CLOSE_COMPACT_BYTES for lay in layouts if lay)

    def publish(self, changes: dict[str, Change]) -> None:
        """Steps 2 and 3 of a commit for the levels in ``changes``: write the new segment files, then
        record them (and drop the tombstones they make obsolete) in one catalog transaction."""
        db = self.catalog.db
        gen = int(db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
        rows = [("rows.videos", str(db.execute("SELECT COUNT(*) FROM videos").fetchone()[0]))]
        cleared: list[tuple[str, int, int]] = []  # (level, lo, hi): tombstones no segment needs any more
        layouts: dict[str, Layout] = {}
        for level, change in changes.items():
            if isinstance(change, Built):
                layout = self._write_base(level, change, gen)
                cleared.append((level, -1, 1 << 62))
                rows += [(f"{level}.factory", change.factory), (f"{level}.nprobe", str(int(change.params["nprobe"]))),
                         (f"{level}.efsearch", str(int(change.params["efsearch"]))),
                         (f"{level}.recall", f"{float(change.params['recall']):.4f}"),
                         (f"{level}.rerank", str(int(change.params.get("rerank", 0))))]
            else:
                layout, merged = self._write_delta(level, change, gen)
                cleared += [(level, lo, hi) for lo, hi in merged]
            layouts[level] = layout
            rows += [(f"{level}.generation", str(gen)), (meta_key(level), layout.to_json()), (f"{level}.sha256", "")]
        with self.catalog.tx() as tx:
            tx.executemany("DELETE FROM tombstones WHERE level = ? AND id > ? AND id <= ?", cleared)
            for level, layout in layouts.items():
                n_tomb = tx.execute("SELECT COUNT(*) FROM tombstones WHERE level = ?", (level,)).fetchone()[0]
                live = sum(s.count for s in (layout.base, *layout.deltas) if s is not None) - n_tomb
                rows.append((f"{level}.count", str(live)))
            tx.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", rows)
        self.catalog.reload_meta()
        self._layouts.update(layouts)
        self.remove_unreferenced()
        for level in changes:
            self._gpu.pop(level, None)
            view, problem = self.read_checked(level, self.catalog.meta, count_rows=False)  # counted just now
            if view is None:
                assert problem is not None
                raise IndexCorrupt(self.explained(problem[1], faiss_file_fix(FILES[level], self.path)))
            self.loaded[level] = view

    def _write_base(self, level: str, built: Built, gen: int) -> Layout:
        template = None
        if built.template is not None:
            template = write_segment(self.path, level, segment_name(level, "t", gen), built.template.stored())
            # its own copy of the centroids: not the old base's, whose file a compaction deletes
            self._templates[level] = Template.of(built.template.trained())
            self._template_segs[level] = template
        else:
            self._templates.pop(level, None)
            self._template_segs.pop(level, None)
        base = write_segment(self.path, level, segment_name(level, "base", gen), built.index, hi=built.max_id,
                             per_list=True)
        self._open.pop(base.file, None)
        old = self._layouts.get(level)
        return Layout(base, template, [], max(built.max_id, old.max_id if old else 0))

    def _filled(self, level: str, ids: np.ndarray, vectors: np.ndarray) -> Any:
        """A delta segment of ``level`` holding ``vectors``: the template's structure (written without
        centroids), or exact Flat for other structures."""
        template = self._templates.get(level)
        if template is None:
            faiss = F.faiss_module()
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.catalog.dim))
        else:
            index = template.empty()
        if len(ids):
            index.add_with_ids(vectors, ids)
        if template is not None:
            F.drop_quantizer(index)
        return index

    def _write_delta(self, level: str, delta: Delta, gen: int) -> tuple[Layout, list[tuple[int, int]]]:
        """The layout with one new delta segment, after merging full tiers; the merged id ranges."""
        old = self._layouts[level]
        assert old is not None
        layout = Layout(old.base, old.template, list(old.deltas), old.max_id)
        merged: list[tuple[int, int]] = []
        if len(delta.ids) == 0:
            return layout, merged
        index = self._filled(level, delta.ids, delta.vectors)
        hi = max(int(delta.ids.max()), layout.max_id)
        layout.deltas.append(write_segment(self.path, level, segment_name(level, "d", gen), index,
                                           lo=layout.max_id, hi=hi))
        layout.max_id = hi
        while len(layout.deltas) >= MERGE_FANIN and len({s.tier for s in layout.deltas[-MERGE_FANIN:]}) == 1:
            group = layout.deltas[-MERGE_FANIN:]
            lo, hi, tier = group[0].lo, group[-1].hi, group[0].tier + 1
            ids, vecs = self.catalog.vectors(level, "WHERE id > ? AND id <= ?", (lo, hi))
            index = self._filled(level, ids, vecs)
            layout.deltas[-MERGE_FANIN:] = [write_segment(self.path, level, segment_name(level, "m", gen, tier),
                                                          index, lo=lo, hi=hi, tier=tier)]
            merged.append((lo, hi))
        return layout, merged

    def remove_unreferenced(self) -> None:
        """Delete segment files no layout refers to (replaced by a merge or compaction, or left by a crash)."""
        known = [lv for lv in LEVELS if self._layouts.get(lv) is not None]  # never guess another level's
        keep = {FILES[lv] for lv in LEVELS}
        for level in known:
            keep |= {s.file for s in self._layouts[level].files()}  # type: ignore[union-attr]
        for p in self.path.glob("*.faiss"):
            if p.name not in keep and any(owned_by(lv, p.name) for lv in known):
                self._open.pop(p.name, None)
                try:
                    p.unlink()
                except OSError:
                    pass

    def build_level(self, level: str, retrain: bool = True) -> Built:
        """Build ``level`` whole from the catalog. ``retrain``: factory by size and memory, trained on
        a bounded sample, search parameters tuned to the target recall (:mod:`.tuning`); otherwise
        the current template (trained centroids) is filled and the recorded parameters kept."""
        cat = self.catalog
        ids, vecs = cat.vectors(level)
        max_id = int(ids.max()) if len(ids) else 0
        factory = cat.meta.get(f"{level}.factory", "Flat")
        if not retrain and (level in self._templates or not F.nlist_of(factory)):
            index = self._templates[level].trained() if level in self._templates else F.build(factory, cat.dim, ids[:0], vecs[:0])
            F.add_all(index, ids, vecs)
            params = T.recorded_params(cat.meta, level)
            F.set_search_params(index, factory, int(params["nprobe"]), int(params["efsearch"]))
            return Built(index, factory, params, self._templates.get(level), max_id)
        factory = F.effective_factory(cat.index_type, len(ids), cat.dim)
        empty = F.train_empty(factory, cat.dim, vecs)
        template = Template.of(empty) if F.nlist_of(factory) else None
        index = F.add_all(empty, ids, vecs)
        F.set_search_params(index, factory, F.default_nprobe(factory))
        return Built(index, factory, T.tune(index, factory, ids, vecs, cat.target_recall), template, max_id)

    def rebuild(self, levels: tuple[str, ...]) -> None:
        """Rebuild ``levels`` from the catalog and publish them."""
        # bump the generation first so a crash while writing leaves the files marked stale
        with self.catalog.tx() as tx:
            tx.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
        self.publish({level: self.build_level(level) for level in levels})
