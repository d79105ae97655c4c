"""The training run's configuration: a validated dataclass, loaded from YAML/TOML, overridden
by command-line flags, and written out resolved (``config.yaml``) next to each checkpoint.

Resolution order, later wins: dataclass defaults < the method's paper defaults for the
optimiser (``optimizer``, ``lr``, ``weight_decay``; applied where the config leaves them None)
< the config file < command-line flags (which default to None, meaning "not given").
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vcl_infer.clips.spec import ClipSpec

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "none")


@dataclass
class TrainConfig:
    """Everything a training run needs.

    Attributes:
        method: registry name (``simclr``, ``moco``, ``tclr``, ``fame``).
        data: video folder or split layout (see ``training.data.load_layout``).
        arch: backbone registry name.
        out: run folder (checkpoints, ``config.yaml``, ``metrics.csv``).
        epochs: passes over the data; the LR schedule spans ``epochs`` full epochs.
        batch_size: videos per step per process.
        lr, optimizer, weight_decay: None = the method's paper values.
        momentum: SGD momentum.
        schedule: ``cosine`` (with linear warm-up) or ``none`` (constant after warm-up).
        warmup_epochs: linear warm-up length (may be fractional).
        workers: DataLoader worker processes (spawned); 0 decodes in the main process.
        seed: seeds everything (data order, crops, augmentation, init).
        amp: mixed precision on CUDA (ignored on CPU).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        frames, frame_step, crop, resize: clip spec fields; None = the backbone's default spec.
        split, subset: which split file / side of a UCF101 or HMDB51 layout to train on.
        crop_scale: area range of the random resized crop.
        flip: random horizontal flip of each training clip. None (auto): on, except on data
            whose classes a mirror changes (a ``vcl-synth`` set: MoveLeft <-> MoveRight,
            RotateCW <-> RotateCCW), where a flip would teach the network that a class equals
            its opposite.
        cache_frames: keep decoded videos in memory across epochs (small sets, ``workers=0``).
        eval_data: a labelled split layout for the online kNN monitor (:mod:`training.monitor`):
            every ``eval_every`` steps (and before the first) the frozen backbone's kNN top-1
            (train split as memory, test split as queries) goes to ``metrics.csv`` as
            ``knn_top1`` and to the progress bar. None: no monitor.
        eval_every: steps between two monitor evaluations.
        method_args: method hyperparameter overrides (``temperature``, ``queue_size``, ...).
        max_steps: stop after this many optimiser steps in total (for bounded runs); the
            schedule still spans ``epochs``, so a stopped run resumes to the same weights.
        save_every: also checkpoint every N steps (0: only at epoch ends and on stop).
        keep_epochs: write ``epoch_NNN.pt`` at each epoch end besides ``checkpoint.pt``.
        log_every: log every N steps.
        init: checkpoint whose backbone weights start the run (vcl, torchvision, TCLR or FAME
            format; for ``supervised`` fine-tuning); ignored on resume.
    """

    method: str = "simclr"
    data: str = ""
    arch: str = "r3d_small"
    out: str = "runs/vcl"
    epochs: int = 100
    batch_size: int = 8
    lr: float | None = None
    optimizer: str | None = None
    weight_decay: float | None = None
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    workers: int = 2
    seed: int = 0
    amp: bool = True
    device: str = "auto"
    frames: int | None = None
    frame_step: int | None = None
    crop: int | None = None
    resize: int | None = None
    split: int = 1
    subset: str = "train"
    crop_scale: tuple[float, float] = (0.2, 1.0)
    flip: bool | None = None
    cache_frames: bool = False
    eval_data: str | None = None
    eval_every: int = 50
    method_args: dict[str, Any] = field(default_factory=dict)
    max_steps: int | None = None
    save_every: int = 0
    keep_epochs: bool = True
    log_every: int = 10
    init: str | None = None

    def __post_init__(self) -> None:
        self.crop_scale = tuple(float(v) for v in self.crop_scale)  # type: ignore[assignment]
        self.method_args = dict(self.method_args or {})
        problems = [*self._count_problems(), *self._optimiser_problems(), *self._other_problems()]
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    def _count_problems(self) -> list[str]:
        problems = []
        if not self.data:
            problems.append("data is required (a video folder or split layout)")
        for name in ("epochs", "batch_size", "log_every", "eval_every"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be >= 1")
        for name in ("workers", "save_every"):
            if int(getattr(self, name)) < 0:
                problems.append(f"{name} must be >= 0")
        return problems

    def _optimiser_problems(self) -> list[str]:
        problems = []
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append("lr must be a positive number")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {OPTIMIZERS}")
        if self.weight_decay is not None and self.weight_decay < 0:
            problems.append("weight_decay must be >= 0")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {SCHEDULES}")
        if self.warmup_epochs < 0:
            problems.append("warmup_epochs must be >= 0")
        return problems

    def _other_problems(self) -> list[str]:
        problems = []
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append("device must be auto, cpu or cuda")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append("max_steps must be >= 1")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            problems.append("crop_scale must be (lo, hi) with 0 < lo <= hi <= 1")
        if self.subset not in ("train", "test"):
            problems.append("subset must be train or test")
        return problems

    def clip_spec(self) -> ClipSpec:
        """The backbone's default spec with the ``frames``/``frame_step``/``crop``/``resize`` overrides."""
        from training.models.defaults import default_clip_spec

        base = default_clip_spec(self.arch)
        changes: dict[str, Any] = {}
        if self.frames is not None:
            changes["frames_per_clip"] = self.frames
        if self.frame_step is not None:
            changes["frame_step"], changes["target_fps"] = self.frame_step, None
        if self.crop is not None:
            changes["crop_size"] = self.crop
            if self.resize is None and base.resize_size < self.crop:
                changes["resize_size"] = self.crop
        if self.resize is not None:
            changes["resize_size"] = self.resize
        return dataclasses.replace(base, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["crop_scale"] = list(self.crop_scale)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown training config key(s) {unknown}; valid: {sorted(names)}")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` (None values are ignored: "flag not given")."""
        given = {k: v for k, v in changes.items() if v is not None}
        if "method_args" in given:
            given["method_args"] = {**self.method_args, **given["method_args"]}
        return TrainConfig.from_dict({**self.to_dict(), **given})


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML (``.yaml``/``.yml``) or TOML (``.toml``) file as a dict."""
    path = Path(path)
    text = path.read_text()
    if path.suffix == ".toml":
        import tomllib

        data = tomllib.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a training config must be a mapping, got {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Defaults < file ``path`` < ``overrides`` (None values ignored), validated."""
    data: dict[str, Any] = read_config_file(path) if path else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    if "method_args" in given:
        given["method_args"] = {**dict(data.get("method_args") or {}), **given["method_args"]}
    return TrainConfig.from_dict({**data, **given})


def write_config(config: TrainConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    tmp.replace(path)
    return path


def parse_set(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> dict, values parsed as YAML scalars (``0.2``, ``true``, ``[1, 2]``)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return out
