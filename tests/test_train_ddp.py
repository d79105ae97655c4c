"""Two-process DDP on the CPU (Gloo): both ranks end with identical weights, rank 0 saves."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from train_fixtures import synth_data  # noqa: F401

from training.checkpoint import load_checkpoint
from training.config import TrainConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, config: dict, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from training.distributed import cleanup
    from training.loop import train

    result = train(TrainConfig(**config), progress=False)
    torch.save({k: v.detach().cpu() for k, v in result.method.state_dict().items()},
               Path(out_dir) / f"rank{rank}.pt")
    cleanup()


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_two_ranks_end_identical(method, synth_data, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    config = dict(method=method, data=str(synth_data), arch="r3d_small", out=str(out), epochs=1, batch_size=2,
                  workers=0, frames=4, frame_step=2, crop=32, device="cpu",
                  method_args={"queue_size": 16} if method == "moco" else {})
    mp.spawn(_worker, args=(2, _free_port(), config, str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ckpt = load_checkpoint(out / "checkpoint.pt")
    # 8 train videos, 2 ranks x batch 2: 2 steps, each seeing 4 videos
    assert ckpt["global_step"] == 2 and ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    for k, v in ckpt["model"].items():
        assert torch.equal(v, a[f"backbone.{k}"]), k
    if method == "moco":  # both ranks enqueued the keys gathered from both: 2 steps x 4 keys
        assert int(a["queue.ptr"]) == (2 * 4) % 16


def _grad_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    from training.distributed import cleanup, gather_with_grad, init_distributed
    from training.losses.info_nce import info_nce_loss

    init_distributed("cpu")
    full = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(0))
    z = full[:, rank * 3 : (rank + 1) * 3].clone().requires_grad_(True)
    info_nce_loss(gather_with_grad(z[0]), gather_with_grad(z[1]), 0.1).backward()
    torch.save(z.grad, Path(out_dir) / f"grad{rank}.pt")
    cleanup()


def test_gather_with_grad_matches_the_single_process_gradient(tmp_path):
    """Each rank's slice gets world x its share of the global loss's gradient (DDP then averages)."""
    from training.losses.info_nce import info_nce_loss

    mp.spawn(_grad_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    full = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    info_nce_loss(full[0], full[1], 0.1).backward()
    for rank in range(2):
        got = torch.load(tmp_path / f"grad{rank}.pt", weights_only=True)
        torch.testing.assert_close(got / 2, full.grad[:, rank * 3 : (rank + 1) * 3])
