"""TCLR's retrieval feature layer: `vcl-export --features temporal` + `vcl-eval retrieval --protocol tclr`
equals a plain reference of TCLR's official computation (nn_retrieval/complete_retrieval.py) on the same
clips: layer4 map -> AdaptiveAvgPool3d((None, 1, 1)) -> view(-1) per clip -> sum of (1/clips) * feature
-> L2 -> train @ test similarity -> argsort, top-k by the last k entries."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from export.pipeline import TemporalFeatures, feature_spec_fields, select_features  # noqa: E402
from training.models import create_backbone  # noqa: E402
from vcl_infer.clips.spec import ClipSpec, EncoderSpec  # noqa: E402
from vcl_infer.probe.evaluation import PROTOCOLS, feature_layer_report, protocol_clip_spec  # noqa: E402

KS = (1, 5, 10, 20)


def official_clip_feature(backbone, clips: torch.Tensor) -> torch.Tensor:
    """TCLR's retrieval model output, squeezed and flattened per clip: ``n x (512 * T)``."""
    pooled = torch.nn.AdaptiveAvgPool3d((None, 1, 1))(backbone.forward_features(clips))
    pooled = pooled.squeeze(3).squeeze(3)
    return torch.stack([pooled[i].view(-1) for i in range(len(pooled))])


def official_video_vectors(per_video_clip_features: list[torch.Tensor]) -> torch.Tensor:
    vectors = []
    for feats in per_video_clip_features:
        total = None
        for f in feats:  # pred_dict[...] += (1 / clips_per_vid) * predictions[entry].view(-1)
            part = (1 / len(feats)) * f
            total = part if total is None else total + part
        vectors.append(total)
    vectors = torch.stack(vectors).double()
    return vectors / vectors.norm(dim=1)[:, None]


def official_recall(train_feat, train_label, val_feat, val_label) -> dict[int, float]:
    similarity = (train_feat @ val_feat.T).numpy()
    order = np.argsort(similarity, axis=0)
    hits = dict.fromkeys(KS, 0)
    for i in range(similarity.shape[1]):
        top = train_label[order[:, i]]
        for k in KS:
            hits[k] += int(val_label[i] in top[-k:])
    return {k: hits[k] / similarity.shape[1] for k in KS}


def test_tclr_backbone_gives_512_by_4_and_the_flattening_is_channel_major():
    torch.manual_seed(0)
    net = create_backbone("r3d_18_tclr").eval()
    clip = ClipSpec(frames_per_clip=16, frame_step=2, resize_size=32, crop_size=32)  # time is what matters
    module, method = select_features(net, "tclr", "temporal", clip=clip)
    assert isinstance(module, TemporalFeatures) and method == "tclr"
    assert (module.channels, module.steps, module.embed_dim) == (512, 4, 2048)
    assert feature_spec_fields(module) == {"feature_layer": "temporal", "feature_steps": 4, "l2_normalized": False}
    x = torch.randn(2, 3, 16, 32, 32)
    with torch.no_grad():
        assert torch.allclose(module(x), official_clip_feature(net, x), atol=1e-6)


def test_the_protocols_know_their_papers_layer_and_normalization():
    pooled = EncoderSpec(arch="r3d_18", embed_dim=512)
    temporal = EncoderSpec(arch="r3d_18_tclr", embed_dim=2048, feature_layer="temporal", feature_steps=4,
                           l2_normalized=False)
    assert feature_layer_report(PROTOCOLS["tclr"], temporal)["matches"]
    refused = feature_layer_report(PROTOCOLS["tclr"], pooled)
    assert not refused["matches"] and "--features temporal" in refused["note"]
    assert EncoderSpec.from_json(temporal.to_json()) == temporal
    # FAME's main_retrieve.py normalises with ImageNet mean/std; TCLR's bundle spec is already its own
    bgr = ClipSpec(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), channel_order="BGR")
    fame = protocol_clip_spec(PROTOCOLS["fame"], bgr)
    assert fame.mean == (0.406, 0.456, 0.485) and fame.std == (0.225, 0.224, 0.229)  # RGB values, BGR order
    kept = protocol_clip_spec(PROTOCOLS["fame"], bgr, keep_bundle_normalization=True)
    assert (kept.mean, kept.std) == (bgr.mean, bgr.std)  # the bundle's normalisation kept ...
    assert kept.resize_mode == "none" and bgr.resize_mode != "none"  # ... but FAME's crop is at native scale
    assert protocol_clip_spec(PROTOCOLS["tclr"], bgr) is bgr


@pytest.fixture(scope="module")
def labelled_set(tmp_path_factory):
    from training.data.synthetic import SynthConfig, generate

    root = tmp_path_factory.mktemp("tclr_set")
    meta = generate(root, SynthConfig(classes=3, videos_per_class=6, frames=20, size=32, clips_per_group=1,
                                      test_fraction=0.34, seed=1))
    rows = ["path,label,split"] + [f"{root / v['path']},{meta['classes'][v['label']]},{v['split']}"
                                   for v in meta["videos"]]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


@pytest.mark.slow
def test_protocol_tclr_on_a_temporal_bundle_equals_the_official_computation(tmp_path, labelled_set):
    from export.cli import main as export_main
    from training.checkpoint import save_checkpoint
    from vcl_infer.cli.evaluate import main as eval_main
    from vcl_infer.clips.preprocess import to_model_input
    from vcl_infer.encode.embedder import Embedder
    from vcl_infer.probe.evaluation import embed_split, protocol_vectors
    from vcl_infer.probe.labels import load_labels
    from vcl_infer.video.isolated import decode_clips

    torch.manual_seed(0)
    net = create_backbone("r3d_small").eval()
    clip = ClipSpec(frames_per_clip=16, frame_step=1, resize_size=32, crop_size=32)
    ckpt = save_checkpoint(tmp_path / "c.pt", model=net, arch="r3d_small", method="tclr", clip_spec=clip)
    bundle = tmp_path / "temporal.onnx"
    exported = CliRunner().invoke(export_main, [str(ckpt), "--out", str(bundle), "--features", "temporal", "--json"])
    assert exported.exit_code == 0, exported.output
    spec = json.loads(bundle.with_suffix(".json").read_text())
    assert (spec["feature_layer"], spec["feature_steps"], spec["embed_dim"], spec["l2_normalized"]) == \
        ("temporal", 2, 256, False)

    clips = 3
    ran = CliRunner().invoke(eval_main, ["retrieval", "--labels", str(labelled_set), "--model", str(bundle),
                                         "--protocol", "tclr", "--clips", str(clips), "--json"])
    assert ran.exit_code == 0, ran.output
    ours = json.loads(ran.output[ran.output.index("{"):])
    assert ours["feature_layer"] == "temporal" and ours["paper_feature_layer"] is True

    sides = {}
    for side in ("train", "test"):
        items, _ = load_labels(str(labelled_set), subset=side)
        feats = []
        for item in items:
            decoded = decode_clips(item.path, clip, clips)
            with torch.no_grad():
                feats.append(official_clip_feature(net, torch.from_numpy(to_model_input(decoded.clips, clip))))
        sides[side] = (official_video_vectors(feats), np.array([i.label for i in items]), items)
    reference = official_recall(sides["train"][0], sides["train"][1], sides["test"][0], sides["test"][1])
    assert {f"R@{k}": v for k, v in reference.items()} == {f"R@{k}": ours[f"R@{k}"] for k in KS}

    # and the video vectors themselves, not only the recall they give
    embedder = Embedder.load(bundle)
    stacks, _, failures = embed_split(embedder, sides["test"][2], clips)
    assert not failures
    mine = protocol_vectors(stacks, PROTOCOLS["tclr"])
    assert mine.shape == (len(sides["test"][2]), 256)
    assert np.abs(mine - sides["test"][0].numpy()).max() < 1e-5
