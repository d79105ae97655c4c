"""``vcl-index build --engine ray``: extraction on Ray Data, one ingest writer in the driver.

::

    file list ─▶ ray.data Dataset ─▶ decode_batch (CPU tasks) ─▶ EncodeToShard (actor pool:
    one per GPU, num_gpus=1; else one per node) ─▶ shard-*.parquet ─▶ driver: ingest (single
    writer, one commit per shard, while later batches are still being extracted)

Incremental and resumable like a local build: files unchanged since the catalog recorded
them are skipped, vanished ones removed; shards left by a killed run are ingested first
(rows that still match the file on disk), so nothing already in a shard is embedded again.
With ``ingest=False`` (a cluster job that only writes shards, ingested later with
``vcl-index ingest``) the shards themselves are the record of what is done.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from vcl_infer.distributed.ingest import IngestReport, ShardIngester, open_index_for_shards, shard_keys
from vcl_infer.distributed.shards import ShardMeta, list_shards
from vcl_infer.errors import VclError
from vcl_infer.index.build import DECODE_PRIORITY, BuildReport, find_videos, write_report

DEFAULT_BATCH = 8
DECODE_TASK_MEMORY = 256 * 2**20
ENCODER_CPUS = 0.01
"""Logical CPUs an encoder actor reserves. As in a local build, the encoder is not given cores of
its own: decode tasks (one per CPU, run niced) fill every core and the encoder's threads take
what they need first; reserving a whole CPU per actor left a 2-core node one decode task."""
SHARDS_SUBDIR = "shards"


@dataclass
class RayBuildReport(BuildReport):
    """A :class:`~vcl_infer.index.build.BuildReport` plus what the distributed run did.

    Attributes:
        engine: ``ray``.
        shards_dir: where the shards are.
        from_shards: files taken from shards of an earlier (killed) run, not re-embedded.
        embedded_now: files decoded and embedded by this run.
        ingest_vectors_per_s: rate of the single ingest writer (vectors/s, commits included).
    """

    engine: str = "ray"
    shards_dir: str = ""
    ray_address: str = ""
    encoders: int = 0
    from_shards: int = 0
    embedded_now: int = 0
    bad_shards: int = 0
    ingest_seconds: float = 0.0
    ingest_vectors_per_s: float = 0.0


@contextmanager
def ray_session(address: str | None, num_cpus: int | None = None) -> Iterator[object]:
    """Connect to the cluster at ``address`` (or reuse the session already open in this
    process, or start a local instance on loopback); shut down only what we started."""
    from vcl_infer._optional import require

    if address is None and "ray" not in sys.modules:
        # a local instance: its node address is loopback, not the machine's public address
        # (Ray reads this when it is imported)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = require("ray")
    if ray.is_initialized():
        yield ray
        return
    try:
        _init(ray, address, num_cpus)
    except Exception as exc:  # noqa: BLE001 - Ray raises plain Exception / ConnectionError here
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        fix = ("check the address and that `ray status` works there" if address else
               "the machine may be overloaded: retry, or start Ray once with `ray start --head` and pass --address")
        raise VclError(f"cannot connect to {where} ({type(exc).__name__}: {exc}); {fix}") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def _init(ray, address: str | None, num_cpus: int | None, attempts: int = 3) -> None:
    """``ray.init``; a local instance is retried: its raylet must register within a fixed 30 s,
    which a heavily loaded machine can miss."""
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                     logging_level=logging.WARNING, configure_logging=True)
            return
        except Exception:
            if address is not None or attempt == attempts:
                raise
            ray.shutdown()


def _quiet_ray_data(progress: bool) -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING if progress else logging.ERROR)


def _encoder_pool(ray, encoders: int | None) -> tuple[int, float]:
    """(actors, GPUs per actor): one actor per GPU in the cluster, else one per alive node."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus > 0:
        return (encoders or gpus), 1.0
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return (encoders or max(1, nodes)), 0.0


def _stats(files: list[str]) -> dict[str, tuple[int, int]]:
    out = {}
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            continue  # vanished while walking
        out[path] = (int(st.st_size), int(st.st_mtime_ns))
    return out


def _extract(ray, todo: list[str], stats: dict, meta: ShardMeta, spec, model: str, shards_dir: Path, *,
             batch_size: int, encoders: int | None, timeout_s: float, on_shard) -> int:
    """Run the Ray pipeline over ``todo``; call ``on_shard(path)`` as each shard lands."""
    import ray.data

    from vcl_infer.distributed.stages import EncodeToShard, decode_batch

    items = [{"path_bytes": os.fsencode(p), "size": stats[p][0], "mtime_ns": stats[p][1]} for p in todo]
    actors, gpus = _encoder_pool(ray, encoders)
    # at least two decode tasks per CPU, so a small folder still keeps every core decoding
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    batch_size = max(1, min(batch_size, math.ceil(len(items) / (2 * cpus))))
    ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / batch_size)))
    # a memory reservation (the decode child's frames) also keeps Ray from fusing decoding into
    # the encoder actors: decode tasks must spread over every CPU while a few actors encode
    ds = ds.map_batches(decode_batch, batch_size=batch_size, batch_format="pyarrow", num_cpus=1,
                        memory=DECODE_TASK_MEMORY,
                        fn_kwargs={"spec": spec.clip, "clips": meta.sampling, "timeout_s": timeout_s,
                                   "nice": DECODE_PRIORITY["nice"], "batch_policy": DECODE_PRIORITY["batch"]})
    ds = ds.map_batches(EncodeToShard, batch_size=batch_size, batch_format="pyarrow",
                        compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=gpus, num_cpus=ENCODER_CPUS,
                        fn_constructor_kwargs={"model": model, "shards_dir": str(shards_dir), "meta": meta})
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for shard in batch.column("shard").to_pylist():
            on_shard(shard)
    return actors


def build_with_ray(
    videos_dir: str | os.PathLike,
    index_dir: str | os.PathLike,
    *,
    address: str | None = None,
    model: str | os.PathLike | None = None,
    clips: int | None = None,
    clip_every: float | None = None,
    min_clips: int | None = None,
    max_clips: int | None = None,
    shards_dir: str | os.PathLike | None = None,
    ingest: bool = True,
    batch_size: int = DEFAULT_BATCH,
    encoders: int | None = None,
    index_type: str | None = None,
    target_recall: float | None = None,
    timeout_s: float = 60.0,
    num_cpus: int | None = None,
    progress: bool = True,
) -> RayBuildReport:
    """Index every video under ``videos_dir`` with extraction on Ray (incremental, resumable).

    Args:
        videos_dir: folder walked recursively (every node must see it under the same path).
        index_dir: the index folder, written only by this process (the single writer).
        address: Ray cluster address (``ray://...`` or ``HOST:PORT``); None: the session
            already open in this process, else a local instance on loopback.
        model: encoder bundle (a path every node can read); the packaged default when None.
        clips / clip_every / min_clips / max_clips: how videos are cut into clips, exactly as
            in a local build (:func:`vcl_infer.index.build.build_index`); an existing index
            keeps the rule recorded in ``sampling.json``, another is refused.
        shards_dir: where shards go (default ``INDEX/shards``; shared storage on a cluster).
        ingest: put shards into the index as they land; False only writes shards.
        batch_size: files per Ray batch, and so per shard (at most; smaller when there are
            fewer than two batches per CPU).
        encoders: encoder actors (default: one per GPU, else one per node).
        index_type: FAISS factory string for a new index.
        target_recall: recall@10 vs exact search a new index's search parameters are tuned to.
        timeout_s: hard decode time limit per file.
        num_cpus: CPUs of a local instance (default: all).
        progress: progress bar on stderr.

    Returns:
        A :class:`RayBuildReport` (also ``INDEX/build_report.json`` when ingesting).
    """
    from vcl_infer._optional import require
    from vcl_infer.clips.sampling_record import requested_sampling, resolve_sampling

    require("ray")  # fail now, naming the extra, not after the resume step
    require("pyarrow")
    if batch_size < 1:
        raise VclError("--batch-size must be at least 1")
    t0 = time.monotonic()
    model_path, spec = _encoder(model)
    rule = resolve_sampling(index_dir, requested_sampling(clips, clip_every, min_clips, max_clips))
    meta = ShardMeta(spec.fingerprint, spec.to_json(), spec.embed_dim, rule)
    files = find_videos(videos_dir)
    stats = _stats(files)
    shards = Path(shards_dir) if shards_dir is not None else Path(index_dir) / SHARDS_SUBDIR
    report = _new_report(index_dir, videos_dir, model_path, spec, rule, shards, address)
    ingested = IngestReport(index=report.index)
    index = open_index_for_shards(index_dir, meta, index_type, target_recall) if ingest else None
    try:
        writer = ShardIngester(index, ingested, current=stats) if index is not None else None
        todo = _resume_and_plan(writer, shards, files, stats, report, meta)
        actors = _extract_with_progress(todo, writer, stats, meta, spec, model_path, shards, address=address,
                                        num_cpus=num_cpus, batch_size=batch_size, encoders=encoders,
                                        timeout_s=timeout_s, progress=progress)
        if actors is not None:
            report.encoders = actors
        report.embedded_now = len(todo)
    finally:
        if index is not None:
            index.close()
    _take_ingest_counts(report, ingested)
    report.seconds = time.monotonic() - t0
    report.completed = True
    if index is not None:
        write_report(index_dir, report)
    return report


def _new_report(index_dir, videos_dir, model_path: Path, spec, rule, shards: Path, address: str | None) -> RayBuildReport:
    """The report of a build about to start: where, with what, cut how."""
    return RayBuildReport(index=os.path.abspath(index_dir), videos_dir=os.path.abspath(videos_dir),
                          model=str(model_path), fingerprint=spec.fingerprint, clips_per_video=rule.count,
                          sampling=rule.to_dict(), shards_dir=str(shards.resolve()), ray_address=address or "")


def _extract_with_progress(todo, writer, stats, meta, spec, model_path: Path, shards: Path, *, address, num_cpus,
                           batch_size: int, encoders: int | None, timeout_s: float, progress: bool) -> int | None:
    """Extract ``todo`` on Ray with a progress bar, ingesting each shard as it lands (``writer``,
    when ingesting), then flush; the encoder actors used, None when there was nothing to do."""
    from tqdm import tqdm

    actors = None
    with tqdm(total=len(todo), unit="video", desc="indexing (ray)", disable=not progress, dynamic_ncols=True) as bar:

        def on_shard(shard: str) -> None:
            if writer is not None:
                writer.ingest(shard)
            bar.update(_rows_in(shard))

        if todo:
            with ray_session(address, num_cpus) as ray:
                _quiet_ray_data(progress)
                actors = _extract(ray, todo, stats, meta, spec, str(model_path), shards, batch_size=batch_size,
                                  encoders=encoders, timeout_s=timeout_s, on_shard=on_shard)
        if writer is not None:
            writer.flush()
    return actors


def _encoder(model: str | os.PathLike | None):
    """The bundle's resolved path (every node loads it from there) and its spec."""
    from vcl_infer.encode.bundle import load_bundle_spec
    from vcl_infer.encode.embedder import default_bundle

    model_path = Path(model if model is not None else default_bundle()).resolve()
    return model_path, load_bundle_spec(model_path)


def _take_ingest_counts(report: RayBuildReport, ingested: IngestReport) -> None:
    """Copy what the single writer added, updated and refused into the build's report."""
    report.added, report.updated, report.failed = ingested.added, ingested.updated, ingested.failed
    report.clips, report.bad_shards = ingested.clips, len(ingested.bad_shards)
    report.ingest_seconds = round(ingested.seconds, 3)
    report.ingest_vectors_per_s = round(ingested.vectors / ingested.seconds, 1) if ingested.seconds > 0 else 0.0


def _resume_and_plan(writer: ShardIngester | None, shards: Path, files: list[str], stats: dict,
                     report: RayBuildReport, meta: ShardMeta) -> list[str]:
    """Ingest what an earlier (killed) run left in ``shards``, drop vanished files, and return
    the files still to embed (new, or changed since the catalog, or the shards, recorded them)."""
    if writer is None:  # shards only: they are the record of what is done
        known = shard_keys(shards, meta)
    else:
        index = writer.index
        for shard in list_shards(shards) if shards.is_dir() else []:
            writer.ingest(shard)
        writer.flush()
        done = writer.report
        report.from_shards = done.added + done.updated + len(done.failed)
        known = {p: (int(s), int(m)) for p, (s, m, _) in index.known_files().items()}
        root = (report.videos_dir or "").rstrip(os.sep) + os.sep
        vanished = [p for p in known if p.startswith(root) and p not in stats]
        if vanished:
            report.removed = int(index.remove(vanished))
            index.commit()
            writer.known = index.known_files()
    todo = [p for p in files if p in stats and known.get(p) != stats[p]]
    report.skipped = len(stats) - len(todo) - report.from_shards
    return todo


def _rows_in(shard: str) -> int:
    import pyarrow.parquet as pq

    return int(pq.read_metadata(shard).num_rows)
