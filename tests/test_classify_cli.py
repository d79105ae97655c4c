"""vcl-classify fit / predict / eval and vcl-eval end to end from the CLI on a generated set.

The set: 3 motion classes x 8 videos (16 frames, 64 px) from the synthetic generator with
background bias 1.0 on BOTH sides (every video shows its class's own background; groups
alternate between train and test in a CSV). The default encoder separates these: measured
top-1 1.00 on 12 test videos (chance 0.33). With random backgrounds (bias 0) the same
encoder reaches only about 0.4 to 0.67 on such tiny sets, so the test uses the separable set.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.data.synthetic import SynthConfig, generate

DEFAULT_DIM = json.loads((Path(__file__).resolve().parents[1] / "vcl_infer" / "models" / "default.json").read_text())["embed_dim"]


def cli(module: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    code = f"from vcl_infer.cli.{module} import main; main()"
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {args} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    meta = generate(root, SynthConfig(classes=3, videos_per_class=8, frames=16, size=64, background_bias=1.0,
                                      test_fraction=0.0, clips_per_group=2, seed=0))
    rows = ["path,label,split"]
    for v in meta["videos"]:
        group = int(v["group"].rsplit("_g", 1)[1])
        rows.append(f"{v['path']},{meta['classes'][v['label']]},{'train' if group % 2 else 'test'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.slow
def test_fit_predict_eval_end_to_end(dataset, tmp_path):
    index = tmp_path / "index"
    # the venv's own script: CI runs pytest without the venv on PATH
    subprocess.run([str(Path(sys.executable).parent / "vcl-index"), "build", str(dataset / "videos"), "--index", str(index), "--clips", "4",
                    "--workers", "1", "--json"], check=True, capture_output=True, timeout=300)

    fitted = json.loads(cli("classify", "fit", "--index", str(index), "--labels", str(dataset / "labels.csv"),
                            "--out", str(tmp_path / "probe" / "p"), "--json").stdout)
    assert fitted["labelled"] == 12 and fitted["found_in_index"] == 12 and fitted["missing"] == 0
    with np.load(tmp_path / "probe" / "p.npz", allow_pickle=False) as arrays:  # no pickle in probe files
        # scikit-learn layout: classes x features (the default encoder's embedding)
        assert arrays["coef"].shape == (3, DEFAULT_DIM)
    info = json.loads((tmp_path / "probe" / "p.json").read_text())["info"]
    assert info["encoder_fingerprint"].startswith("sha256:")

    video = dataset / "videos" / "MoveUp" / "v_MoveUp_g02_c01.mp4"  # a test-side video
    predicted = json.loads(cli("classify", "predict", str(video), "--probe", str(tmp_path / "probe" / "p"),
                               "--clips", "3", "--mode", "mean_probability", "--json").stdout)
    assert predicted[0]["top"][0]["class"] == "MoveUp" and len(predicted[0]["top"]) == 3
    assert len(predicted[0]["clips"]) == 3 and all(c["end_sec"] > c["start_sec"] for c in predicted[0]["clips"])

    out = tmp_path / "eval"
    scores = json.loads(cli("classify", "eval", "--probe", str(tmp_path / "probe" / "p"), "--labels",
                            str(dataset / "labels.csv"), "--split", "test", "--clips", "3", "--out", str(out),
                            "--json").stdout)
    assert scores["videos"] == 12 and scores["top1"] >= 0.8  # chance is 1/3
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text())
    assert results["encoder"]["fingerprint"] == info["encoder_fingerprint"]
    assert results["environment"]["av"] and "| top1 |" in (out / "results.md").read_text()

    # a probe fitted on another encoder is refused, with the fix
    meta = json.loads((tmp_path / "probe" / "p.json").read_text())
    meta["info"]["encoder_fingerprint"] = "sha256:other"
    (tmp_path / "probe" / "p.json").write_text(json.dumps(meta))
    refused = cli("classify", "predict", str(video), "--probe", str(tmp_path / "probe" / "p"), check=False)
    assert refused.returncode != 0 and "--model" in refused.stderr and "sha256:other" in refused.stderr


def test_eval_retrieval_and_linear(dataset, tmp_path):
    labels = str(dataset / "labels.csv")
    recall = json.loads(cli("evaluate", "retrieval", "--labels", labels, "--protocol", "fame", "--clips", "2",
                            "--out", str(tmp_path / "r"), "--json").stdout)
    assert recall["queries"] == 12 and recall["gallery"] == 12 and recall["R@1"] >= 0.8
    saved = json.loads((tmp_path / "r" / "results.json").read_text())
    assert saved["config"]["protocol"]["center"] is True and saved["config"]["protocol"]["num_clips"] == 2
    linear = json.loads(cli("evaluate", "linear", "--labels", labels, "--clips", "2", "--label-fraction", "0.5",
                            "--json").stdout)
    assert linear["train_videos"] == 6 and linear["top1"] >= 0.8

    no_sides = cli("evaluate", "retrieval", "--labels", str(dataset / "videos"), check=False)
    assert no_sides.returncode != 0 and "split" in no_sides.stderr


def test_runtime_modules_import_nothing_heavy():
    code = ("import sys; import vcl_infer.probe.classify, vcl_infer.probe.evaluation, vcl_infer.probe.labels, vcl_infer.search.png, "
            "vcl_infer.cli.classify, vcl_infer.cli.evaluate; "
            "print([m for m in ('torch', 'training', 'export', 'onnxruntime', 'faiss', 'decord', 'av') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
