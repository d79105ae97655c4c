"""torchrun / DDP plumbing: process group from the environment, gathers, rank-0 helpers.

A single process (no ``WORLD_SIZE`` in the environment, or ``WORLD_SIZE=1``) runs without a
process group and every helper here is the identity, so the methods and the loop have one code
path. Under ``torchrun --nproc_per_node N`` each process reads ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE`` and joins a group (NCCL on CUDA, Gloo on the CPU).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``; ``device`` it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group described by ``RANK`` / ``WORLD_SIZE`` (torchrun), if any.

    Args:
        device: ``"cpu"``, ``"cuda"`` or None (CUDA when available).

    Returns:
        The :class:`DistInfo`; ``world_size == 1`` without torchrun.
    """
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if use_cuda:
        torch.cuda.set_device(local % torch.cuda.device_count())
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sends every rank the gradient of its own slice.

    Each rank computes the loss over the gathered batch, so the gradient of a rank's slice is
    the sum of the gradients all ranks computed for it (all-reduce, then take the slice).
    Written with all_reduce rather than reduce_scatter because Gloo lacks the latter.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.rank, ctx.world, ctx.n = dist.get_rank(), dist.get_world_size(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(ctx.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``B x ...`` per rank -> ``(world * B) x ...`` in rank order, differentiable (SimCLR)."""
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """``B x ...`` per rank -> ``(world * B) x ...`` in rank order, detached (MoCo keys)."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def broadcast_state(module: torch.nn.Module, src: int = 0) -> None:
    """Copy every parameter and buffer of ``module`` from rank ``src`` to all ranks."""
    if not is_distributed():
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=src)


def all_reduce_sum(value: float | int, device: torch.device) -> float:
    """Sum of a Python number over ranks."""
    if not is_distributed():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on any rank (a stop request seen by one rank stops all)."""
    return all_reduce_sum(1.0 if flag else 0.0, device) > 0


def wrap_ddp(module: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """Wrap ``module`` in DDP when distributed (identity otherwise).

    Buffers are not re-broadcast every forward (``forward_sync_buffers=False``): a MoCo queue is
    updated identically on every rank from gathered keys, and rank 0's BN statistics are
    broadcast once at the end of training (:func:`broadcast_state`) before it saves.
    """
    if not info.distributed:
        return module
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [info.device.index] if info.device.type == "cuda" else None
    # newer torch renames the flag; syncing once at init is harmless (same seed on all ranks)
    if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters:
        return DDP(module, device_ids=ids, forward_sync_buffers=False)
    return DDP(module, device_ids=ids, broadcast_buffers=False)


class ResumableSampler(torch.utils.data.distributed.DistributedSampler):
    """``DistributedSampler`` (order from ``seed + epoch``) that can start mid-epoch.

    Works without a process group too (``num_replicas=1, rank=0``), so a single process and
    ``torchrun`` share one code path. ``skip`` drops the first ``skip`` indices of this rank's
    order for the current epoch (a resumed run sets it to ``batches_done * batch_size``, then
    back to 0 for the next epoch), so a run resumed mid-epoch sees exactly the batches the
    uninterrupted run saw.
    """

    def __init__(self, dataset, *, num_replicas: int, rank: int, seed: int, shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.skip = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.skip :])

    def __len__(self) -> int:
        return max(self.num_samples - self.skip, 0)
