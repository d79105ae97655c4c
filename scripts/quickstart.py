"""The main job, end to end, as far as it exists today (run by `make demo`).

1. Export the small CPU encoder (r3d_small, UNTRAINED: no trained default encoder ships
   yet) to an ONNX bundle, verified against torch on a real clip.
2. Decode every sample video in isolated worker processes: the real files in
   ../shared/videos/ when present, else a few generated ones.
3. Embed each video (mean of its L2-normalised clip embeddings) with ONNX Runtime and print,
   per file, the decoder used or why it failed, and its nearest neighbour.

Indexing and search (vcl-index, vcl-search) and training (vcl-train) are not implemented
yet; the script says so at the end.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = ROOT.parent / "shared" / "videos"
OUT = ROOT / "out" / "quickstart"
VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".flv", ".wmv"}
CLIPS_PER_VIDEO = 4


def write_sample_video(path: Path, seed: int, frames: int = 48, size: int = 96) -> None:
    """A textured square moving in a seed-dependent direction over a textured background."""
    import av

    rng = np.random.default_rng(seed)
    background = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    patch = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    direction = rng.uniform(-1.5, 1.5, size=2)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for t in range(frames):
            frame = background.copy()
            y, x = (np.array([36, 36]) + direction * t).astype(int) % (size - 24)
            frame[y : y + 24, x : x + 24] = patch
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def sample_videos() -> list[Path]:
    if SHARED_VIDEOS.is_dir():
        return sorted(p for p in SHARED_VIDEOS.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    folder = OUT / "videos"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"sample_{i}.mp4" for i in range(6)]
    for i, path in enumerate(paths):
        write_sample_video(path, seed=i)
    return paths


def main() -> int:
    import onnxruntime as ort
    import torch

    from export.defaults import default_clip_spec
    from export.pipeline import export_bundle
    from training.models import create_backbone
    from vcl_infer import DecodePool, to_model_input
    from vcl_infer.errors import VideoError
    from vcl_infer.spec import EncoderSpec

    OUT.mkdir(parents=True, exist_ok=True)
    videos = sample_videos()
    print(f"[1/3] exporting r3d_small (untrained) -> {OUT / 'encoder.onnx'}")
    torch.manual_seed(0)
    backbone = create_backbone("r3d_small")
    spec = EncoderSpec(arch="r3d_small", embed_dim=backbone.embed_dim, clip=default_clip_spec("r3d_small"))
    demo = SHARED_VIDEOS / "mmaction2" / "demo.mp4"
    result = export_bundle(backbone, spec, OUT / "encoder.onnx", verify_videos=[demo] if demo.exists() else [])
    check = result.checks[0]
    print(f"      verified on {check.clips} clips: max abs error {check.max_abs_error:.1e}, min cosine {check.min_cosine:.6f}")
    spec = result.spec

    print(f"[2/3] decoding {len(videos)} videos in isolated workers ({CLIPS_PER_VIDEO} clips each)")
    session = ort.InferenceSession(str(OUT / "encoder.onnx"), providers=["CPUExecutionProvider"])
    rows, names, embeddings = [], [], []
    started = time.perf_counter()
    with DecodePool(workers=2, timeout_s=20) as pool:
        for path, decoded in zip(videos, pool.imap([(p, spec.clip, CLIPS_PER_VIDEO) for p in videos])):
            name = str(path.relative_to(path.parents[1]))
            if isinstance(decoded, VideoError):
                rows.append({"video": name, "status": "failed", "error": decoded.kind, "reason": decoded.reason})
                continue
            clip_vectors = session.run(None, {spec.input_name: to_model_input(decoded.clips, spec.clip)})[0]
            pooled = clip_vectors.mean(axis=0)
            embeddings.append(pooled / np.linalg.norm(pooled))
            names.append(name)
            rows.append({"video": name, "status": "ok", "decoder": decoded.info.backend,
                         "frames": decoded.info.num_frames, "size": f"{decoded.info.width}x{decoded.info.height}",
                         "damaged_frames": decoded.damaged_frames})
    elapsed = time.perf_counter() - started

    print("[3/3] per file, and each video's nearest neighbour (cosine, untrained encoder):")
    if embeddings:
        matrix = np.stack(embeddings)
        similarity = matrix @ matrix.T
        np.fill_diagonal(similarity, -np.inf)
    for row in rows:
        if row["status"] == "ok":
            i = names.index(row["video"])
            if len(names) > 1:
                j = int(np.argmax(similarity[i]))
                row.update(nearest=names[j], cosine=round(float(similarity[i, j]), 4))
            print(f"  ok      {row['video']:42s} {row['decoder']:6s} {row['frames']:4d} frames {row['size']:>9s}"
                  + (f"  nearest: {row['nearest']} ({row['cosine']:.3f})" if "nearest" in row else ""))
        else:
            print(f"  FAILED  {row['video']:42s} {row['error']}: {row['reason']}")
    ok = sum(r["status"] == "ok" for r in rows)
    print(f"\n{ok} of {len(rows)} videos embedded, {len(rows) - ok} reported with a reason, in {elapsed:.1f} s; "
          f"report: {OUT / 'report.json'}")
    (OUT / "report.json").write_text(json.dumps({"encoder": spec.to_dict(), "videos": rows}, indent=2) + "\n")
    print("\nNot implemented yet (they say so and exit 1): vcl-train (issue 3), a trained default "
          "encoder, vcl-index / vcl-search (issue 4), linear probe and vcl-eval (issue 5).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
