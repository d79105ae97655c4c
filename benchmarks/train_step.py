"""Training throughput with the real data loader vs with clips already in memory.

Generates a small synthetic data set (or uses --data), then times the same optimiser steps
twice on the same batches: once pulling batches from the DataLoader (decoding in spawned
workers), once from batches decoded beforehand. The ratio is the loader overhead: 1.0 means
decoding is fully hidden behind the model.

    python benchmarks/train_step.py                      # ~1-2 min on 2 cores
    python benchmarks/train_step.py --method tclr --workers 2 --steps 10
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="simclr")
    p.add_argument("--arch", default="r3d_small")
    p.add_argument("--data", default=None, help="data set (default: generate a synthetic one)")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=6, help="timed steps (after 1 warm-up step)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    import torch

    from training.config import TrainConfig
    from training.data.dataset import ClipDataset, collate_skip_none, to_float_clips
    from training.data.layouts import load_layout
    from training.loop import _worker_init, build_optimizer, resolve_config
    from training.methods import create_method
    from training.models import create_backbone

    tmp = None
    data = args.data
    if data is None:
        from training.data.synthetic import SynthConfig, generate

        tmp = tempfile.TemporaryDirectory()
        data = str(Path(tmp.name) / "synth")
        n_videos = (args.steps + 1) * args.batch_size
        generate(data, SynthConfig(classes=4, videos_per_class=max(4, -(-2 * n_videos // 4)), frames=48,
                                   size=max(80, args.crop + 16), seed=0))
    config = resolve_config(TrainConfig(method=args.method, data=data, arch=args.arch, frames=args.frames,
                                        crop=args.crop, batch_size=args.batch_size, workers=args.workers,
                                        method_args={"queue_size": 256} if args.method in ("moco", "fame") else {}))
    items, _ = load_layout(data, split=1, subset="train")
    spec = config.clip_spec()
    device = torch.device(args.device)
    torch.manual_seed(0)
    method = create_method(config.method, backbone=create_backbone(config.arch), spec=spec, **config.method_args).to(device)
    state = {k: v.clone() for k, v in method.state_dict().items()}
    dataset = ClipDataset(items, spec, method.views, seed=0)
    total = args.steps + 1
    if len(items) < total * args.batch_size:
        raise SystemExit(f"need {total * args.batch_size} train videos, have {len(items)}")
    order = torch.utils.data.Subset(dataset, list(range(total * args.batch_size)))

    def loader():
        return torch.utils.data.DataLoader(
            order, batch_size=args.batch_size, shuffle=False, num_workers=args.workers, drop_last=True,
            collate_fn=collate_skip_none, worker_init_fn=_worker_init if args.workers else None,
            multiprocessing_context="spawn" if args.workers else None)

    def run(batches) -> float:
        method.load_state_dict(state)
        opt = build_optimizer([p for p in method.parameters() if p.requires_grad], config)
        clips, start = 0, None
        for step, batch in enumerate(batches):
            if step == 1:  # the first step warms up (worker start, allocator)
                start, clips = time.perf_counter(), 0
            x = to_float_clips(batch["clips"].to(device), spec)
            loss = method.training_step(x, step)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            clips += x.shape[0]
        return clips / (time.perf_counter() - start)

    print(f"{config.method} / {config.arch}, {spec.frames_per_clip} frames at {spec.crop_size}px, "
          f"batch {args.batch_size}, {args.steps} timed steps, {args.workers} worker(s), "
          f"{torch.get_num_threads()} torch threads")
    # memory, loader, memory: the best in-memory rate of two runs damps noise from other load
    pre = list(loader())
    first = run(pre)
    with_loader = run(loader())
    in_memory = max(first, run(pre))
    print(f"with the data loader : {with_loader:8.2f} clips/s")
    print(f"clips in memory      : {in_memory:8.2f} clips/s")
    print(f"ratio loader/memory  : {with_loader / in_memory:8.2f}  (1.0 = decoding fully hidden)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
