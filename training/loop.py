"""The training loop: data, optimiser, schedule, AMP, logging, checkpoints, exact resume.

One function, :func:`train`, runs a :class:`~training.config.TrainConfig` on one CPU, one GPU
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

import csv
import logging
import math
import random
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.config import TrainConfig, write_config
from training.distributed import (
    DistInfo,
    ResumableSampler,
    all_reduce_sum,
    any_rank,
    barrier,
    broadcast_state,
    init_distributed,
    wrap_ddp,
)

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"


class TrainError(ValueError):
    """A training run cannot start (bad data folder, batch larger than the data set, ...)."""


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
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


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


def rng_state() -> dict[str, Any]:
    """Global RNG states as plain containers and tensors (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


class _Metrics:
    """``metrics.csv`` (+ TensorBoard when installed), rank 0 only."""

    def __init__(self, out: Path, resume_step: int, enabled: bool) -> None:
        self.enabled = enabled
        self.path = out / "metrics.csv"
        self.fields: list[str] | None = None
        self.tb = None
        if not enabled:
            return
        if self.path.exists():
            # a killed run may have logged past its last checkpoint: drop those rows
            with self.path.open(newline="") as f:
                rows = list(csv.DictReader(f))
            rows = [r for r in rows if int(r.get("step", 0)) <= resume_step] if resume_step else []
            if rows:
                self.fields = list(rows[0])
            with self.path.open("w", newline="") as f:
                if rows:
                    w = csv.DictWriter(f, fieldnames=self.fields)
                    w.writeheader()
                    w.writerows(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:  # tensorboard is optional
            self.tb = None

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        new = self.fields is None
        if new:
            self.fields = list(row)
        elif any(k not in self.fields for k in row):
            # a column appears later (the kNN monitor's first row is step 0, before any loss):
            # rewrite the small file under the widened header so no value is dropped
            assert self.fields is not None
            self.fields += [k for k in row if k not in self.fields]
            with self.path.open(newline="") as f:
                old = list(csv.DictReader(f))
            with self.path.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.fields)
                w.writeheader()
                w.writerows(old)
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "epoch") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"train/{k}", v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _device(config: TrainConfig) -> str | None:
    if config.device == "auto":
        return None
    if config.device == "cuda" and not torch.cuda.is_available():
        raise TrainError("device cuda requested but torch.cuda.is_available() is False")
    return config.device


def _init_backbone(backbone: nn.Module, config: TrainConfig) -> None:
    """Load ``config.init`` (any format ``training.checkpoint_import.import_checkpoint`` reads) into ``backbone``."""
    from training.checkpoint_import import import_checkpoint

    try:
        imported = import_checkpoint(config.init, arch=config.arch)
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


def _load_pairs(config: TrainConfig, items: Any) -> torch.Tensor:
    """The paired vectors of ``items`` from ``--set pair_features=FILE.npz`` (CrossCLR)."""
    from training.data.dataset import paired_features

    path = config.method_args.get("pair_features")
    if not path:
        raise TrainError(f"method {config.method} needs paired features: --set pair_features=FILE.npz "
                         "(keys: video paths relative to --data, values: 1-D float arrays)")
    try:
        return paired_features(path, items, config.data)
    except (OSError, ValueError) as exc:
        raise TrainError(f"pair_features: {exc}") from exc


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
        return _run(config, info, resume=resume, progress=progress)
    finally:
        torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)


def _run(config: TrainConfig, info: DistInfo, *, resume: bool, progress: bool) -> TrainResult:
    from training.checkpoint import load_checkpoint, save_checkpoint
    from training.data.dataset import ClipDataset, collate_skip_none, to_float_clips
    from training.methods import create_method, method_class
    from training.models import create_backbone

    device = info.device
    out = Path(config.out)
    ckpt_path = out / CHECKPOINT_NAME

    items, classes = _load_items(config, with_classes=True)
    uses_labels = bool(getattr(method_class(config.method), "uses_labels", False))
    if uses_labels:  # supervised fine-tuning: the classifier size comes from the layout
        if not classes or any(it.label < 0 for it in items):
            raise TrainError(f"method {config.method} needs labels: give a class-folder or UCF101/HMDB51 split layout")
        config = replace(config, method_args={"num_classes": len(classes), **config.method_args})
    pairs = _load_pairs(config, items) if getattr(method_class(config.method), "uses_pairs", False) else None
    uses_video_ids = bool(getattr(method_class(config.method), "uses_video_ids", False))
    if pairs is not None:  # CrossCLR: the second modality's head size comes from the file
        config = replace(config, method_args={"pair_dim": int(pairs.shape[1]), **config.method_args})
    spec = config.clip_spec()
    backbone = create_backbone(config.arch)
    if config.init and not resume:
        _init_backbone(backbone, config)
    method = create_method(config.method, backbone=backbone, spec=spec, seed=config.seed, **config.method_args)
    method.to(device)

    flip = _use_flip(config)
    dataset = ClipDataset(items, spec, method.views, crop_scale=config.crop_scale, flip=flip, seed=config.seed,
                          cache_frames=config.cache_frames)
    sampler = ResumableSampler(dataset, num_replicas=info.world_size, rank=info.rank, seed=config.seed)
    steps_per_epoch = len(sampler) // config.batch_size
    if steps_per_epoch < 1:
        raise TrainError(
            f"{len(items)} videos make no full batch of {config.batch_size} x {info.world_size} process(es); "
            "lower --batch-size or add videos"
        )
    total_steps = config.epochs * steps_per_epoch
    params = [p for p in method.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, config)
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _LRLambda(total_steps, warmup, config.schedule))
    use_amp = bool(config.amp and device.type == "cuda")
    scaler = torch.amp.GradScaler("cuda") if use_amp else None

    epoch, batches_done, global_step, skipped_before = 0, 0, 0, 0
    if resume:
        ckpt = load_checkpoint(ckpt_path)
        method.load_state_dict(ckpt["method_state"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        epoch, batches_done = int(ckpt["epoch"]), int(ckpt["batches_done"])
        global_step, skipped_before = int(ckpt["global_step"]), int(ckpt.get("skipped", 0))
        if int(ckpt.get("world_size", 1)) != info.world_size:
            log.warning("resuming a %s-process run with %s processes: data order differs",
                        ckpt.get("world_size"), info.world_size)
        set_rng_state(ckpt["rng"][min(info.rank, len(ckpt["rng"]) - 1)])

    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_config(config, out / "config.yaml")
    model = wrap_ddp(method, info)
    metrics = _Metrics(out, global_step if resume else 0, info.is_main)
    skipped = 0
    last_ckpt: Path | None = ckpt_path if resume else None

    def save(path: Path, *, at_epoch: int, at_batch: int) -> Path:
        # every rank contributes its RNG state; rank 0 writes
        states = [rng_state()]
        if info.distributed:
            gathered: list[Any] = [None] * info.world_size
            torch.distributed.all_gather_object(gathered, states[0])
            states = gathered
        total_skipped = skipped_before + int(all_reduce_sum(skipped, device))
        if info.is_main:
            save_checkpoint(
                path, model=method.backbone, arch=config.arch, method=config.method, clip_spec=spec,
                config=config.to_dict(),
                extra={
                    "method_state": method.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "epoch": at_epoch, "batches_done": at_batch, "global_step": global_step,
                    "skipped": total_skipped, "world_size": info.world_size, "rng": states,
                },
            )
        barrier()
        return path

    monitor = _monitor(config, spec) if info.is_main else None
    knn: float | None = None
    if monitor is not None and global_step == 0:
        knn = _knn(monitor, method, device)
        metrics.write({"step": 0, "epoch": 0, "knn_top1": knn})

    bar = None
    if progress and info.is_main:
        from tqdm import tqdm

        bar = tqdm(total=total_steps if config.max_steps is None else min(total_steps, config.max_steps),
                   initial=global_step, desc=f"{config.method}", unit="step", dynamic_ncols=True, file=sys.stderr)
    stopped_by: str | None = None
    limit = total_steps if config.max_steps is None else min(total_steps, config.max_steps)
    t_last, clips_since = time.perf_counter(), 0
    window: dict[str, float] = {}  # sums of the logged scalars since the last log line
    window_steps = 0
    with _StopFlag() as stop:
        while epoch < config.epochs and global_step < limit and stopped_by is None:
            dataset.set_epoch(epoch)
            sampler.set_epoch(epoch)
            sampler.skip = batches_done * config.batch_size
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=config.batch_size, sampler=sampler, num_workers=config.workers,
                collate_fn=collate_skip_none, drop_last=True, pin_memory=device.type == "cuda",
                worker_init_fn=_worker_init if config.workers > 0 else None,
                multiprocessing_context="spawn" if config.workers > 0 else None,
            )
            for batch in loader:
                batches_done += 1
                skipped += int(batch["skipped"])
                clips = batch["clips"]
                n = clips.shape[0] if clips.ndim == 6 else 0
                if info.distributed:  # gathers need equal batch sizes on every rank
                    n = _min_over_ranks(n, device)
                if n >= 2:
                    x = to_float_clips(clips[:n].to(device, non_blocking=True), spec)
                    inputs: dict[str, torch.Tensor] = {}  # what the method takes besides the clips
                    if uses_labels:
                        inputs["labels"] = batch["label"][:n].to(device)
                    if pairs is not None:
                        inputs["pairs"] = pairs[batch["index"][:n]].to(device)
                    if uses_video_ids:  # the data set index identifies the video
                        inputs["video_ids"] = batch["index"][:n].to(device)
                    with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                        result = model(x, global_step, **inputs)
                    loss = result["loss"]
                    if not torch.isfinite(loss.detach()):
                        raise FloatingPointError(f"loss is {loss.item()} at step {global_step}")
                    optimizer.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        loss.backward()
                        optimizer.step()
                    lr_used = optimizer.param_groups[0]["lr"]
                    scheduler.step()
                    global_step += 1
                    clips_since += n * info.world_size
                    for key, value in result.items():
                        window[key] = window.get(key, 0.0) + float(value.detach())
                    window_steps += 1
                    if bar is not None:
                        bar.update(1)
                    evaluated = monitor is not None and (global_step % config.eval_every == 0 or global_step == limit)
                    if evaluated:
                        knn = _knn(monitor, method, device)
                    if global_step % config.log_every == 0 or global_step == limit or evaluated:
                        now = time.perf_counter()
                        rate = clips_since / max(now - t_last, 1e-9)
                        t_last, clips_since = now, 0
                        row = {"step": global_step, "epoch": epoch, "lr": lr_used,
                               "clips_per_s": round(rate, 3)}
                        # the mean over the window: one batch's loss is too noisy to read a curve from
                        row.update({k: total / window_steps for k, total in window.items()})
                        window, window_steps = {}, 0
                        if evaluated:
                            row["knn_top1"] = knn
                        metrics.write(row)
                        if bar is not None:
                            shown = {"loss": f"{row['loss']:.4f}", "clips_s": f"{rate:.1f}"}
                            if knn is not None:
                                shown["knn"] = f"{knn:.3f}"
                            bar.set_postfix(shown)
                else:
                    log.warning("step skipped: fewer than 2 readable videos in the batch")
                signalled = any_rank(stop.signal is not None, device)
                if signalled:
                    stopped_by = stop.signal or "signal"
                elif global_step >= limit and limit < total_steps:
                    stopped_by = "max_steps"
                if stopped_by is not None:
                    break
                if config.save_every and global_step % config.save_every == 0 and n >= 2:
                    last_ckpt = save(ckpt_path, at_epoch=epoch, at_batch=batches_done)
            if stopped_by is None:
                epoch, batches_done = epoch + 1, 0
                broadcast_state(method)  # rank 0's BN statistics for everyone before saving
                last_ckpt = save(ckpt_path, at_epoch=epoch, at_batch=0)
                if config.keep_epochs and info.is_main:
                    import shutil

                    shutil.copyfile(ckpt_path, out / f"epoch_{epoch:03d}.pt")
            else:
                broadcast_state(method)
                last_ckpt = save(ckpt_path, at_epoch=epoch, at_batch=batches_done)
    if bar is not None:
        bar.close()
    metrics.close()
    total_skipped = skipped_before + int(all_reduce_sum(skipped, device))
    if info.is_main:
        if total_skipped:
            log.warning("%d unreadable video(s) were skipped", total_skipped)
    return TrainResult(out=out, checkpoint=last_ckpt, epoch=epoch, global_step=global_step,
                       skipped=total_skipped, stopped_by=stopped_by, method=method)


def _min_over_ranks(n: int, device: torch.device) -> int:
    t = torch.tensor([n], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
    return int(t.item())
