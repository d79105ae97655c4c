"""The training loop: data, optimiser, schedule, AMP, logging, checkpoints, exact resume.

One function, :func:`train`, runs a :class:`~training.config.TrainConfig` (its parts in
:mod:`training.run`) on one CPU, one GPU
or under ``torchrun`` (DDP). Per step::

    uint8 clips (DataLoader workers) -> float [0, 1] -> method.training_step (colour
    augmentation, normalisation, forward, loss) -> backward -> optimiser + LR schedule step

Checkpoints (rank 0): ``OUT/checkpoint.pt`` (latest) at every epoch end, every
``save_every`` steps, at ``max_steps`` and on SIGTERM/SIGINT (the current step finishes, then
the run saves and returns); ``OUT/epoch_NNN.pt`` at epoch ends. ``model`` holds the backbone
(what ``vcl-export`` reads); ``extra`` holds the method's whole ``state_dict`` (heads, key
encoder, queue), optimiser, scheduler, AMP scaler, position (epoch, batches done in the
epoch, global step) and RNG states.

Exact resume: everything random is a function of the seed and the position, never of what
ran before in this process: the sample order of epoch ``e`` comes from ``seed + e``, a
video's crops from ``(seed, e, index)``, the step's augmentation from ``(seed, step, rank)``.
A resumed run skips the batches its epoch already consumed and continues with identical
state, so it ends with exactly the weights of an uninterrupted run (on CPU; on CUDA up to
non-deterministic kernels).
"""

from __future__ import annotations

import logging
import math
import random
import signal
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.config import TrainConfig
from training.distributed import DistInfo, init_distributed
from training.errors import TrainError
from training.rng import rng_state, seed_everything, set_rng_state

__all__ = ["CHECKPOINT_NAME", "TrainError", "TrainResult", "rng_state", "set_rng_state", "train"]

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"




@dataclass
class TrainResult:
    """What a run did.

    Attributes:
        out: run folder.
        checkpoint: the latest checkpoint written (None if none was).
        epoch: epochs completed.
        global_step: optimiser steps taken in total.
        skipped: videos skipped as unreadable (all ranks, this process's run only).
        stopped_by: ``"SIGTERM"`` / ``"SIGINT"`` when a signal stopped the run, ``"max_steps"``
            when the step budget did, None when all epochs ran.
        method: the trained method module (on its device).
    """

    out: Path
    checkpoint: Path | None
    epoch: int
    global_step: int
    skipped: int
    stopped_by: str | None
    method: nn.Module


# ---------------------------------------------------------------------------------- pieces
def resolve_config(config: TrainConfig) -> TrainConfig:
    """Fill the optimiser fields the config leaves None with the method's paper values."""
    from training.methods import method_class

    defaults = method_class(config.method).optim_defaults
    return replace(
        config,
        optimizer=config.optimizer or defaults["optimizer"],
        lr=config.lr if config.lr is not None else defaults["lr"],
        weight_decay=config.weight_decay if config.weight_decay is not None else defaults["weight_decay"],
    )


def build_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """The config's optimiser over ``params``; ``config`` must have been through :func:`resolve_config`."""
    lr, weight_decay = config.lr, config.weight_decay
    if lr is None or weight_decay is None:
        raise ValueError("build_optimizer needs lr and weight_decay: pass the config through resolve_config first")
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """LR multiplier at ``step``: linear warm-up, then cosine to 0 over the rest (or constant)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "none":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class _LRLambda:
    """Picklable-free callable for ``LambdaLR`` (its state is not saved: it is config)."""

    def __init__(self, total_steps: int, warmup_steps: int, schedule: str) -> None:
        self.total_steps, self.warmup_steps, self.schedule = total_steps, warmup_steps, schedule

    def __call__(self, step: int) -> float:
        return lr_factor(step, total_steps=self.total_steps, warmup_steps=self.warmup_steps, schedule=self.schedule)


def _worker_init(_: int) -> None:
    # Ctrl-C reaches the whole process group: workers ignore it and the main process stops
    # cleanly; one thread per worker avoids oversubscribing the cores.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


class _StopFlag:
    """SIGTERM / SIGINT set a flag; the loop finishes its step, saves, and returns."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handlers, no graceful stop
                pass
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _device(config: TrainConfig) -> str | None:
    if config.device == "auto":
        return None
    if config.device == "cuda" and not torch.cuda.is_available():
        raise TrainError("device cuda requested but torch.cuda.is_available() is False")
    return config.device


def _init_backbone(backbone: nn.Module, init: str, config: TrainConfig) -> None:
    """Load ``init`` (``config.init``: any format ``training.checkpoint_import.import_checkpoint`` reads)
    into ``backbone``."""
    from training.checkpoint_import import import_checkpoint

    try:
        imported = import_checkpoint(init, arch=config.arch)
        backbone.load_state_dict(imported.state_dict, strict=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise TrainError(f"--init {config.init}: cannot initialise a {config.arch} backbone: {exc}") from exc
    log.info("backbone initialised from %s (%s, %s)", config.init, imported.source_format, imported.method)


def _load_items(config: TrainConfig, *, with_classes: bool = False) -> Any:
    from training.data.layouts import load_layout

    path = Path(config.data)
    if not path.exists():
        raise TrainError(f"data path {path} does not exist")
    try:
        items, _classes = load_layout(path, split=config.split, subset=config.subset)
    except (OSError, ValueError) as exc:
        raise TrainError(f"cannot read data layout {path}: {exc}") from exc
    if not items:
        raise TrainError(f"no videos found under {path} (subset {config.subset!r}, split {config.split})")
    return (items, _classes) if with_classes else items


def _monitor(config: TrainConfig, spec: Any) -> Any:
    """The kNN monitor of ``--eval-data`` (None without it)."""
    if not config.eval_data:
        return None
    from training.monitor import KnnMonitor

    try:
        return KnnMonitor(config.eval_data, spec, split=config.split)
    except (OSError, ValueError) as exc:
        raise TrainError(f"--eval-data {config.eval_data}: {exc}") from exc


def _knn(monitor: Any, method: nn.Module, device: torch.device) -> float:
    """kNN top-1 of the method's backbone, drawing nothing from the global RNGs (exact resume)."""
    with torch.random.fork_rng(devices=[]):
        state = np.random.get_state(), random.getstate()
        try:
            return monitor.evaluate(method.backbone, device)
        finally:
            np.random.set_state(state[0])
            random.setstate(state[1])


def _use_flip(config: TrainConfig) -> bool:
    """``config.flip``, or when None: on unless a mirror changes the data set's classes."""
    from training.data.synthetic import flip_changes_class

    if config.flip is not None:
        return bool(config.flip)
    if flip_changes_class(config.data):
        log.info("horizontal flip off: a mirror turns classes of %s into each other (set flip=true to force)",
                 config.data)
        return False
    return True


# ------------------------------------------------------------------------------------ train
def train(config: TrainConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Run (or resume) the training described by ``config``; see the module docstring.

    Args:
        config: the run; optimiser fields left None get the method's paper values.
        resume: continue from ``OUT/checkpoint.pt`` (error if missing).
        progress: show a tqdm bar (rank 0).

    Raises:
        TrainError: the run cannot start (no videos, batch too large, no checkpoint to resume).
        KeyError / ValueError: unknown method or backbone, invalid hyperparameter.
    """
    config = resolve_config(config)
    info: DistInfo = init_distributed(_device(config))
    device = info.device
    out = Path(config.out)
    ckpt_path = out / CHECKPOINT_NAME
    if resume and not ckpt_path.is_file():
        raise TrainError(f"--resume: no checkpoint at {ckpt_path}")

    seed_everything(config.seed)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        from training.run import run

        return run(config, info, resume=resume, progress=progress)
    finally:
        torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)


