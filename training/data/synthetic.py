"""A synthetic action data set whose class is the motion, with a tunable background shortcut.

Each video shows one textured object doing one motion (its class: move left, rotate
clockwise, grow, ...) over a textured background, with a little camera jitter. Object
shape, texture and colour are shared by the clips of one group (an "actor", like UCF101's
``gNN``); position, speed and timing are drawn per clip.

The background comes from a bank of ``2 x classes`` procedural textures. Class ``k`` owns
texture ``k``. In the train split each video shows its class's own texture with
probability ``background_bias`` and a random bank texture otherwise; in the test split the
background is always random. With a high bias, background predicts the class in train but
not in test: a model that learns the scene instead of the motion fails the test split,
the situation FAME (Ding et al. 2022, "Motion-aware contrastive video representation
learning via foreground-background merging") targets.

Written in the UCF101 layout, so :func:`training.data.layouts.load_layout` reads it::

    OUT/videos/<Class>/v_<Class>_gNN_cMM.mp4
    OUT/splits/classInd.txt, trainlist01.txt, testlist01.txt   (split by group)
    OUT/synth.json                                             (parameters, per-video facts)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

MOTIONS = (
    "MoveLeft",
    "MoveRight",
    "MoveUp",
    "MoveDown",
    "RotateCW",
    "RotateCCW",
    "Grow",
    "Shrink",
    "AppearThenVanish",
    "VanishThenAppear",
)
SHAPES = ("triangle", "rectangle", "ell", "half_disk", "arrow")
OBJECT_TEXTURES = ("flat", "stripes", "checker", "rings")
BACKGROUND_KINDS = ("stripes", "checker", "noise", "dots")
# classes a horizontal mirror turns into another class: flipping a training clip of one of
# these teaches the network that a motion equals its opposite
MIRRORED = {"MoveLeft": "MoveRight", "MoveRight": "MoveLeft", "RotateCW": "RotateCCW", "RotateCCW": "RotateCW"}


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of :func:`generate`.

    Attributes:
        classes: number of motion classes, the first ``classes`` of :data:`MOTIONS`.
        videos_per_class: clips per class (train + test).
        frames: frames per video.
        size: frame side (even, for yuv420p).
        background_bias: probability that a train video shows its class's own background.
        seed: everything is a function of it.
        test_fraction: fraction of each class's groups held out for test (at least one
            group each side when there are two or more groups).
        clips_per_group: clips cut from one "source" (same actor).
        fps: frame rate written to the files.
        motion: motion strength. A Move crosses ``motion x U(0.75, 1)`` of the room the
            object has (1.0: most of the frame, so an 8-frame clip of a 16-frame video shows
            a displacement far larger than the camera jitter; 0.5 is the weak motion of
            earlier versions); rotation, growth and timing do not depend on it.
        object_scale: object radius as a fraction of the frame side, ``U(0.8, 1.2) x`` it.
        jitter: camera jitter, pixels each way (a random walk of one pixel per frame at most).
    """

    classes: int = 6
    videos_per_class: int = 20
    frames: int = 16
    size: int = 64
    background_bias: float = 0.0
    seed: int = 0
    test_fraction: float = 0.3
    clips_per_group: int = 4
    fps: int = 25
    motion: float = 1.0
    object_scale: float = 0.2
    jitter: int = 1

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.classes <= len(MOTIONS):
            problems.append(f"classes must be in 1..{len(MOTIONS)}")
        if self.videos_per_class < 1:
            problems.append("videos_per_class must be >= 1")
        if self.frames < 4:
            problems.append("frames must be >= 4")
        if self.size < 16 or self.size % 2:
            problems.append("size must be even and >= 16")
        if not 0.0 <= self.background_bias <= 1.0:
            problems.append("background_bias must be in [0, 1]")
        if not 0.0 <= self.test_fraction < 1.0:
            problems.append("test_fraction must be in [0, 1)")
        if self.clips_per_group < 1:
            problems.append("clips_per_group must be >= 1")
        if self.fps < 1:
            problems.append("fps must be >= 1")
        if not 0.0 < self.motion <= 1.0:
            problems.append("motion must be in (0, 1]")
        if not 0.05 <= self.object_scale <= 0.3:
            problems.append("object_scale must be in [0.05, 0.3]")
        if not 0 <= self.jitter <= 8:
            problems.append("jitter must be in 0..8")
        if problems:
            raise ValueError("invalid SynthConfig: " + "; ".join(problems))


# ---------------------------------------------------------------- textures


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=3).astype(np.float32)


def _background(kind: str, side: int, rng: np.random.Generator) -> np.ndarray:
    """``side x side x 3`` float32 texture in [0, 255]."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    a, b = _colour(rng), _colour(rng)
    period = float(rng.uniform(4.0, 16.0))
    if kind == "stripes":
        angle = rng.uniform(0, math.pi)
        t = (xx * math.cos(angle) + yy * math.sin(angle)) / period
        mix = (np.sin(2 * math.pi * t) > 0).astype(np.float32)
    elif kind == "checker":
        mix = ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(np.float32)
    elif kind == "noise":
        cells = max(2, int(side / period))
        coarse = rng.random((cells + 1, cells + 1)).astype(np.float32)
        # bilinear upsampling of a coarse random grid: smooth blobs at the chosen scale
        gy, gx = yy / (side - 1) * cells, xx / (side - 1) * cells
        y0, x0 = np.minimum(gy.astype(int), cells - 1), np.minimum(gx.astype(int), cells - 1)
        fy, fx = gy - y0, gx - x0
        mix = (
            coarse[y0, x0] * (1 - fy) * (1 - fx)
            + coarse[y0 + 1, x0] * fy * (1 - fx)
            + coarse[y0, x0 + 1] * (1 - fy) * fx
            + coarse[y0 + 1, x0 + 1] * fy * fx
        )
    elif kind == "dots":
        radius = period * rng.uniform(0.2, 0.4)
        cy, cx = (yy % period) - period / 2, (xx % period) - period / 2
        mix = (cy * cy + cx * cx < radius * radius).astype(np.float32)
    else:
        raise ValueError(f"unknown background kind {kind!r}")
    return a * (1 - mix[..., None]) + b * mix[..., None]


def texture_bank(count: int, side: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``count`` backgrounds, ``count x side x side x 3`` float32, and their kinds."""
    rng = np.random.default_rng([seed, 1])
    kinds = [BACKGROUND_KINDS[i % len(BACKGROUND_KINDS)] for i in range(count)]
    return np.stack([_background(k, side, rng) for k in kinds]), kinds


# ---------------------------------------------------------------- the object


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-mask of a shape in object coordinates (``u`` right, ``v`` down, unit radius).

    Every shape lacks rotational symmetry, so rotation is visible.
    """
    box = (np.abs(u) <= 1) & (np.abs(v) <= 1)
    if shape == "triangle":  # apex up, off-centre
        return box & (v >= -1) & (v <= 1) & (np.abs(u + 0.3) <= (v + 1) / 2)
    if shape == "rectangle":
        return (np.abs(u) <= 1) & (np.abs(v) <= 0.45)
    if shape == "ell":
        return box & ((u <= -0.3) | (v >= 0.4))
    if shape == "half_disk":
        return (u * u + v * v <= 1) & (v >= 0)
    if shape == "arrow":
        shaft = (u >= -1) & (u <= 0.2) & (np.abs(v) <= 0.25)
        head = (u > 0.2) & (u <= 1) & (np.abs(v) <= (1 - u) * 0.9 / 0.8)
        return shaft | head
    raise ValueError(f"unknown shape {shape!r}")


def _object_texture(kind: str, u: np.ndarray, v: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if kind == "flat":
        mix = np.zeros_like(u)
    elif kind == "stripes":
        mix = (np.sin(u * 3 * math.pi) > 0).astype(np.float32)
    elif kind == "checker":
        mix = ((np.floor(u * 2.5) + np.floor(v * 2.5)) % 2).astype(np.float32)
    elif kind == "rings":
        mix = (np.sin(np.sqrt(u * u + v * v) * 4 * math.pi) > 0).astype(np.float32)
    else:
        raise ValueError(f"unknown object texture {kind!r}")
    return a * (1 - mix[..., None]) + b * mix[..., None]


def _trajectory(motion: str, frames: int, size: int, radius: float, rng: np.random.Generator,
                strength: float = 1.0) -> dict[str, np.ndarray]:
    """Per-frame centre (x, y), radius, angle (radians) and visibility of the object."""
    t = np.arange(frames, dtype=np.float32) / (frames - 1)  # 0 .. 1 over the clip
    margin = radius + 1
    cx = np.full(frames, rng.uniform(margin, size - margin), np.float32)
    cy = np.full(frames, rng.uniform(margin, size - margin), np.float32)
    r: np.ndarray = np.full(frames, radius, np.float32)
    angle: np.ndarray = np.full(frames, rng.uniform(0, 2 * math.pi), np.float32)
    visible = np.ones(frames, bool)
    if motion.startswith("Move"):
        travel = strength * rng.uniform(0.75, 1.0) * (size - 2 * margin)
        start = rng.uniform(margin, size - margin - travel)
        path = start + travel * t
        if motion in ("MoveLeft", "MoveUp"):
            path = path[::-1].copy()
        if motion in ("MoveLeft", "MoveRight"):
            cx = path.astype(np.float32)
        else:
            cy = path.astype(np.float32)
    elif motion.startswith("Rotate"):
        total = rng.uniform(0.6, 1.2) * math.pi  # 108 to 216 degrees over the clip
        sign = 1.0 if motion == "RotateCW" else -1.0  # image y points down: +angle turns clockwise
        angle = angle + sign * total * t
    elif motion in ("Grow", "Shrink"):
        factor = rng.uniform(2.0, 2.8)
        small = radius / math.sqrt(factor)
        r = small * factor**t
        if motion == "Shrink":
            r = r[::-1].copy()
        big = float(r.max()) + 1
        cx[:] = rng.uniform(big, size - big)
        cy[:] = rng.uniform(big, size - big)
    elif motion in ("AppearThenVanish", "VanishThenAppear"):
        on = int(round(rng.uniform(0.15, 0.35) * frames))
        off = int(round(rng.uniform(0.65, 0.85) * frames))
        middle = (np.arange(frames) >= on) & (np.arange(frames) < off)
        visible = middle if motion == "AppearThenVanish" else ~middle
    else:
        raise ValueError(f"unknown motion {motion!r}")
    return {"cx": cx, "cy": cy, "r": r.astype(np.float32), "angle": angle.astype(np.float32), "visible": visible}


def render_video(
    motion: str,
    background: np.ndarray,
    actor: Mapping[str, Any],
    frames: int,
    size: int,
    rng: np.random.Generator,
    *,
    motion_strength: float = 1.0,
) -> np.ndarray:
    """One clip, ``frames x size x size x 3`` uint8.

    Args:
        motion: one of :data:`MOTIONS`.
        background: ``(size + 2 * jitter)`` square float32 texture; its margin is the camera
            jitter, pixels each way.
        actor: ``shape``, ``texture``, ``colours`` (2 x 3), ``radius`` of the object.
        rng: draws position, speed, timing and camera jitter.
        motion_strength: :attr:`SynthConfig.motion`.
    """
    jitter = (background.shape[0] - size) // 2
    traj = _trajectory(motion, frames, size, actor["radius"], rng, motion_strength)
    # camera jitter: a small random walk of the view over the (larger) background canvas
    steps = rng.integers(-1, 2, size=(frames, 2))
    offsets = np.clip(np.cumsum(steps, axis=0), -jitter, jitter) + jitter
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    colour_a, colour_b = actor["colours"]
    out = np.empty((frames, size, size, 3), np.uint8)
    for f in range(frames):
        oy, ox = int(offsets[f, 0]), int(offsets[f, 1])
        canvas = background[oy : oy + size, ox : ox + size].copy()
        if traj["visible"][f]:
            # object coordinates: undo translation (the object moves with the scene, so the
            # jitter shifts it too), rotation and scale
            cx, cy = traj["cx"][f] - (ox - jitter), traj["cy"][f] - (oy - jitter)
            # only pixels within the object's reach: |u|, |v| <= 1.25 (rim), any rotation
            reach = 1.25 * math.sqrt(2) * traj["r"][f] + 1
            y0, y1 = max(0, int(cy - reach)), min(size, int(cy + reach) + 2)
            x0, x1 = max(0, int(cx - reach)), min(size, int(cx + reach) + 2)
            if y0 >= y1 or x0 >= x1:
                out[f] = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
                continue
            dx, dy = xx[y0:y1, x0:x1] - cx, yy[y0:y1, x0:x1] - cy
            c, s = math.cos(traj["angle"][f]), math.sin(traj["angle"][f])
            u = (c * dx + s * dy) / traj["r"][f]
            v = (-s * dx + c * dy) / traj["r"][f]
            mask = _shape_mask(actor["shape"], u, v)
            # an outline in black or white, whichever contrasts with the background, keeps
            # the object visible when its colours happen to match the scene
            rim = _shape_mask(actor["shape"], u / 1.25, v / 1.25) & ~mask
            patch = canvas[y0:y1, x0:x1]  # a view: writes go to the canvas
            patch[rim] = 0.0 if canvas.mean() > 127 else 255.0
            tex = _object_texture(actor["texture"], u, v, colour_a, colour_b)
            patch[mask] = tex[mask]
        out[f] = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return out


# ---------------------------------------------------------------- writing


def _codec() -> str:
    import av

    for name in ("libx264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - a codec missing from this FFmpeg build
            continue
    raise RuntimeError("this PyAV/FFmpeg build can encode neither libx264 nor mpeg4")


def write_video(path: str | Path, frames: np.ndarray, fps: int, codec: str) -> None:
    """Encode ``T x H x W x 3`` uint8 RGB frames (yuv420p, container from the suffix)."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        if not isinstance(stream, av.VideoStream):  # narrows the type: a video codec gives a video stream
            raise RuntimeError(f"codec {codec} did not open a video stream")
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            # one thread: frames are tiny (threads cost more than they save) and the bytes
            # written do not depend on the machine's core count
            stream.options = {"crf": "18", "preset": "ultrafast", "threads": "1"}
        else:
            stream.bit_rate = 2_000_000
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _split_groups(num_groups: int, test_fraction: float, rng: np.random.Generator) -> set[int]:
    if num_groups < 2 or test_fraction <= 0:
        return set()
    n_test = min(num_groups - 1, max(1, int(round(test_fraction * num_groups))))
    return {int(g) for g in rng.permutation(num_groups)[:n_test]}


class _Actor(TypedDict):
    shape: str
    texture: str
    colours: tuple[Any, Any]
    radius: float


class _PlannedVideo(TypedDict):
    """One video to write (``actor`` and ``seed`` are dropped from ``synth.json``)."""

    path: str  # relative to out/videos
    label: int
    group: str
    split: str
    background: int
    own_background: bool
    actor: _Actor
    seed: list[int]


_Job = tuple[Path, str, np.ndarray, _Actor, list[int], SynthConfig, str]


def _write_one(job: _Job) -> None:
    path, motion, background, actor, seed, cfg, codec = job
    frames = render_video(motion, background, actor, cfg.frames, cfg.size, np.random.default_rng(seed),
                          motion_strength=cfg.motion)
    write_video(path, frames, cfg.fps, codec)


def _plan_class(cfg: SynthConfig, label: int, name: str, bank_size: int) -> list[_PlannedVideo]:
    """The videos of class ``label``: groups of clips sharing an actor, split by group."""
    groups_per_class = math.ceil(cfg.videos_per_class / cfg.clips_per_group)
    rng = np.random.default_rng([cfg.seed, 2, label])
    test_groups = _split_groups(groups_per_class, cfg.test_fraction, rng)
    plan: list[_PlannedVideo] = []
    for g in range(groups_per_class):
        actor: _Actor = {
            "shape": SHAPES[int(rng.integers(len(SHAPES)))],
            "texture": OBJECT_TEXTURES[int(rng.integers(len(OBJECT_TEXTURES)))],
            "colours": (_colour(rng), _colour(rng)),
            "radius": float(rng.uniform(0.8, 1.2) * cfg.object_scale * cfg.size),
        }
        split = "test" if g in test_groups else "train"
        clips = min(cfg.clips_per_group, cfg.videos_per_class - g * cfg.clips_per_group)
        for c in range(clips):
            own = split == "train" and bool(rng.random() < cfg.background_bias)
            bg = label if own else int(rng.integers(bank_size))
            rel = f"{name}/v_{name}_g{g + 1:02d}_c{c + 1:02d}.mp4"
            plan.append(_PlannedVideo(path=rel, label=label, group=f"{name}_g{g + 1:02d}", split=split,
                                      background=bg, own_background=bg == label, actor=actor,
                                      seed=[cfg.seed, 3, label, g, c]))
    return plan


def _run_jobs(jobs: list[_Job], workers: int, progress: bool) -> None:
    """Render and encode every job, in ``workers`` processes when more than one."""
    if workers > 1 and len(jobs) > 1:
        from concurrent.futures import ProcessPoolExecutor

        executor = ProcessPoolExecutor(min(workers, len(jobs)))
        pool: ProcessPoolExecutor | None = executor
        done: Iterable[None] = executor.map(_write_one, jobs, chunksize=max(1, len(jobs) // (8 * workers)))
    else:
        pool, done = None, map(_write_one, jobs)
    try:
        if progress:
            from tqdm import tqdm

            done = tqdm(done, total=len(jobs), desc="vcl-synth", unit="video")
        for _ in done:
            pass
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _write_splits(splits: Path, classes: list[str], plan: list[_PlannedVideo]) -> None:
    """UCF101-style ``classInd.txt``, ``trainlist01.txt`` and ``testlist01.txt``."""
    splits.joinpath("classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(classes)))
    splits.joinpath("trainlist01.txt").write_text(
        "".join(f"{r['path']} {r['label'] + 1}\n" for r in plan if r["split"] == "train"))
    splits.joinpath("testlist01.txt").write_text("".join(f"{r['path']}\n" for r in plan if r["split"] == "test"))


def _video_record(r: _PlannedVideo) -> dict[str, Any]:
    """``synth.json``'s record of one planned video."""
    v: dict[str, Any] = {k: val for k, val in r.items() if k not in ("actor", "seed")} | {"path": "videos/" + r["path"]}
    v["shape"], v["object_texture"] = r["actor"]["shape"], r["actor"]["texture"]
    return v


def generate(
    out_dir: str | Path, config: SynthConfig | None = None, *, progress: bool = False, workers: int = 1
) -> dict[str, Any]:
    """Write the data set to ``out_dir`` (see the module docstring for the layout).

    Deterministic for ``config.seed``, whatever ``workers``: the same config writes the same
    pixels (and, with the same encoder build, the same bytes). ``workers > 1`` renders and
    encodes in that many processes.

    Returns:
        The contents of ``synth.json``: ``config``, ``classes``, ``codec``, the texture
        ``bank`` kinds and one record per video (``path`` relative to ``out_dir``,
        ``label``, ``group``, ``split``, ``background``, ``own_background``).
    """
    cfg = config or SynthConfig()
    out = Path(out_dir)
    classes = list(MOTIONS[: cfg.classes])
    codec = _codec()
    bank, kinds = texture_bank(2 * cfg.classes, cfg.size + 2 * cfg.jitter, cfg.seed)
    (out / "splits").mkdir(parents=True, exist_ok=True)
    plan = [video for label, name in enumerate(classes) for video in _plan_class(cfg, label, name, len(bank))]
    for name in classes:
        (out / "videos" / name).mkdir(parents=True, exist_ok=True)
    jobs: list[_Job] = [
        (out / "videos" / r["path"], classes[r["label"]], bank[r["background"]], r["actor"], r["seed"], cfg, codec)
        for r in plan
    ]
    _run_jobs(jobs, workers, progress)
    _write_splits(out / "splits", classes, plan)
    meta = {"config": asdict(cfg), "classes": classes, "codec": codec, "bank": kinds,
            "background_owner": {k: classes[k] for k in range(cfg.classes)},
            "videos": [_video_record(r) for r in plan]}
    out.joinpath("synth.json").write_text(json.dumps(meta, indent=1))
    return meta


def flip_changes_class(root: str | Path) -> bool:
    """Whether a horizontal flip turns some class of the data set at ``root`` into another.

    True for a ``vcl-synth`` set (``root/synth.json``) holding one of :data:`MIRRORED`; False
    for anything else (real action classes survive a mirror).
    """
    meta = Path(root) / "synth.json"
    if not meta.is_file():
        return False
    try:
        classes = json.loads(meta.read_text()).get("classes", [])
    except (OSError, ValueError):
        return False
    return any(name in MIRRORED for name in classes)
