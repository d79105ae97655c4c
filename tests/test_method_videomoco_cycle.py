"""VideoMoCo and CycleContrast methods: defaults, views, steps, gradient routing, state, CLI."""

from __future__ import annotations

import copy
import dataclasses
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from click.testing import CliRunner
from train_fixtures import TINY, synth_data  # noqa: F401

from training.checkpoint import load_checkpoint
from training.cli import main as train_main
from training.config import TrainConfig
from training.methods import create_method, list_methods, method_class, method_hparams
from training.models import create_backbone
from vcl_infer.clips.spec import ClipSpec

SPEC = ClipSpec(frames_per_clip=4, frame_step=2, resize_size=32, crop_size=32)
SMALL = {
    "videomoco": {"queue_size": 16},
    "cyclecontrast": {"queue_size": 16, "cycle_queue_size": 16, "support_size": 8},
}


def _method(name: str, **kw):
    torch.manual_seed(0)
    return create_method(
        name, backbone=create_backbone("r3d_small"), spec=SPEC, seed=0, **{**SMALL[name], **kw}
    )


def _clips(views: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(4, views, 3, 4, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_registered_with_paper_defaults():
    assert list_methods()["videomoco"] and list_methods()["cyclecontrast"]
    v = method_hparams("videomoco")
    assert (v.temperature, v.queue_size, v.momentum, v.mlp) == (0.07, 65536, 0.999, False)
    assert (v.decay, v.adversarial_weight, v.dropped_frames, v.adversarial_start_step) == (
        0.99999,
        100.0,
        None,
        0,
    )
    assert method_class("videomoco").optim_defaults["lr"] == 0.005
    c = method_hparams("cyclecontrast")
    assert (c.temperature, c.queue_size, c.cycle_queue_size, c.support_size) == (0.07, 65536, 81920, 16384)
    assert (c.cycle_weight, c.nn_temperature, c.mlp) == (0.1, None, True)
    assert method_class("cyclecontrast").num_views == 3
    spec32 = ClipSpec(frames_per_clip=32, frame_step=1, crop_size=112)
    m = create_method("videomoco", backbone=create_backbone("r3d_small"), spec=spec32, queue_size=8)
    assert m.num_dropped == 8  # official: 8 of 32 frames


@pytest.mark.parametrize(
    "name,bad,match",
    [
        ("videomoco", {"decay": 0.0}, "decay"),
        ("videomoco", {"decay": 1.01}, "decay"),
        ("videomoco", {"adversarial_weight": -1.0}, "adversarial_weight"),
        ("videomoco", {"dropped_frames": 0}, "dropped_frames"),
        ("videomoco", {"adversarial_start_step": -1}, "adversarial_start_step"),
        ("videomoco", {"symmetric": True}, "symmetric"),
        ("cyclecontrast", {"support_size": 81920}, "support_size"),
        ("cyclecontrast", {"cycle_queue_size": 16}, "support_size"),
        ("cyclecontrast", {"cycle_weight": -0.1}, "cycle_weight"),
        ("cyclecontrast", {"nn_temperature": 0.0}, "nn_temperature"),
    ],
)
def test_hyperparameter_validation(name, bad, match):
    with pytest.raises(ValueError, match=match):
        method_hparams(name, **bad)


def test_videomoco_rejects_dropping_every_frame():
    with pytest.raises(ValueError, match="dropped_frames < T"):
        _method("videomoco", dropped_frames=4)


def test_views():
    ts, rng = np.arange(80) / 25.0, np.random.default_rng(0)
    same = _method("videomoco").views(ts, rng)
    assert len(same) == 2 and np.array_equal(same[0].indices, same[1].indices)  # official: one clip, 2 crops
    distinct = _method("videomoco", same_clip=False).views(ts, rng)
    assert not np.array_equal(distinct[0].indices, distinct[1].indices)
    firsts = set()
    for seed in range(8):
        a, a2, c = _method("cyclecontrast").views(ts, np.random.default_rng(seed))
        assert np.array_equal(a.indices, a2.indices) and not np.array_equal(a.indices, c.indices)
        firsts.add(bool(a.indices[0] < c.indices[0]))
    assert firsts == {True, False}  # the candidate is before or after the query clip


@pytest.mark.parametrize("name", ["videomoco", "cyclecontrast"])
def test_step_gives_finite_loss_gradients_and_is_reproducible(name):
    m = _method(name)
    x = _clips(m.num_views)
    out = m.training_step(x, 3)
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad
    out["loss"].backward()
    grads = [p.grad for p in m.backbone.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    extra = m.frame_scorer if name == "videomoco" else m.cycle_head_q
    assert all(p.grad is not None for p in extra.parameters())
    assert all(p.grad is None for p in m.encoder_k.parameters())
    again = _method(name).training_step(x, 3)
    assert all(torch.equal(out[k].detach(), again[k].detach()) for k in out)
    with pytest.raises(ValueError, match="expected"):
        m.training_step(x[:, :1], 4)


@pytest.mark.parametrize("name", ["videomoco", "cyclecontrast"])
def test_state_dict_holds_queues_and_resumes_exactly(name):
    m = _method(name)
    m.training_step(_clips(m.num_views, 1), 0)
    state = copy.deepcopy(m.state_dict())
    if name == "videomoco":
        assert "queue.ages" in state and "frame_scorer.score.weight" in state
        assert int(state["queue.ages"].max()) == 1
    else:
        assert {"cycle_queue.keys", "cycle_queue.ptr", "cycle_queue.ids", "cycle_head_k.net.0.weight"} <= set(
            state
        )
    resumed = _method(name)
    resumed.load_state_dict(state)
    x = _clips(m.num_views, 2)
    assert torch.equal(m.training_step(x, 1)["loss"].detach(), resumed.training_step(x, 1)["loss"].detach())


def test_videomoco_ages_grow_per_step():
    m = _method("videomoco")
    for step in range(3):
        m.training_step(_clips(2, step), step)
    # 16 slots, 4 keys per step: keys of steps 2, 1, 0 have ages 1, 2, 3; the 4 untouched
    # initial keys started at 0 and aged once per step
    assert sorted(m.queue.ages.tolist()) == [1] * 4 + [2] * 4 + [3] * 8


def test_videomoco_encoder_gradient_ignores_the_adversarial_term():
    """The encoder gets d L_contrastive only; the generator also d(-w * L1) (official two optimisers)."""
    base = _method("videomoco")
    x = _clips(2, 5)

    def grads(weight: float) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        hp = dataclasses.replace(base.hparams, adversarial_weight=weight)
        m = type(base)(backbone=copy.deepcopy(base.backbone), spec=SPEC, hparams=hp, seed=0)
        m.load_state_dict(base.state_dict())
        m.training_step(x, 0)["loss"].backward()
        return [p.grad.clone() for p in m.encoder_q.parameters()], [
            p.grad.clone() for p in m.frame_scorer.parameters()
        ]

    enc0, gen0 = grads(0.0)
    enc1, gen1 = grads(1.0)
    enc100, gen100 = grads(100.0)
    for a, b in zip(enc0, enc100):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    assert any(not torch.allclose(a, b) for a, b in zip(gen0, gen100))
    for g0, g1, g100 in zip(gen0, gen1, gen100):  # linear in w: d(L_c - w L1) = d L_c - w d L1
        assert torch.allclose(g100 - g0, 100 * (g1 - g0), rtol=1e-3, atol=1e-6)


def test_videomoco_generator_idle_before_adversarial_start():
    m = _method("videomoco", adversarial_start_step=2)
    out = m.training_step(_clips(2), 1)
    out["loss"].backward()
    assert float(out["feature_l1"]) == 0.0
    assert all(p.grad is None for p in m.frame_scorer.parameters())
    out = m.training_step(_clips(2), 2)
    assert float(out["feature_l1"]) > 0.0


def test_cyclecontrast_video_ids_exclude_own_keys():
    m = _method("cyclecontrast")
    ids = torch.tensor([10, 11, 12, 13])
    m.training_step(_clips(3, 0), 0, video_ids=ids)
    assert sorted(m.cycle_queue.ids.tolist()) == [-1] * 12 + [10, 11, 12, 13]
    twin = copy.deepcopy(m)
    x = _clips(3, 1)
    with_ids = m.training_step(x, 1, video_ids=ids)
    without = twin.training_step(x, 1)
    assert torch.equal(with_ids["loss_moco"], without["loss_moco"])  # MoCo negatives are untouched
    assert not torch.allclose(with_ids["loss_cycle"], without["loss_cycle"])
    assert sorted(twin.cycle_queue.ids.tolist()) == [-1] * 12 + [10, 11, 12, 13]  # unknown ids: -1


@pytest.mark.slow
@pytest.mark.parametrize("name", ["videomoco", "cyclecontrast"])
def test_trains_and_exports(name, synth_data, tmp_path):  # noqa: F811
    from export.cli import main as export_main

    out = tmp_path / "run"
    sets = [arg for key, value in SMALL[name].items() for arg in ("--set", f"{key}={value}")]
    args = ["--method", name, "--data", str(synth_data), "--out", str(out), "--epochs", "1", *TINY, *sets]
    r = CliRunner().invoke(train_main, args)
    assert r.exit_code == 0, r.output
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["method"] == name and ckpt["global_step"] == 2
    if name == "cyclecontrast":  # the loop passes each clip's data set index as its video id
        ids = ckpt["method_state"]["cycle_queue.ids"]
        written = ids[ids >= 0]
        assert written.numel() == 8 and sorted(written.tolist()) == list(range(8))
    r = CliRunner().invoke(export_main, [str(out / "checkpoint.pt"), "--out", str(tmp_path / "m.onnx")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m.onnx").is_file()


@pytest.mark.parametrize("name", ["videomoco", "cyclecontrast"])
def test_dense_term_is_wired(name):
    m = _method(name, dense_weight=1.0)
    out = m.training_step(_clips(m.num_views), 0)
    assert torch.allclose(out["loss"], out["loss_global"] + out["loss_dense"])
    assert int(m.dense_queue.ptr) == 4


def _ddp_worker(rank: int, port: int, config: dict, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    from training.distributed import cleanup
    from training.loop import train

    result = train(TrainConfig(**config), progress=False)
    torch.save(
        {k: v.detach().cpu() for k, v in result.method.state_dict().items()}, Path(out_dir) / f"rank{rank}.pt"
    )
    cleanup()


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,extra",
    [
        ("videomoco", {"adversarial_start_step": 1}),
        ("cyclecontrast", {}),
    ],  # videomoco: idle, then adversarial
)
def test_two_ranks_end_identical(name, extra, synth_data, tmp_path):  # noqa: F811
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = dict(method=name, data=str(synth_data), arch="r3d_small", out=str(tmp_path / "run"), epochs=1,
                  batch_size=2, workers=0, frames=4, frame_step=2, crop=32, device="cpu",
                  method_args={**SMALL[name], **extra})  # fmt: skip
    mp.spawn(_ddp_worker, args=(port, config, str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["global_step"] == 2
