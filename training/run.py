"""One training run, split into its parts: setup, resume, the step, logging, saving, stopping.

:func:`training.loop.train` calls :func:`run`. Nothing here knows a method: a method declares
the per-item inputs it needs (``batch_keys``) and builds them from the data set
(``prepare``); the loop indexes them with each batch's item indices and hands the method a
dict batch ``{"clips": ..., **inputs}``.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from training.config import TrainConfig, write_config
from training.distributed import (
    DistInfo,
    ResumableSampler,
    all_reduce_sum,
    any_rank,
    barrier,
    broadcast_state,
    wrap_ddp,
)
from training.errors import TrainError
from training.loop import (
    CHECKPOINT_NAME,
    TrainResult,
    _init_backbone,
    _knn,
    _load_items,
    _LRLambda,
    _monitor,
    _StopFlag,
    _use_flip,
    _worker_init,
    build_optimizer,
)
from training.metrics_log import MetricsLog
from training.rng import rng_state, set_rng_state

if TYPE_CHECKING:
    from training.methods.base import Method

log = logging.getLogger(__name__)


@dataclass
class Setup:
    """Everything a run builds before its first step (fixed for the run)."""

    config: TrainConfig
    spec: Any  # the config's ClipSpec
    method: Method[Any]
    inputs: dict[str, torch.Tensor]  # per-item tensors from the method's ``prepare``
    dataset: Any
    sampler: ResumableSampler
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: Any
    total_steps: int
    limit: int  # the last step this run may take (``max_steps`` or the schedule's end)


@dataclass
class Position:
    """Where the run stands (saved in every checkpoint)."""

    epoch: int = 0
    batches_done: int = 0
    global_step: int = 0
    skipped_before: int = 0  # unreadable videos counted by earlier processes of this run
    skipped: int = 0  # ... and by this one, this rank


@dataclass
class Window:
    """Sums of the logged scalars since the last log line, and the clip rate's clock."""

    sums: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    clips: int = 0
    since: float = field(default_factory=time.perf_counter)


def _prepared_method(
    config: TrainConfig, resume: bool
) -> tuple[TrainConfig, Method[Any], list[Any], dict[str, torch.Tensor]]:
    """Items, the method's ``prepare`` applied to the config, and the built method."""
    from training.methods import create_method, method_class
    from training.models import create_backbone

    items, classes = _load_items(config, with_classes=True)
    cls = method_class(config.method)
    prepared = cls.prepare(config, items, classes)
    if set(prepared.inputs) != set(cls.batch_keys):
        raise TrainError(f"method {config.method}: prepare built inputs {sorted(prepared.inputs)}, "
                         f"batch_keys declares {sorted(cls.batch_keys)}")
    config = replace(config, method_args={**prepared.hparams, **config.method_args})
    backbone = create_backbone(config.arch)
    if config.init and not resume:
        _init_backbone(backbone, config.init, config)
    method = create_method(config.method, backbone=backbone, spec=config.clip_spec(), seed=config.seed,
                           **config.method_args)
    return config, method, items, prepared.inputs


def build(config: TrainConfig, info: DistInfo, resume: bool) -> Setup:
    """Method, data set, sampler, optimiser, schedule and AMP scaler of ``config``."""
    from training.data.dataset import ClipDataset

    config, method, items, inputs = _prepared_method(config, resume)
    method.to(info.device)
    dataset = ClipDataset(items, config.clip_spec(), method.views, crop_scale=config.crop_scale,
                          flip=_use_flip(config), seed=config.seed, cache_frames=config.cache_frames)
    sampler = ResumableSampler(dataset, num_replicas=info.world_size, rank=info.rank, seed=config.seed)
    steps_per_epoch = len(sampler) // config.batch_size
    if steps_per_epoch < 1:
        raise TrainError(
            f"{len(items)} videos make no full batch of {config.batch_size} x {info.world_size} process(es); "
            "lower --batch-size or add videos"
        )
    total_steps = config.epochs * steps_per_epoch
    optimizer = build_optimizer([p for p in method.parameters() if p.requires_grad], config)
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _LRLambda(total_steps, warmup, config.schedule))
    use_amp = bool(config.amp and info.device.type == "cuda")
    limit = total_steps if config.max_steps is None else min(total_steps, config.max_steps)
    return Setup(config=config, spec=config.clip_spec(), method=method, inputs=inputs, dataset=dataset, sampler=sampler,
                 optimizer=optimizer, scheduler=scheduler, scaler=torch.amp.GradScaler("cuda") if use_amp else None,
                 total_steps=total_steps, limit=limit)


def restore(setup: Setup, path: Path, info: DistInfo) -> Position:
    """Load the method, optimiser, schedule, scaler, position and this rank's RNG from ``path``."""
    from training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    setup.method.load_state_dict(ckpt["method_state"])
    setup.optimizer.load_state_dict(ckpt["optimizer"])
    setup.scheduler.load_state_dict(ckpt["scheduler"])
    if setup.scaler is not None and ckpt.get("scaler"):
        setup.scaler.load_state_dict(ckpt["scaler"])
    if int(ckpt.get("world_size", 1)) != info.world_size:
        log.warning("resuming a %s-process run with %s processes: data order differs",
                    ckpt.get("world_size"), info.world_size)
    set_rng_state(ckpt["rng"][min(info.rank, len(ckpt["rng"]) - 1)])
    return Position(epoch=int(ckpt["epoch"]), batches_done=int(ckpt["batches_done"]),
                    global_step=int(ckpt["global_step"]), skipped_before=int(ckpt.get("skipped", 0)))


class Run:
    """The epoch and step loop of one :class:`Setup`, with its logging, saving and stopping."""

    def __init__(self, setup: Setup, info: DistInfo, pos: Position, *, resumed: bool, progress: bool) -> None:
        self.s, self.info, self.pos = setup, info, pos
        self.config = setup.config
        self.out = Path(self.config.out)
        self.ckpt_path = self.out / CHECKPOINT_NAME
        self.model = wrap_ddp(setup.method, info)
        self.metrics = MetricsLog(self.out, pos.global_step if resumed else 0, info.is_main)
        self.last_ckpt: Path | None = self.ckpt_path if resumed else None
        self.stopped_by: str | None = None
        self.window = Window()
        self.monitor = _monitor(self.config, setup.spec) if info.is_main else None
        self.knn: float | None = None
        self.bar = self._progress_bar() if progress and info.is_main else None

    def _progress_bar(self) -> Any:
        from tqdm import tqdm

        return tqdm(total=self.s.limit, initial=self.pos.global_step, desc=self.config.method, unit="step",
                    dynamic_ncols=True, file=sys.stderr)

    # ---------------------------------------------------------------------------- saving
    def save(self, *, at_batch: int) -> None:
        """Checkpoint at the current position (every rank gives its RNG state; rank 0 writes)."""
        from training.checkpoint import save_checkpoint

        s, info, pos = self.s, self.info, self.pos
        states = [rng_state()]
        if info.distributed:
            gathered: list[Any] = [None] * info.world_size
            torch.distributed.all_gather_object(gathered, states[0])
            states = gathered
        skipped = self.total_skipped()  # a collective: every rank must call it, not only rank 0
        if info.is_main:
            save_checkpoint(
                self.ckpt_path, model=s.method.backbone, arch=self.config.arch, method=self.config.method,
                clip_spec=s.spec, config=self.config.to_dict(),
                extra={
                    "method_state": s.method.state_dict(), "optimizer": s.optimizer.state_dict(),
                    "scheduler": s.scheduler.state_dict(),
                    "scaler": s.scaler.state_dict() if s.scaler is not None else None,
                    "epoch": pos.epoch, "batches_done": at_batch, "global_step": pos.global_step,
                    "skipped": skipped, "world_size": info.world_size, "rng": states,
                },
            )
        barrier()
        self.last_ckpt = self.ckpt_path

    def total_skipped(self) -> int:
        return self.pos.skipped_before + int(all_reduce_sum(self.pos.skipped, self.info.device))

    # ------------------------------------------------------------------------------ loop
    def run(self) -> TrainResult:
        """Train to the end of the schedule, ``max_steps`` or a signal; see :mod:`training.loop`."""
        if self.monitor is not None and self.pos.global_step == 0:
            self.knn = _knn(self.monitor, self.s.method, self.info.device)
            self.metrics.write({"step": 0, "epoch": 0, "knn_top1": self.knn})
        pos = self.pos
        with _StopFlag() as stop:
            while pos.epoch < self.config.epochs and pos.global_step < self.s.limit and self.stopped_by is None:
                self.epoch(stop)
                broadcast_state(self.s.method)  # rank 0's BN statistics for everyone before saving
                if self.stopped_by is None:
                    pos.epoch, pos.batches_done = pos.epoch + 1, 0
                    self.save(at_batch=0)
                    if self.config.keep_epochs and self.info.is_main:
                        shutil.copyfile(self.ckpt_path, self.out / f"epoch_{pos.epoch:03d}.pt")
                else:
                    self.save(at_batch=pos.batches_done)
        if self.bar is not None:
            self.bar.close()
        self.metrics.close()
        total_skipped = self.total_skipped()
        if self.info.is_main and total_skipped:
            log.warning("%d unreadable video(s) were skipped", total_skipped)
        return TrainResult(out=self.out, checkpoint=self.last_ckpt, epoch=pos.epoch, global_step=pos.global_step,
                           skipped=total_skipped, stopped_by=self.stopped_by, method=self.s.method)

    def loader(self) -> torch.utils.data.DataLoader:
        """This epoch's loader, skipping the batches a resumed epoch already consumed."""
        from training.data.dataset import collate_skip_none

        config, pos = self.config, self.pos
        self.s.dataset.set_epoch(pos.epoch)
        self.s.sampler.set_epoch(pos.epoch)
        self.s.sampler.skip = pos.batches_done * config.batch_size
        return torch.utils.data.DataLoader(
            self.s.dataset, batch_size=config.batch_size, sampler=self.s.sampler, num_workers=config.workers,
            collate_fn=collate_skip_none, drop_last=True, pin_memory=self.info.device.type == "cuda",
            worker_init_fn=_worker_init if config.workers > 0 else None,
            multiprocessing_context="spawn" if config.workers > 0 else None,
        )

    def epoch(self, stop: _StopFlag) -> None:
        """One epoch (or its rest); sets ``stopped_by`` when a signal or ``max_steps`` ends the run."""
        pos = self.pos
        for raw in self.loader():
            pos.batches_done += 1
            pos.skipped += int(raw["skipped"])
            n = self.usable(raw)
            if n >= 2:
                self.step(self.batch(raw, n), n)
            else:
                log.warning("step skipped: fewer than 2 readable videos in the batch")
            if any_rank(stop.signal is not None, self.info.device):
                self.stopped_by = stop.signal or "signal"
            elif pos.global_step >= self.s.limit and self.s.limit < self.s.total_steps:
                self.stopped_by = "max_steps"
            if self.stopped_by is not None:
                return
            if self.config.save_every and pos.global_step % self.config.save_every == 0 and n >= 2:
                self.save(at_batch=pos.batches_done)

    def usable(self, raw: dict[str, torch.Tensor]) -> int:
        """How many of the batch's clips this step uses (the minimum over ranks under DDP)."""
        clips = raw["clips"]
        n = clips.shape[0] if clips.ndim == 6 else 0
        if self.info.distributed:  # gathers need equal batch sizes on every rank
            t = torch.tensor([n], dtype=torch.int64, device=self.info.device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
            n = int(t.item())
        return n

    def batch(self, raw: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
        """The method's dict batch: float clips plus the rows of its prepared inputs."""
        from training.data.dataset import to_float_clips

        device = self.info.device
        index = raw["index"][:n]
        batch = {key: table[index].to(device) for key, table in self.s.inputs.items()}
        batch["clips"] = to_float_clips(raw["clips"][:n].to(device, non_blocking=True), self.s.spec)
        return batch

    def step(self, batch: dict[str, torch.Tensor], n: int) -> None:
        """Forward, backward, optimiser and schedule step, then logging."""
        s, pos = self.s, self.pos
        with torch.autocast(self.info.device.type, dtype=torch.float16, enabled=s.scaler is not None):
            result = self.model(batch, pos.global_step)
        loss = result["loss"]
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(f"loss is {loss.item()} at step {pos.global_step}")
        s.optimizer.zero_grad(set_to_none=True)
        if s.scaler is not None:
            s.scaler.scale(loss).backward()
            s.scaler.step(s.optimizer)
            s.scaler.update()
        else:
            loss.backward()
            s.optimizer.step()
        lr_used = s.optimizer.param_groups[0]["lr"]
        s.scheduler.step()
        pos.global_step += 1
        self.window.clips += n * self.info.world_size
        for key, value in result.items():
            self.window.sums[key] = self.window.sums.get(key, 0.0) + float(value.detach())
        self.window.steps += 1
        if self.bar is not None:
            self.bar.update(1)
        self.after_step(lr_used)

    def after_step(self, lr_used: float) -> None:
        """kNN evaluation and the log line, when due."""
        step, limit = self.pos.global_step, self.s.limit
        evaluated = self.monitor is not None and (step % self.config.eval_every == 0 or step == limit)
        if evaluated:
            self.knn = _knn(self.monitor, self.s.method, self.info.device)
        if step % self.config.log_every == 0 or step == limit or evaluated:
            self.log_row(lr_used, evaluated)

    def log_row(self, lr_used: float, evaluated: bool) -> None:
        """One metrics row: the window's means (one batch's loss is too noisy to read a curve from)."""
        now = time.perf_counter()
        w = self.window
        rate = w.clips / max(now - w.since, 1e-9)
        row: dict[str, Any] = {"step": self.pos.global_step, "epoch": self.pos.epoch, "lr": lr_used,
                               "clips_per_s": round(rate, 3)}
        row.update({k: total / w.steps for k, total in w.sums.items()})
        self.window = Window(since=now)
        if evaluated:
            row["knn_top1"] = self.knn
        self.metrics.write(row)
        if self.bar is not None:
            shown = {"loss": f"{row['loss']:.4f}", "clips_s": f"{rate:.1f}"}
            if self.knn is not None:
                shown["knn"] = f"{self.knn:.3f}"
            self.bar.set_postfix(shown)


def run(config: TrainConfig, info: DistInfo, *, resume: bool, progress: bool) -> TrainResult:
    """Build the run of ``config``, restore it when resuming, write its config, train."""
    setup = build(config, info, resume)
    out = Path(setup.config.out)
    pos = restore(setup, out / CHECKPOINT_NAME, info) if resume else Position()
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_config(setup.config, out / "config.yaml")
    return Run(setup, info, pos, resumed=resume, progress=progress).run()
