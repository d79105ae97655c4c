"""Linear evaluation of a frozen video backbone (the TCLR / FAME "linear" protocol), torch side.

The backbone is frozen: eval mode (BatchNorm uses its running statistics and does not update
them), no gradients. Features of ``N`` uniformly spaced, centre-cropped clips per video are
extracted once (``V x N x D``) and handed to the runtime's protocol,
:func:`vcl_infer.probe.classify.linear_evaluation`: the same scikit-learn
:class:`~vcl_infer.LinearProbe`, pooling, multi-clip scoring and metrics as ``vcl-eval linear``
(which reaches it from an ONNX bundle instead of a checkpoint), and the same report
(:func:`vcl_infer.probe.evaluation.write_results`). Afterwards :func:`check_frozen` verifies that
every backbone weight and BN statistic is bit-identical to before.

Deviation from the papers: they train the linear layer for 100 epochs on augmented clips
read on the fly (TCLR: Adam, lr 1e-2); here features are cached once (no augmentation), which
is what a frozen backbone allows, and the probe is an L-BFGS logistic regression on
standardised features, fitted in seconds.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from training.data.layouts import VideoItem
from training.models.registry import Backbone
from vcl_infer.clips.sampling import ClipWindow, uniform_clips
from vcl_infer.clips.spec import ClipSpec


class FrozenBackboneError(AssertionError):
    """A backbone that should have stayed frozen changed (weights or BN statistics)."""


@dataclass(frozen=True)
class UniformViews:
    """``num_clips`` uniformly spaced clips (evaluation views; picklable for workers)."""

    spec: ClipSpec
    num_clips: int

    def __call__(self, timestamps: np.ndarray, rng: np.random.Generator) -> list[ClipWindow]:
        return uniform_clips(timestamps, self.spec, self.num_clips)


@dataclass
class LinearEvalConfig:
    """Settings of :func:`linear_eval` (written into the results JSON).

    Attributes:
        train_clips: clips per train video (pooled into one vector per video, as ``vcl-eval linear``).
        test_clips: clips per test video, combined by ``mode``.
        mode: ``mean_probability`` (every clip classified, probabilities averaged: the papers')
            or ``mean_embedding`` (:data:`vcl_infer.probe.classify.MODES`).
        C, max_iter: the probe's inverse L2 strength and L-BFGS iterations (:class:`vcl_infer.LinearProbe`).
        label_fraction: fit on this stratified, seeded fraction of the train videos (None: all).
        seed: the probe's seed and the label-fraction draw.
        split: UCF101 / HMDB51 split number.
        workers: decoding worker processes (0: in this process).
        device: ``cpu``, ``cuda`` or ``auto``.
        extract_batch_size: videos per feature-extraction batch.
    """

    train_clips: int = 1
    test_clips: int = 10
    mode: str = "mean_probability"
    C: float = 1.0
    max_iter: int = 1000
    label_fraction: float | None = None
    seed: int = 0
    split: int = 1
    workers: int = 0
    device: str = "auto"
    extract_batch_size: int = 8
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from vcl_infer.probe.classify import MODES

        if self.train_clips < 1 or self.test_clips < 1:
            raise ValueError("train_clips and test_clips must be >= 1")
        if self.max_iter < 1 or self.extract_batch_size < 1:
            raise ValueError("max_iter and extract_batch_size must be >= 1")
        if not self.C > 0:
            raise ValueError("C must be > 0")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.label_fraction is not None and not 0.0 < self.label_fraction <= 1.0:
            raise ValueError(f"label_fraction must be in (0, 1], got {self.label_fraction!r}")


# ------------------------------------------------------------------------- frozen check
def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``module.state_dict()`` (weights and buffers)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def check_frozen(before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor]) -> None:
    """Assert that every tensor of ``after`` equals ``before`` exactly.

    Covers weights and buffers: BatchNorm ``running_mean``, ``running_var`` and
    ``num_batches_tracked`` included.

    Raises:
        FrozenBackboneError: naming every changed, added or missing tensor.
    """
    changed = [k for k in before if k in after and not torch.equal(before[k].cpu(), after[k].detach().cpu())]
    missing = sorted(set(before) - set(after))
    added = sorted(set(after) - set(before))
    if changed or missing or added:
        parts = []
        if changed:
            parts.append(f"{len(changed)} changed: {', '.join(changed)}")
        if missing:
            parts.append(f"missing: {', '.join(missing)}")
        if added:
            parts.append(f"added: {', '.join(added)}")
        raise FrozenBackboneError("frozen backbone was modified; " + "; ".join(parts))


# ----------------------------------------------------------------------------- features
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def extract_features(
    backbone: nn.Module,
    items: Sequence[VideoItem],
    spec: ClipSpec,
    *,
    num_clips: int,
    batch_size: int = 8,
    workers: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled backbone features of ``num_clips`` uniform centre-cropped clips per video.

    The backbone is put in eval mode and run without gradients (callers that need a proof
    compare :func:`snapshot` before and after with :func:`check_frozen`).

    Returns:
        ``(features V x N x D float32, labels V int64, kept V int64)``: ``kept`` are the
        indices into ``items`` of the videos that could be read (unreadable ones are skipped).
    """
    from training.data.dataset import ClipDataset, collate_skip_none, normalize_clips, to_float_clips

    device = torch.device(device) if not isinstance(device, torch.device) else device
    dataset = ClipDataset(items, spec, UniformViews(spec, num_clips), train=False, flip=False)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate_skip_none,
        multiprocessing_context="spawn" if workers > 0 else None,
    )
    backbone.eval()
    feats, labels, kept = [], [], []
    iterator: Any = loader
    if progress:
        from tqdm import tqdm

        iterator = tqdm(loader, desc="features", unit="batch")
    with torch.no_grad():
        for batch in iterator:
            clips = batch["clips"]
            if clips.ndim != 6:
                continue
            x = to_float_clips(clips, spec)  # B x N x 3 x T x S x S
            b, n = x.shape[:2]
            x = normalize_clips(x.reshape(b * n, *x.shape[2:]), spec).to(device)
            f = backbone(x).float().reshape(b, n, -1)
            feats.append(f.cpu().numpy())
            labels.append(batch["label"].numpy())
            kept.append(batch["index"].numpy())
    if not feats:
        raise ValueError("no readable videos to extract features from")
    return np.concatenate(feats), np.concatenate(labels).astype(np.int64), np.concatenate(kept).astype(np.int64)


# ----------------------------------------------------------------------------- protocol
def evaluate_backbone(
    backbone: nn.Module,
    spec: ClipSpec,
    train_items: Sequence[VideoItem],
    test_items: Sequence[VideoItem],
    num_classes: int,
    config: LinearEvalConfig | None = None,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Linear evaluation of a frozen ``backbone``; raises :class:`FrozenBackboneError` if it changed.

    Extracts the clip features here, then scores them with :func:`score_features` (the runtime's
    probe and metrics).

    Returns:
        :func:`score_features`' dict plus ``train_videos``, ``test_videos``, ``frozen_check``
        and ``features`` (the extracted arrays, for retrieval, pictures or a later probe).
    """
    config = config or LinearEvalConfig()
    device = _device(config.device)
    was_training = backbone.training
    flags = [p.requires_grad for p in backbone.parameters()]
    backbone.to(device)
    before = snapshot(backbone)
    try:
        for p in backbone.parameters():
            p.requires_grad_(False)
        extract = functools.partial(extract_features, backbone, spec=spec, batch_size=config.extract_batch_size,
                                    workers=config.workers, device=device, progress=progress)
        xtr, ytr, _ = extract(train_items, num_clips=config.train_clips)
        xte, yte, _ = extract(test_items, num_clips=config.test_clips)
        check_frozen(before, snapshot(backbone))
    finally:
        for p, flag in zip(backbone.parameters(), flags):
            p.requires_grad_(flag)
        backbone.train(was_training)
    features = {"train": xtr, "train_labels": ytr, "test": xte, "test_labels": yte}
    return {**score_features(features, config), "train_videos": int(len(ytr)), "test_videos": int(len(yte)),
            "frozen_check": "passed", "features": features}


def score_features(features: Mapping[str, np.ndarray], config: LinearEvalConfig | None = None) -> dict[str, Any]:
    """The linear protocol (:func:`vcl_infer.probe.classify.linear_evaluation`) on extracted features.

    Args:
        features: ``train`` (``V x N x D``), ``train_labels``, ``test`` (``W x M x D``),
            ``test_labels``, as :func:`evaluate_backbone` returns them (or as saved to ``.npz``).
        config: ``mode``, ``C``, ``max_iter``, ``label_fraction``, ``seed``.

    Returns:
        ``top1``, ``top5`` (all test clips), ``top1_1clip`` (the centre clip alone),
        ``per_class``, ``confusion``, ``classes`` (label ids as strings).
    """
    from vcl_infer.probe.classify import evaluate_predictions, linear_evaluation, video_probabilities

    config = config or LinearEvalConfig()
    xte, yte = np.asarray(features["test"]), np.asarray(features["test_labels"])
    probe, scores = linear_evaluation(list(features["train"]), np.asarray(features["train_labels"]), list(xte), yte,
                                      mode=config.mode, label_fraction=config.label_fraction, seed=config.seed,
                                      C=config.C, max_iter=config.max_iter)
    centre = xte.shape[1] // 2
    one = np.stack([video_probabilities(probe, v[centre:centre + 1], config.mode) for v in xte])
    return {"top1": scores["top1"], "top5": scores["top5"],
            "top1_1clip": evaluate_predictions(one, yte, probe.classes_)["top1"],
            "per_class": scores["per_class"], "confusion": scores["confusion"], "classes": scores["classes"],
            "probe_train_videos": int(len(probe.train_indices_))}


def resolve_spec(base: ClipSpec, *, frames: int | None = None, frame_step: int | None = None,
                 crop: int | None = None, resize: int | None = None) -> ClipSpec:
    """``base`` with the given clip fields replaced (as ``TrainConfig.clip_spec`` does)."""
    import dataclasses

    changes: dict[str, Any] = {}
    if frames is not None:
        changes["frames_per_clip"] = frames
    if frame_step is not None:
        changes["frame_step"], changes["target_fps"] = frame_step, None
    if crop is not None:
        changes["crop_size"] = crop
        if resize is None and base.resize_size < crop:
            changes["resize_size"] = crop
    if resize is not None:
        changes["resize_size"] = resize
    return dataclasses.replace(base, **changes)


def load_backbone(checkpoint: str | Path | None, *, arch: str | None = None, seed: int = 0
                  ) -> tuple[Backbone, ClipSpec, dict[str, Any]]:
    """A backbone from a checkpoint (any format ``import_checkpoint`` reads), or untrained.

    Returns:
        ``(backbone, spec, info)``: ``spec`` is the checkpoint's clip spec or the arch's
        default; ``info`` has ``arch``, ``method``, ``source_format`` and ``checkpoint``.
    """
    from training.models import create_backbone
    from training.models.defaults import default_clip_spec

    if checkpoint is None:
        name = arch or "r3d_small"
        torch.manual_seed(seed)
        backbone = create_backbone(name)
        return backbone, default_clip_spec(name), {"arch": name, "method": "untrained", "source_format": None,
                                                   "checkpoint": None, "init_seed": seed}
    from training.checkpoint_import import import_checkpoint

    imported = import_checkpoint(checkpoint, arch=arch)
    backbone = create_backbone(imported.arch, **imported.arch_kwargs)
    backbone.load_state_dict(imported.state_dict, strict=True)
    spec = imported.clip_spec or default_clip_spec(imported.arch)
    return backbone, spec, {"arch": imported.arch, "method": imported.method,
                            "source_format": imported.source_format, "checkpoint": str(checkpoint)}


def _labelled_split(data: str | Path, split: int) -> tuple[list[VideoItem], list[VideoItem], list[str]]:
    """The train and test items and class names of ``data``'s ``split``.

    Raises:
        ValueError: the data has no labels, or one side of the split is empty.
    """
    from training.data.layouts import load_layout

    train_items, classes = load_layout(data, split=split, subset="train")
    test_items, _ = load_layout(data, split=split, subset="test")
    if not classes:
        raise ValueError(f"{data}: linear evaluation needs labels (class folders or UCF101/HMDB51 split files)")
    if not train_items or not test_items:
        raise ValueError(f"{data}: split {split} needs videos on both the train and test side")
    return list(train_items), list(test_items), list(classes)


def linear_eval(
    checkpoint: str | Path | None,
    data: str | Path,
    *,
    out: str | Path | None = None,
    arch: str | None = None,
    config: LinearEvalConfig | None = None,
    frames: int | None = None,
    frame_step: int | None = None,
    crop: int | None = None,
    resize: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Linear evaluation of ``checkpoint`` (None: untrained ``arch``) on a labelled layout.

    Writes ``OUT/results.json`` and ``OUT/results.md`` (:func:`vcl_infer.probe.evaluation.write_results`:
    metrics, per-class accuracy, config, encoder fingerprint, versions) when ``out`` is given,
    the same report ``vcl-eval linear`` writes.

    Returns:
        The JSON-able result dict (``top1``, ``top5``, ``top1_1clip``, ``encoder``, ...).

    Raises:
        FrozenBackboneError: the backbone changed during evaluation.
        ValueError: unlabelled data, no readable videos.
    """
    from training.fingerprint import weights_fingerprint
    from vcl_infer.probe.evaluation import write_results

    config = config or LinearEvalConfig()
    t0 = time.perf_counter()
    backbone, spec, info = load_backbone(checkpoint, arch=arch, seed=config.seed)
    spec = resolve_spec(spec, frames=frames, frame_step=frame_step, crop=crop, resize=resize)
    train_items, test_items, classes = _labelled_split(data, config.split)
    fingerprint = weights_fingerprint(backbone.state_dict())
    scores = evaluate_backbone(backbone, spec, train_items, test_items, len(classes), config, progress=progress)
    scores.pop("features")
    scores["per_class"] = {classes[int(k)]: v for k, v in scores["per_class"].items()}
    scores["classes"] = [classes[int(k)] for k in scores["classes"]]
    result: dict[str, Any] = {
        "task": "linear evaluation (frozen backbone, torch)",
        "protocol": "linear (frozen backbone)",
        **scores,
        "metrics": {"top1": scores["top1"], "top5": scores["top5"], "top1_1clip": scores["top1_1clip"],
                    "test_videos": scores["test_videos"], "train_videos": scores["probe_train_videos"],
                    "chance": 1.0 / len(classes)},
        "num_classes": len(classes),
        "encoder": {**info, "fingerprint": fingerprint, "spec": {"arch": info["arch"], **spec.to_dict()}},
        "clip_spec": spec.to_dict(),
        "data": str(data),
        "config": asdict(config),
        "seeds": {"probe": config.seed},
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if out is not None:
        write_results(result, out)
    return result
