"""Linear evaluation with a frozen backbone, and the check that it stayed frozen."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from train_fixtures import synth_data  # noqa: F401

from training.checkpoint import save_checkpoint
from training.linear_eval import (
    FrozenBackboneError,
    LinearEvalConfig,
    check_frozen,
    evaluate_backbone,
    linear_eval,
    score_features,
    snapshot,
)
from training.models import create_backbone
from vcl_infer.clips.spec import ClipSpec

SPEC = ClipSpec(frames_per_clip=4, frame_step=2, resize_size=32, crop_size=32)
FAST = LinearEvalConfig(train_clips=1, test_clips=2, extract_batch_size=8)


def test_check_frozen_names_changed_bn_statistics():
    torch.manual_seed(0)
    net = create_backbone("r3d_small")
    before = snapshot(net)
    net.eval()
    with torch.no_grad():
        net(torch.randn(2, 3, 4, 32, 32))
    check_frozen(before, snapshot(net))  # eval mode: nothing changes
    net.train()
    with torch.no_grad():
        net(torch.randn(2, 3, 4, 32, 32))  # train mode updates BN running stats even without grad
    with pytest.raises(FrozenBackboneError) as err:
        check_frozen(before, snapshot(net))
    msg = str(err.value)
    assert "stem.1.running_mean" in msg and "stem.1.running_var" in msg and "num_batches_tracked" in msg
    assert "weight" not in msg.replace("num_batches_tracked", "")  # only buffers changed


def test_check_frozen_sees_one_weight_and_missing_keys():
    torch.manual_seed(0)
    net = create_backbone("r3d_small")
    before = snapshot(net)
    after = snapshot(net)
    after["layer4.0.conv1.0.weight"][0, 0, 0, 0, 0] += 1e-6
    del after["stem.0.weight"]
    with pytest.raises(FrozenBackboneError, match=r"layer4\.0\.conv1\.0\.weight.*missing: stem\.0\.weight"):
        check_frozen(before, after)


def test_torch_path_scores_features_with_the_runtime_probe_protocol():
    """vcl-train-eval's scores are vcl_infer.probe.classify.linear_evaluation's on the same clip vectors."""
    from vcl_infer.probe.classify import linear_evaluation

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 10)
    centres = 2.0 * rng.normal(size=(3, 16))
    train = (centres[y][:, None] + rng.normal(size=(30, 3, 16))).astype(np.float32)
    yt = np.repeat(np.arange(3), 6)
    test = (centres[yt][:, None] + 2.5 * rng.normal(size=(18, 5, 16))).astype(np.float32)
    feats = {"train": train, "train_labels": y, "test": test, "test_labels": yt}
    got = score_features(feats, LinearEvalConfig(seed=3))
    _, want = linear_evaluation(list(train), y, list(test), yt, mode="mean_probability", seed=3)
    assert got["top1"] == want["top1"] and got["confusion"] == want["confusion"]
    assert got["top1"] > 0.8  # separable classes are found
    _, one = linear_evaluation(list(train), y, list(test[:, 2:3]), yt, mode="mean_probability", seed=3)
    assert got["top1_1clip"] == one["top1"]  # the centre clip alone
    emb = score_features(feats, LinearEvalConfig(seed=3, mode="mean_embedding"))
    _, want_emb = linear_evaluation(list(train), y, list(test), yt, mode="mean_embedding", seed=3)
    assert emb["top1"] == want_emb["top1"]


def _items(root):
    from training.data.layouts import load_layout

    train, classes = load_layout(root, subset="train")
    test, _ = load_layout(root, subset="test")
    return train, test, classes


def test_evaluation_leaves_the_backbone_unchanged(synth_data):  # noqa: F811
    torch.manual_seed(0)
    net = create_backbone("r3d_small")
    net.train()  # evaluation must switch it to eval itself
    train, test, classes = _items(synth_data)
    before = snapshot(net)
    res = evaluate_backbone(net, SPEC, train, test, len(classes), FAST)
    check_frozen(before, snapshot(net))
    assert res["frozen_check"] == "passed" and net.training
    assert all(p.requires_grad for p in net.parameters())  # flags restored
    assert res["features"]["test"].shape == (len(test), 2, net.embed_dim)
    assert 0.0 <= res["top1"] <= 1.0


def test_evaluation_fails_when_bn_statistics_update(synth_data):  # noqa: F811
    torch.manual_seed(0)
    net = create_backbone("r3d_small")
    net.train()
    net.eval = lambda: net  # a bug that leaves the backbone in train mode during extraction
    train, test, classes = _items(synth_data)
    with pytest.raises(FrozenBackboneError, match="running_mean"):
        evaluate_backbone(net, SPEC, train, test, len(classes), FAST)


def test_linear_eval_writes_json_and_markdown_and_cli(synth_data, tmp_path):  # noqa: F811
    torch.manual_seed(1)
    ckpt = save_checkpoint(tmp_path / "c.pt", model=create_backbone("r3d_small"), arch="r3d_small",
                           method="simclr", clip_spec=SPEC)
    out = tmp_path / "eval"
    res = linear_eval(ckpt, synth_data, out=out, config=FAST)
    data = json.loads((out / "results.json").read_text())
    assert data["top1"] == res["top1"] == data["metrics"]["top1"]
    assert data["encoder"]["fingerprint"].startswith("sha256:") and data["encoder"]["method"] == "simclr"
    assert data["environment"]["av"] and "decord" in data["environment"]  # the runtime's version report
    assert data["seeds"] == {"probe": 0} and data["config"]["test_clips"] == 2
    _, _, classes = _items(synth_data)
    assert set(data["per_class"]) <= set(classes) and data["classes"] == list(classes)  # names, not ids
    md = (out / "results.md").read_text()
    assert "| top1 |" in md and data["encoder"]["fingerprint"] in md

    from training.eval_cli import main

    r = CliRunner().invoke(main, ["linear", "--checkpoint", str(ckpt), "--data", str(synth_data), "--test-clips",
                                  "2", "--json", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["top1"] == res["top1"]  # same seed, same numbers
    r = CliRunner().invoke(main, ["linear", "--data", str(tmp_path), "--no-progress"])
    assert r.exit_code != 0 and "labels" in r.output


@pytest.mark.slow
def test_ladder_smoke_writes_table_claims_and_resumes(tmp_path):
    """benchmarks/reproduce.py end to end at toy size: the plumbing (runs in subprocesses,
    per-run results, table, claims, pictures, resume), not the numbers."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce.py"
    spec = importlib.util.spec_from_file_location("reproduce", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    argv = ["--out", str(tmp_path / "work"), "--report", str(tmp_path / "report"), "--smoke",
            "--only", "untrained,simclr-s0"]
    result = mod.main(argv)
    assert sorted(r["name"] for r in result["rows"]) == ["simclr-s0", "untrained-s0"]
    assert result["args"]["steps"] == 2 and result["planned_runs"] > 2  # the report counts the whole plan
    assert [c["claim"] for c in result["claims"]] == ["simclr pretraining beats none (linear top-1)"]
    assert result["claims"][0]["verdict"] in ("HOLDS", "DOES NOT HOLD", "INCONCLUSIVE")
    md = (tmp_path / "report" / "ladder.md").read_text()
    assert "| untrained (floor) | 1 |" in md and "2 of " in md and "## Claims" in md
    assert (tmp_path / "report" / "ladder_bars.png").stat().st_size > 0
    metrics = (tmp_path / "work" / "runs" / "simclr-s0" / "metrics.csv").read_text()
    assert "knn_top1" in metrics.splitlines()[0]  # the online monitor ran
    row = next(r for r in result["rows"] if r["name"] == "simclr-s0")
    assert row["probe"] == "vcl_infer.LinearProbe" and 0.0 <= row["linear_top1_legacy"] <= 1.0
    assert "## Probe change" in md and "| simclr-s0 |" in md  # both probes on the same features
    with np.load(tmp_path / "work" / "runs" / "simclr-s0" / "features.npz", allow_pickle=False) as f:
        assert f["test"].ndim == 3 and len(f["test_labels"]) == f["test"].shape[0]  # re-scorable without training
        assert score_features(dict(f), LinearEvalConfig(seed=0))["top1"] == row["linear_top1"]
    again = mod.main(argv)  # resumable: nothing left to run, same rows
    assert again["rows"] == result["rows"]
