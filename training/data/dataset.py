"""Videos to batches of uint8 clip views for contrastive training and evaluation.

:class:`ClipDataset` decodes one video per item in the DataLoader worker, asks the method's
``views`` function which clip windows to take (two random clips for SimCLR-style methods,
one global and several local clips for TCLR, ...), decodes the union of their frames once,
and crops each clip. Items stay uint8 until the batch reaches the training process:
:func:`to_float_clips` scales them, colour augmentation runs there (on the device), and
:func:`normalize_clips` applies the spec's mean and std last, exactly as
:func:`vcl_infer.clips.preprocess.to_model_input` does at inference.

Randomness is a pure function of ``(seed, epoch, index)``, so worker count, worker order
and resuming from a checkpoint do not change which clips an item yields.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from training.data.layouts import VideoItem
from training.data.spatial import crop_and_resize, hflip, random_resized_crop_box
from vcl_infer.clips.preprocess import fit_frames
from vcl_infer.clips.sampling import ClipWindow
from vcl_infer.clips.spec import ClipSpec
from vcl_infer.errors import VideoError
from vcl_infer.video.open import open_video

log = logging.getLogger(__name__)

ViewSampler = Callable[[np.ndarray, np.random.Generator], list[ClipWindow]]
"""``views(timestamps, rng) -> windows``: which clips one item yields (the method decides)."""

# Decoders raise VideoError by contract; the others cover what a native decoder may still
# throw mid-stream on a damaged file. Anything else is a bug and propagates.
_DECODE_ERRORS = (VideoError, OSError, RuntimeError, EOFError, IndexError)


class ClipDataset(Dataset):
    """Clip views of videos, as uint8.

    Args:
        items: the videos (see :mod:`training.data.layouts`).
        spec: clip spec; ``crop_size`` is the output side S, and in eval mode the resize
            rule too.
        views: ``views(timestamps, rng) -> list[ClipWindow]``, e.g.
            ``lambda ts, rng: [random_clip(ts, spec, rng) for _ in range(2)]``. Every window
            must hold the same number of frames T.
        crop_scale: area fraction range of the random resized crop (train).
        flip: random horizontal flip per clip (train).
        seed: base seed; the generator of item ``i`` is ``default_rng([seed, epoch, i])``.
        train: random resized crop + flip per clip; else resize and centre crop
            (:func:`vcl_infer.clips.preprocess.fit_frames`).
        backend: video decoder (``auto``, ``decord``, ``pyav``).
        decode_threads: decoder threads per open video; 1 suits many DataLoader workers.
        cache_frames: keep every decoded video in memory (all its frames, uint8) and serve
            later epochs from there: for small sets (a ``vcl-synth`` set of a few hundred
            short videos is tens of MB), where decoding costs more than the training step.
            Each DataLoader worker holds its own cache and loses it at the epoch's end, so it
            helps with ``workers=0`` only.

    An item is ``{"clips": V x T x S x S x 3 uint8 tensor, "index": i, "label": int}``, or
    ``None`` when the video cannot be read (logged once per file; batch with
    :func:`collate_skip_none`).
    """

    def __init__(
        self,
        items: Sequence[VideoItem],
        spec: ClipSpec,
        views: ViewSampler,
        *,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        flip: bool = True,
        seed: int = 0,
        train: bool = True,
        backend: str = "auto",
        decode_threads: int = 1,
        cache_frames: bool = False,
    ) -> None:
        if not (0 < crop_scale[0] <= crop_scale[1] <= 1):
            raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {crop_scale}")
        self.items = list(items)
        self.spec = spec
        self.views = views
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.flip = flip
        self.seed = int(seed)
        self.train = train
        self.backend = backend
        self.decode_threads = decode_threads
        self.epoch = 0
        self.failures = 0  # this process only; workers report through collate_skip_none
        self._logged: set[str] = set()
        self.cache_frames = cache_frames
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Draw the clips of ``epoch`` (call before each epoch, as with DistributedSampler).

        With persistent DataLoader workers the workers hold their own copy of the dataset;
        recreate the DataLoader iterator (the default, ``persistent_workers=False``).
        """
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        """The generator item ``index`` uses in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        item = self.items[index]
        rng = self.rng(index)
        if self.cache_frames:
            return self._from_cache(index, item, rng)
        try:
            reader = open_video(item.path, self.backend, num_threads=self.decode_threads)
        except _DECODE_ERRORS as exc:
            return self._failed(item, exc)
        try:
            timestamps = np.asarray(reader.timestamps)
            if timestamps.size == 0:
                return self._failed(item, "no decodable frames")
            windows = self._windows(timestamps, rng)
            wanted = np.unique(np.concatenate([np.asarray(w.indices, dtype=np.int64) for w in windows]))
            try:
                frames = reader.get_frames(wanted.tolist())
            except _DECODE_ERRORS as exc:
                return self._failed(item, exc)
        finally:
            reader.close()
        clips = [self._transform(frames[np.searchsorted(wanted, w.indices)], rng) for w in windows]
        return {"clips": torch.from_numpy(np.stack(clips)), "index": int(index), "label": int(item.label)}

    def _from_cache(self, index: int, item: VideoItem, rng: np.random.Generator) -> dict[str, Any] | None:
        """The item from the whole decoded video, decoding it on first use."""
        if index not in self._cache:
            try:
                reader = open_video(item.path, self.backend, num_threads=self.decode_threads)
            except _DECODE_ERRORS as exc:
                return self._failed(item, exc)
            try:
                timestamps = np.asarray(reader.timestamps)
                if timestamps.size == 0:
                    return self._failed(item, "no decodable frames")
                frames = reader.get_frames(list(range(timestamps.size)))
            except _DECODE_ERRORS as exc:
                return self._failed(item, exc)
            finally:
                reader.close()
            self._cache[index] = (timestamps, np.asarray(frames))
        timestamps, frames = self._cache[index]
        windows = self._windows(timestamps, rng)
        clips = [self._transform(frames[np.asarray(w.indices, dtype=np.int64)], rng) for w in windows]
        return {"clips": torch.from_numpy(np.stack(clips)), "index": int(index), "label": int(item.label)}

    def _windows(self, timestamps: np.ndarray, rng: np.random.Generator) -> list:
        """The item's clip windows from ``views``, checked to be non-empty and of one length
        (the clips are stacked into one tensor)."""
        windows = self.views(timestamps, rng)
        if not windows:
            raise ValueError("views returned no clip windows")
        lengths = {len(w.indices) for w in windows}
        if len(lengths) != 1:
            raise ValueError(f"all clip windows must hold the same number of frames, got {sorted(lengths)}")
        return windows

    def _transform(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``T x H x W x 3`` uint8 -> ``T x S x S x 3`` uint8 (one box and flip per clip)."""
        if not self.train:
            return fit_frames(frames, self.spec)
        _, height, width, _ = frames.shape
        box = random_resized_crop_box(height, width, rng, self.crop_scale)
        out = crop_and_resize(frames, box, self.spec.crop_size)
        if self.flip and rng.random() < 0.5:
            out = hflip(out)
        return out

    def _failed(self, item: VideoItem, reason: object) -> dict[str, Any] | None:
        """Count and log (once per path) an unreadable item; its value is None (dropped by the collate)."""
        self.failures += 1
        if item.path not in self._logged:
            self._logged.add(item.path)
            # a VideoError's message repeats the path; its reason alone reads better here
            log.warning("skipping unreadable video %s: %s", item.path, getattr(reason, "reason", reason))
        return None


def collate_skip_none(batch: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Stack items, dropping the ``None`` of unreadable videos.

    Returns:
        ``{"clips": B x V x T x S x S x 3 uint8, "index": B int64, "label": B int64,
        "skipped": n}`` with ``n`` the items dropped. When every item failed, B is 0 and
        ``clips`` is an empty uint8 tensor of shape ``(0,)``: the loop should skip the step.
    """
    kept = [b for b in batch if b is not None]
    skipped = len(batch) - len(kept)
    if not kept:
        empty = torch.empty(0, dtype=torch.long)
        return {"clips": torch.empty(0, dtype=torch.uint8), "index": empty, "label": empty.clone(), "skipped": skipped}
    return {
        "clips": torch.stack([b["clips"] for b in kept]),
        "index": torch.tensor([b["index"] for b in kept], dtype=torch.long),
        "label": torch.tensor([b["label"] for b in kept], dtype=torch.long),
        "skipped": skipped,
    }


def paired_features(path: str | os.PathLike, items: Sequence[VideoItem], root: str | os.PathLike) -> torch.Tensor:
    """Each item's vector from a ``.npz`` of paired features (CrossCLR's second modality).

    Args:
        path: ``.npz`` whose keys are video paths relative to ``root`` with ``/`` separators
            (``videos/Class/v_Class_g01_c01.mp4``) and whose values are 1-D float arrays of one
            length ``P``. Read with ``allow_pickle=False``; extra keys are ignored.
        items: the training videos.
        root: the data root the keys are relative to (``vcl-train --data``).

    Returns:
        ``len(items) x P`` float32, row ``i`` for ``items[i]`` (the loop indexes it with the
        batch's ``index``).

    Raises:
        ValueError: a video without an entry (named), or arrays that are not 1-D of one length.
    """
    base = Path(root)
    with np.load(path, allow_pickle=False) as data:
        keys = set(data.files)
        rows = []
        for item in items:
            try:
                key = Path(item.path).relative_to(base).as_posix()
            except ValueError:
                key = Path(os.path.relpath(item.path, base)).as_posix()
            if key not in keys:
                raise ValueError(f"{path} has no paired features for video {item.path} (expected key {key!r}; "
                                 f"keys are video paths relative to {base})")
            rows.append(np.asarray(data[key]))
    dims = {r.shape for r in rows}
    if len(dims) != 1 or len(next(iter(dims))) != 1 or not all(np.issubdtype(r.dtype, np.number) for r in rows):
        raise ValueError(f"{path}: paired features must be 1-D numeric arrays of one length, got shapes {sorted(dims)}")
    return torch.from_numpy(np.stack(rows).astype(np.float32))


def to_float_clips(clips: torch.Tensor, spec: ClipSpec | None = None) -> torch.Tensor:
    """uint8 ``B x V x T x S x S x 3`` -> float32 ``B x V x 3 x T x S x S`` in [0, 1].

    Channels stay RGB; :func:`normalize_clips` applies the spec's channel order. ``spec``,
    when given, checks T and S.
    """
    if clips.dtype != torch.uint8 or clips.ndim != 6 or clips.shape[-1] != 3:
        raise ValueError(f"expected B x V x T x S x S x 3 uint8 clips, got {tuple(clips.shape)} {clips.dtype}")
    if spec is not None:
        expected = (spec.frames_per_clip, spec.crop_size, spec.crop_size)
        if tuple(clips.shape[2:5]) != expected:
            raise ValueError(f"clips are T x S x S = {tuple(clips.shape[2:5])}, the spec says {expected}")
    return clips.permute(0, 1, 5, 2, 3, 4).float().div_(255.0)


def normalize_clips(x: torch.Tensor, spec: ClipSpec) -> torch.Tensor:
    """Apply the spec's channel order, mean and std to [0, 1] RGB clips.

    Args:
        x: float ``... x 3 x T x S x S`` (channels RGB, e.g. from :func:`to_float_clips`
            after colour augmentation).
        spec: the clip spec.

    Returns:
        Same shape, ``(x - mean) / std`` with channels in ``spec.channel_order``: equal to
        :func:`vcl_infer.clips.preprocess.to_model_input` of the same uint8 pixels.
    """
    if x.ndim < 4 or x.shape[-4] != 3:
        raise ValueError(f"expected ... x 3 x T x S x S clips, got {tuple(x.shape)}")
    if spec.channel_order == "BGR":
        x = x.flip(-4)
    shape = (3, 1, 1, 1)
    mean = torch.tensor(spec.mean, dtype=x.dtype, device=x.device).view(shape)
    std = torch.tensor(spec.std, dtype=x.dtype, device=x.device).view(shape)
    return (x - mean) / std
