"""Linear evaluation of a frozen video backbone (the TCLR / FAME "linear" protocol).

The backbone is frozen: eval mode (BatchNorm uses its running statistics and does not update
them), no gradients. Features of ``N`` uniformly spaced, centre-cropped clips per video are
extracted once (``B x N x D``); a linear classifier is trained on the train split's clip
features and evaluated on the test split by averaging the clip probabilities of each video
(TCLR, Dave et al. 2022, ``linear_eval``: Adam, lr 1e-2). Afterwards :func:`check_frozen`
verifies that every backbone weight and BN statistic is bit-identical to before.

Deviation from the papers: they train the linear layer for 100 epochs on augmented clips
read on the fly; here features are cached once (no augmentation), which is what a frozen
backbone allows, and takes seconds instead of hours. Features are standardised with the
train split's mean and std before the classifier.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.data.layouts import VideoItem
from vcl_infer.clips.sampling import ClipWindow, uniform_clips
from vcl_infer.clips.spec import ClipSpec

DECODER_PACKAGES = ("decord2", "decord", "av")


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
        train_clips: clips per train video (each one a training sample of the classifier).
        test_clips: clips per test video; their probabilities are averaged.
        epochs, lr, optimizer, batch_size, weight_decay: classifier training (TCLR: Adam, 1e-2).
        seed: classifier initialisation and sample order.
        split: UCF101 / HMDB51 split number.
        workers: decoding worker processes (0: in this process).
        device: ``cpu``, ``cuda`` or ``auto``.
    """

    train_clips: int = 1
    test_clips: int = 10
    epochs: int = 50
    lr: float = 1e-2
    optimizer: str = "adam"
    batch_size: int = 256
    weight_decay: float = 0.0
    seed: int = 0
    split: int = 1
    workers: int = 0
    device: str = "auto"
    extract_batch_size: int = 8
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.train_clips < 1 or self.test_clips < 1:
            raise ValueError("train_clips and test_clips must be >= 1")
        if self.epochs < 1 or self.batch_size < 1 or self.extract_batch_size < 1:
            raise ValueError("epochs, batch_size and extract_batch_size must be >= 1")
        if not self.lr > 0:
            raise ValueError("lr must be > 0")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError("optimizer must be adam or sgd")


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


# ---------------------------------------------------------------------------- classifier
@dataclass
class LinearClassifier:
    """A trained linear layer on standardised features: ``softmax(((x - mean) / std) W^T + b)``."""

    mean: np.ndarray
    std: np.ndarray
    weight: np.ndarray
    bias: np.ndarray

    def logits(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float32) - self.mean) / self.std) @ self.weight.T + self.bias

    def proba(self, x: np.ndarray) -> np.ndarray:
        z = self.logits(x)
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)


def train_linear(
    x: np.ndarray, y: np.ndarray, num_classes: int, config: LinearEvalConfig
) -> LinearClassifier:
    """Cross-entropy training of a linear layer on ``S x D`` features and ``S`` labels."""
    x = np.asarray(x, np.float32)
    mean = x.mean(0)
    std = x.std(0) + 1e-6
    xt = torch.from_numpy((x - mean) / std)
    yt = torch.from_numpy(np.asarray(y, np.int64))
    g = torch.Generator().manual_seed(config.seed)
    layer = nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():  # seeded init, independent of the global RNG
        bound = 1.0 / np.sqrt(x.shape[1])
        layer.weight.uniform_(-bound, bound, generator=g)
        layer.bias.zero_()
    if config.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(layer.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.SGD(layer.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    for _ in range(config.epochs):
        order = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), config.batch_size):
            idx = order[i : i + config.batch_size]
            loss = F.cross_entropy(layer(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return LinearClassifier(mean, std, layer.weight.detach().numpy().copy(), layer.bias.detach().numpy().copy())


def topk_accuracy(proba: np.ndarray, y: np.ndarray, k: int) -> float:
    """Fraction of rows whose true class is among the ``k`` most probable."""
    k = min(k, proba.shape[1])
    top = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return float(np.mean((top == np.asarray(y)[:, None]).any(axis=1)))


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

    Returns:
        ``{"top1", "top5", "top1_1clip", "train_videos", "test_videos", "frozen_check"}``
        plus ``features`` (the extracted arrays, for retrieval or pictures).
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
        kw = dict(batch_size=config.extract_batch_size, workers=config.workers, device=device, progress=progress)
        xtr, ytr, _ = extract_features(backbone, train_items, spec, num_clips=config.train_clips, **kw)
        xte, yte, _ = extract_features(backbone, test_items, spec, num_clips=config.test_clips, **kw)
        clf = train_linear(xtr.reshape(-1, xtr.shape[-1]), np.repeat(ytr, xtr.shape[1]), num_classes, config)
        proba = clf.proba(xte.reshape(-1, xte.shape[-1])).reshape(xte.shape[0], xte.shape[1], -1)
        mean_proba = proba.mean(axis=1)  # average the clips' probabilities (TCLR)
        centre = proba[:, xte.shape[1] // 2]
        check_frozen(before, snapshot(backbone))
    finally:
        for p, flag in zip(backbone.parameters(), flags):
            p.requires_grad_(flag)
        backbone.train(was_training)
    return {
        "top1": topk_accuracy(mean_proba, yte, 1),
        "top5": topk_accuracy(mean_proba, yte, 5),
        "top1_1clip": topk_accuracy(centre, yte, 1),
        "train_videos": int(len(ytr)),
        "test_videos": int(len(yte)),
        "frozen_check": "passed",
        "features": {"train": xtr, "train_labels": ytr, "test": xte, "test_labels": yte},
    }


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
                  ) -> tuple[nn.Module, ClipSpec, dict[str, Any]]:
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


def decoder_versions() -> dict[str, str | None]:
    """Installed versions of the video decoders (``importlib.metadata``), None when absent."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in DECODER_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def results_markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` (floats as percentages with 1 decimal when in [0, 1])."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{100 * v:.1f}" if 0.0 <= v <= 1.0 else f"{v:.4g}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


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

    Writes ``OUT/linear_eval.json`` (results, config, seeds, decoder versions, encoder
    fingerprint) and ``OUT/linear_eval.md`` when ``out`` is given.

    Returns:
        The JSON-able result dict (``top1``, ``top5``, ``top1_1clip``, ``fingerprint``, ...).

    Raises:
        FrozenBackboneError: the backbone changed during evaluation.
        ValueError: unlabelled data, no readable videos.
    """
    from training.data.layouts import load_layout
    from training.fingerprint import weights_fingerprint

    config = config or LinearEvalConfig()
    t0 = time.perf_counter()
    backbone, spec, info = load_backbone(checkpoint, arch=arch, seed=config.seed)
    spec = resolve_spec(spec, frames=frames, frame_step=frame_step, crop=crop, resize=resize)
    train_items, classes = load_layout(data, split=config.split, subset="train")
    test_items, _ = load_layout(data, split=config.split, subset="test")
    if not classes:
        raise ValueError(f"{data}: linear evaluation needs labels (class folders or UCF101/HMDB51 split files)")
    if not train_items or not test_items:
        raise ValueError(f"{data}: split {config.split} needs videos on both the train and test side")
    fingerprint = weights_fingerprint(backbone.state_dict())
    scores = evaluate_backbone(backbone, spec, train_items, test_items, len(classes), config, progress=progress)
    scores.pop("features")
    result: dict[str, Any] = {
        "protocol": "linear (frozen backbone)",
        **scores,
        "num_classes": len(classes),
        "encoder": {**info, "fingerprint": fingerprint},
        "clip_spec": spec.to_dict(),
        "data": str(data),
        "config": asdict(config),
        "seeds": {"classifier": config.seed},
        "decoders": decoder_versions(),
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        folder.joinpath("linear_eval.json").write_text(json.dumps(result, indent=1, default=str))
        row = {"encoder": info["method"], "arch": info["arch"], "top1": result["top1"], "top5": result["top5"],
               "top1 (1 clip)": result["top1_1clip"], "clips": config.test_clips,
               "fingerprint": fingerprint[:19]}
        folder.joinpath("linear_eval.md").write_text(
            f"Linear evaluation on {data} (split {config.split}, seed {config.seed})\n\n"
            + results_markdown([row], list(row)))
    return result
