"""The papers' evaluation protocols on frozen embeddings, and how results are written.

Retrieval (TCLR, FAME; official-methods.md sections 1, 2 and 11.6): every test-split video
queries the train split (the gallery); a query scores a hit at k when any of its k nearest
gallery videos (cosine similarity) shares its class; R@1/5/10/20/50. What differs between
the papers is which feature a clip gives, how a video's clips become one vector and how
frames are normalised, selectable by name (:func:`retrieval_protocol`):

- ``tclr``: 9 clips, mean of the clip features, then L2 (``nn_retrieval/complete_retrieval.py``).
  TCLR's feature is the time-resolved map: layer4 of ``r3d_18_tclr`` pooled over space only,
  ``512 x 4`` flattened to 2048-d, not normalised before the mean. A bundle exported with
  ``vcl-export --features temporal`` outputs exactly that (``spec.feature_layer ==
  "temporal"``), and the protocol then is TCLR's computation. With a pooled bundle the
  mean is over its (L2-normalised) 512-d embeddings: the same protocol on another layer,
  flagged in the results (:func:`feature_layer_report`).
- ``fame``: 10 uniformly spaced clips, each L2-normalised (FAME sets ``fc = Normalize``),
  mean over clips, then per-set mean-centering (the query set's mean subtracted from the
  queries, the gallery set's mean from the gallery), then L2 (``main_retrieve.py``). FAME
  pretrains with Kinetics mean/std but its retrieval normalises frames with ImageNet
  mean/std: the protocol applies those (:func:`protocol_clip_spec`), whatever the bundle's,
  and, as FAME's ``CenterCropVideo(112)``, crops the centre of the frame at its native scale
  (``resize_mode="none"``: on 320 x 240 UCF101 the network sees the frame unscaled).
- ``vcl``: our default (the index's video vectors): 8 clips, mean of the L2-normalised clip
  vectors, then L2, with the bundle's preprocessing.

Clip placement is vcl's uniform sampling in every protocol (TCLR starts its 9 clips at
``linspace(0, F - 10, 9)`` with ``F`` = frames - 32; FAME uses torchvision's
``UniformClipSampler``). Spatially the ``tclr`` and ``vcl`` protocols keep the bundle's resize
and crop; ``fame`` crops without resizing, as its official code.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from vcl_infer.encode.pooling import l2_normalize
from vcl_infer.probe.retrieval_metrics import recall_at_k

RETRIEVAL_KS = (1, 5, 10, 20, 50)


@dataclass(frozen=True)
class RetrievalProtocol:
    """How clip vectors become video vectors for retrieval.

    Attributes:
        name: registry name.
        num_clips: uniformly spaced clips per video.
        normalize_clips: L2-normalise each clip vector before averaging.
        center: subtract each set's mean (queries, gallery separately) before the final L2.
        source: where the setting comes from.
        feature_layer: the paper's clip feature (``pooled`` or ``temporal``, as
            ``EncoderSpec.feature_layer``).
        mean / std: frame normalisation of the paper's evaluation (RGB order), or None to
            keep the bundle's.
        resize_mode: the paper's resize before the centre crop (``ClipSpec.resize_mode``;
            ``none``: native scale), or None to keep the bundle's.
    """

    name: str
    num_clips: int
    normalize_clips: bool
    center: bool
    source: str
    feature_layer: str = "pooled"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    resize_mode: str | None = None


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PROTOCOLS = {
    "tclr": RetrievalProtocol("tclr", 9, False, False,
                              "TCLR nn_retrieval/complete_retrieval.py: 9 clips of the 512 x T layer4 map "
                              "(spatially pooled, flattened), mean of features, L2, cosine",
                              feature_layer="temporal"),
    "fame": RetrievalProtocol("fame", 10, True, True,
                              "FAME main_retrieve.py: 10 clips, centre crop at native scale (no resize), "
                              "ImageNet mean/std, per-clip L2, mean, per-set mean-centering, L2",
                              mean=IMAGENET_MEAN, std=IMAGENET_STD, resize_mode="none"),
    "vcl": RetrievalProtocol("vcl", 8, True, False,
                             "vcl default: 8 clips, mean of L2-normalised clip vectors, L2"),
}


def retrieval_protocol(name: str) -> RetrievalProtocol:
    """The settings of a named protocol (``tclr``, ``fame``, ``vcl``)."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown retrieval protocol {name!r}; choose one of {sorted(PROTOCOLS)}") from None


def protocol_clip_spec(protocol: RetrievalProtocol, clip, *, keep_bundle_normalization: bool = False):
    """The bundle's :class:`~vcl_infer.clips.spec.ClipSpec` with the protocol's frame mean/std and
    resize rule, where it names them.

    Frames per clip, step and crop size stay the bundle's: the model needs them. Mean and
    std are given in RGB order and reordered for a BGR model; ``keep_bundle_normalization``
    keeps the bundle's mean and std (not its resize).
    """
    import dataclasses

    if protocol.resize_mode is not None:
        clip = dataclasses.replace(clip, resize_mode=protocol.resize_mode)
    if protocol.mean is None or protocol.std is None or keep_bundle_normalization:
        return clip
    mean, std = tuple(protocol.mean), tuple(protocol.std)
    if clip.channel_order == "BGR":
        mean, std = mean[::-1], std[::-1]
    return dataclasses.replace(clip, mean=mean, std=std)


def feature_layer_report(protocol: RetrievalProtocol, spec) -> dict[str, Any]:
    """Whether the bundle outputs the clip feature the protocol's paper uses, with a note when not."""
    have = getattr(spec, "feature_layer", "pooled")
    report = {"protocol_layer": protocol.feature_layer, "bundle_layer": have,
              "bundle_steps": int(getattr(spec, "feature_steps", 1)), "matches": have == protocol.feature_layer}
    if have != protocol.feature_layer:
        how = {"temporal": "export the checkpoint with `vcl-export --features temporal`",
               "pooled": "export the checkpoint without --features temporal"}[protocol.feature_layer]
        report["note"] = (f"the {protocol.name} protocol's paper uses the {protocol.feature_layer} feature but this "
                          f"bundle outputs the {have} one: same protocol, another layer, numbers not comparable "
                          f"to the paper's; {how}")
    return report


def _stacks(clip_vectors: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    stacks = [np.asarray(v, dtype=np.float64) for v in clip_vectors]
    for i, s in enumerate(stacks):
        if s.ndim != 2 or len(s) == 0:
            raise ValueError(f"video {i}: need an n x D stack of clip vectors, got shape {s.shape}")
    return stacks


def pool_videos(clip_vectors: Sequence[np.ndarray] | np.ndarray, protocol: RetrievalProtocol) -> np.ndarray:
    """Per-video ``n_i x D`` clip stacks -> ``N x D`` video vectors (before centering and L2)."""
    stacks = _stacks(clip_vectors)
    return np.stack([(l2_normalize(s) if protocol.normalize_clips else s).mean(axis=0) for s in stacks])


def protocol_vectors(clip_vectors, protocol: RetrievalProtocol) -> np.ndarray:
    """One set's final ``N x D`` unit vectors: pooled, centred on the set's mean if the protocol says so, L2."""
    pooled = pool_videos(clip_vectors, protocol)
    if protocol.center:
        pooled = pooled - pooled.mean(axis=0, keepdims=True)
    return l2_normalize(pooled)


def evaluate_retrieval(train_vectors, train_labels, test_vectors, test_labels, *,
                       protocol: str | RetrievalProtocol = "vcl", ks: Sequence[int] = RETRIEVAL_KS) -> dict[str, Any]:
    """Recall at k of test queries against the train gallery under a paper's protocol.

    Args:
        train_vectors: per gallery video an ``n_i x D`` stack of clip vectors (list, or an
            ``N x n x D`` array).
        train_labels: ``N`` class labels.
        test_vectors: per query video an ``m_j x D`` stack.
        test_labels: ``M`` class labels.
        protocol: name or :class:`RetrievalProtocol`; its ``num_clips`` is what the
            stacks should hold (checked only by callers that embed).
        ks: cut-offs.

    Returns:
        ``{"protocol", "recall": {"R@k": value}, "num_queries", "num_gallery"}``.
    """
    proto = retrieval_protocol(protocol) if isinstance(protocol, str) else protocol
    gallery = protocol_vectors(train_vectors, proto)
    queries = protocol_vectors(test_vectors, proto)
    if len(gallery) != len(train_labels) or len(queries) != len(test_labels):
        raise ValueError("one label per video is needed on both sides")
    recall = recall_at_k(queries, np.asarray(test_labels), gallery, np.asarray(train_labels), ks=tuple(ks))
    return {"protocol": asdict(proto), "recall": {f"R@{k}": v for k, v in recall.items()},
            "num_queries": int(len(queries)), "num_gallery": int(len(gallery))}


def embed_split(embedder, items: Iterable, num_clips: int, *, workers: int = 1, timeout_s: float = 60.0,
                progress: bool = False, clip=None) -> tuple[list[np.ndarray], np.ndarray, list[tuple[str, str]]]:
    """Clip vectors of every labelled video, decoded in child processes.

    Args:
        embedder: a :class:`vcl_infer.Embedder`.
        items: :class:`vcl_infer.probe.labels.VideoItem` (``path``, ``label``).
        num_clips: uniformly spaced clips per video.
        clip: decode (resize rule) and normalise (mean/std/channel order) with this
            ClipSpec (:func:`protocol_clip_spec`); None: the bundle's.

    Returns:
        ``(clip_vectors, labels, failures)``: per readable video an ``n x D`` float32 stack
        as the model outputs it, their labels, and ``(path, "Kind: reason")`` for the files
        that could not be read (left out, never guessed).
    """
    from vcl_infer.errors import VideoError
    from vcl_infer.probe.classify import clip_embeddings
    from vcl_infer.video.isolated import DecodePool

    items = list(items)
    vectors, labels, failures = [], [], []
    # the bar counts a video once it is embedded and is closed on every exit (wrapping the result
    # iterator in tqdm and zipping it with the items stopped at N-1 of N and left the bar open)
    with DecodePool(workers=workers, timeout_s=timeout_s) as pool, _progress(len(items), progress) as bar:
        results = pool.imap([(i.path, clip or embedder.spec.clip, num_clips) for i in items])
        for item, result in zip(items, results):
            if isinstance(result, VideoError):
                failures.append((item.path, f"{type(result).__name__}: {result}"))
            else:
                vectors.append(clip_embeddings(embedder, result.clips, clip=clip))
                labels.append(item.label)
            bar.update(1)
    return vectors, np.asarray(labels), failures


def _progress(total: int, shown: bool):
    """A tqdm bar over ``total`` videos on stderr, or a silent stand-in; both are context managers."""
    from tqdm import tqdm

    return tqdm(total=total, desc="embed", unit="video", disable=not shown)


def _version(module: str) -> str | None:
    """Installed version of the distribution that provides ``module`` (``decord`` ships as
    ``decord`` or ``decord2``), read from package metadata without importing it."""
    from importlib import metadata

    for dist in [module, *metadata.packages_distributions().get(module, [])]:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def environment() -> dict[str, Any]:
    """Versions that change numbers: vcl, numpy, onnxruntime and the decoders (decord, PyAV)."""
    from vcl_infer import __version__

    return {"vcl": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "onnxruntime": _version("onnxruntime"), "decord": _version("decord"), "av": _version("av")}


def encoder_info(embedder) -> dict[str, Any]:
    """The encoder's fingerprint, bundle path and full spec."""
    spec = embedder.spec
    return {"fingerprint": spec.fingerprint, "bundle": None if embedder.path is None else str(embedder.path),
            "spec": spec.to_dict()}


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def results_markdown(result: dict[str, Any]) -> str:
    """A Markdown report: title, the ``metrics`` table, the ``per_class`` table if any, the config."""
    lines = [f"# {result.get('task', 'evaluation')}", ""]
    metrics = result.get("metrics", {})
    if metrics:
        lines += ["| " + " | ".join(metrics) + " |", "|" + "---|" * len(metrics),
                  "| " + " | ".join(_cell(v) for v in metrics.values()) + " |", ""]
    per_class = result.get("per_class")
    if per_class:
        lines += ["| class | accuracy |", "|---|---|"] + [f"| {c} | {_cell(a)} |" for c, a in per_class.items()] + [""]
    encoder = result.get("encoder", {})
    lines += [f"- encoder: `{encoder.get('fingerprint', '')}` ({encoder.get('spec', {}).get('arch', '?')}, "
              f"{encoder.get('bundle', '')})"]
    for key, value in result.get("config", {}).items():
        lines.append(f"- {key}: `{value}`")
    env = result.get("environment", {})
    if env:
        lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in env.items()))
    return "\n".join(lines) + "\n"


def write_results(result: dict[str, Any], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``results.json`` (everything, with environment and time added when missing) and
    ``results.md`` (a table) to ``out_dir``.

    ``result`` holds ``task``, ``metrics`` (name -> number), ``config`` (protocol, clips,
    seeds, label source...), ``encoder`` (:func:`encoder_info`) and anything else JSON-able.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    full = dict(result)
    full.setdefault("environment", environment())
    full.setdefault("created_at", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    json_path, md_path = out / "results.json", out / "results.md"
    json_path.write_text(json.dumps(full, indent=2, default=_json_default) + "\n")
    md_path.write_text(results_markdown(full))
    return json_path, md_path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
