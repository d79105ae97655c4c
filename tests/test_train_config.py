"""TrainConfig: validation, files, overrides, --set parsing."""

from __future__ import annotations

import pytest

from training.config import TrainConfig, load_config, parse_set, write_config
from training.loop import resolve_config


def test_validation_names_the_problem():
    with pytest.raises(ValueError, match="data is required"):
        TrainConfig()
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(data="x", batch_size=0)
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(data="x", optimizer="lars")
    with pytest.raises(ValueError, match="unknown training config key"):
        TrainConfig.from_dict({"data": "x", "bogus": 1})


def test_file_then_flags(tmp_path):
    yml = tmp_path / "c.yaml"
    yml.write_text("method: moco\ndata: vids\nepochs: 3\nmethod_args: {queue_size: 64, temperature: 0.3}\n")
    cfg = load_config(yml, epochs=None, lr=0.5, method_args={"temperature": 0.1})
    assert (cfg.method, cfg.epochs, cfg.lr) == ("moco", 3, 0.5)
    assert cfg.method_args == {"queue_size": 64, "temperature": 0.1}
    toml = tmp_path / "c.toml"
    toml.write_text('method = "tclr"\ndata = "v"\nframes = 8\n')
    assert load_config(toml).clip_spec().frames_per_clip == 8
    write_config(cfg, tmp_path / "out" / "config.yaml")
    assert load_config(tmp_path / "out" / "config.yaml") == cfg


def test_method_optimizer_defaults_and_spec():
    cfg = resolve_config(TrainConfig(method="tclr", data="x"))
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay) == ("adam", 1e-3, 1e-9)
    cfg = resolve_config(TrainConfig(method="fame", data="x", lr=0.2))
    assert (cfg.optimizer, cfg.lr) == ("sgd", 0.2)
    spec = TrainConfig(data="x", arch="r3d_small", frames=4, crop=32).clip_spec()
    assert (spec.frames_per_clip, spec.crop_size) == (4, 32) and spec.resize_size >= 32


def test_parse_set():
    assert parse_set(["temperature=0.2", "symmetric=true", "name=abc"]) == {
        "temperature": 0.2, "symmetric": True, "name": "abc"}
    with pytest.raises(ValueError):
        parse_set(["novalue"])
