"""The learnability ladder's report: table (mean +- std over seeds), claims, pictures.

Called by ``benchmarks/reproduce.py`` after every finished run, so a partial ladder still
gives a table; rows missing from it are listed as pending.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

METRICS = ("linear_top1", "r1", "r5", "r1_1clip")
NEW_PROBE = "vcl_infer.LinearProbe"


def is_new_probe(row: dict[str, Any]) -> bool:
    """Scored by the runtime's probe (rows from before the one-probe change have no ``probe``)."""
    return row.get("probe") == NEW_PROBE


def legacy_top1(row: dict[str, Any]) -> float:
    """The first probe's top-1: measured beside the new one, or the old row's only number."""
    return float(row["linear_top1_legacy"] if "linear_top1_legacy" in row else row["linear_top1"])
ORDER = ("supervised", "untrained", "simclr", "moco", "tclr", "fame", "videomoco", "cyclecontrast", "vclr",
         "hcl", "mochi", "kcl", "tsc", "crossclr", "longshort")


def group(rows: Sequence[dict[str, Any]], data: str) -> dict[str, dict[str, list[float]]]:
    """method -> metric -> the seeds' values, for the runs on ``data``."""
    out: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        if r["data"] != data:
            continue
        g = out.setdefault(r["method"], {m: [] for m in (*METRICS, "train_s", "seed")})
        for m in (*METRICS, "train_s", "seed"):
            g[m].append(float(r[m]))
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def verdict(a: Sequence[float], b: Sequence[float]) -> tuple[str, float, float]:
    """Is mean(a) > mean(b)? Returns (verdict, gap, the spread that decided it).

    Both sides with >= 2 seeds: HOLDS when the gap exceeds both stds, DOES NOT HOLD when it is
    <= 0, INCONCLUSIVE in between. One side with
    a single seed: its spread is unknown, so HOLDS needs the gap to exceed 3x the other side's std
    and 5 points; a single seed on both sides is always INCONCLUSIVE.
    """
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    gap = ma - mb
    if len(a) < 2 and len(b) < 2:
        return "INCONCLUSIVE", gap, 0.0
    if len(a) < 2 or len(b) < 2:
        spread = 3 * max(sa, sb)
        if gap > max(spread, 0.05):
            return "HOLDS", gap, spread
        return ("DOES NOT HOLD" if gap <= 0 else "INCONCLUSIVE"), gap, spread
    spread = max(sa, sb)
    if gap > spread and gap > 0:
        return "HOLDS", gap, spread
    if gap <= 0:
        return "DOES NOT HOLD", gap, spread
    return "INCONCLUSIVE", gap, spread


def claims(rows: Sequence[dict[str, Any]], clips: int, bias: float) -> list[dict[str, Any]]:
    """The claims' verdicts. A linear-top-1 claim whose sides mix rows of the two probes is
    decided on the first probe's top-1 on both sides (every row has it), and says so."""
    out = []

    def linear(name: str, data: str, a: str, b: str, na: str, nb: str) -> None:
        ra = [r for r in rows if r["data"] == data and r["method"] == a]
        rb = [r for r in rows if r["data"] == data and r["method"] == b]
        if not ra or not rb:
            return
        mixed = not all(is_new_probe(r) for r in (*ra, *rb))
        pick = legacy_top1 if mixed else (lambda r: float(r["linear_top1"]))
        va, vb = [pick(r) for r in ra], [pick(r) for r in rb]
        word, gap, spread = verdict(va, vb)
        suffix = " [first probe on both sides: a side has rows not rerun]" if mixed else ""
        out.append({"claim": name, "verdict": word, "detail": _detail(va, vb, gap, spread, na, nb) + suffix,
                    "probe": "first (torch-linear)" if mixed else NEW_PROBE})

    for m in ORDER[2:]:
        linear(f"{m} pretraining beats none (linear top-1)", "motion", m, "untrained", m, "untrained")
    linear(f"FAME beats SimCLR when train backgrounds predict the class (bias {bias}, linear top-1)", "biased",
           "fame", "simclr", "fame", "simclr")
    motion = group(rows, "motion")
    if "tclr" in motion and "simclr" in motion:
        def gains(g: dict[str, list[float]]) -> list[float]:
            return [n - one for n, one in zip(g["r1"], g["r1_1clip"])]

        word, gap, spread = verdict(gains(motion["tclr"]), gains(motion["simclr"]))
        out.append({"claim": f"TCLR gains more R@1 than SimCLR from 1 to {clips} clips per video", "verdict": word,
                    "detail": _detail(gains(motion["tclr"]), gains(motion["simclr"]), gap, spread,
                                      "tclr gain", "simclr gain")})
    return out


def probe_change(rows: Sequence[dict[str, Any]]) -> str:
    """Old probe vs new on the same features, for every run scored by both (Markdown)."""
    both = [r for r in rows if is_new_probe(r) and "linear_top1_legacy" in r]
    if not both:
        return ""
    d = np.array([100 * (r["linear_top1"] - r["linear_top1_legacy"]) for r in both])
    lines = [f"Runs scored by both probes on the same features: {len(both)}. New minus first probe, "
             f"linear top-1: mean {d.mean():+.1f}, mean |diff| {np.abs(d).mean():.1f}, max |diff| "
             f"{np.abs(d).max():.1f} points. So a row scored by the first probe alone may sit about "
             f"{np.abs(d).mean():.1f} (up to {np.abs(d).max():.1f}) points from what the new probe would give: "
             "less than most rows' seed std, but a gap of that size between rows of the two probes decides "
             "nothing; that is why a claim whose sides mix them is decided on the first probe on both sides.",
             "", "| run | new probe | first probe | diff |", "|---|---|---|---|"]
    lines += [f"| {r['name']} | {100 * r['linear_top1']:.1f} | {100 * r['linear_top1_legacy']:.1f} | {x:+.1f} |"
              for r, x in zip(both, d)]
    return "\n".join(lines) + "\n"


def _detail(a: Sequence[float], b: Sequence[float], gap: float, spread: float, na: str, nb: str) -> str:
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    return (f"{na} {100 * ma:.1f} +- {100 * sa:.1f} (n={len(a)}) vs {nb} {100 * mb:.1f} +- {100 * sb:.1f} "
            f"(n={len(b)}): gap {100 * gap:+.1f}, deciding spread {100 * spread:.1f} points")


def kept_note(rows: Sequence[dict[str, Any]]) -> str:
    """Which rows were not run here but kept from an earlier ladder (Markdown; empty when none)."""
    kept = [r for r in rows if "kept_from" in r]
    if not kept:
        return ""
    sources = sorted({r["kept_from"] for r in kept})
    return (f"Kept, not rerun ({len(kept)} rows, marked 'kept' in the tables): {', '.join(r['name'] for r in kept)}, "
            f"with the numbers recorded in {'; '.join(sources)}: same data seed, set and probe, and no change to "
            "their methods' settings since; their training curves are not drawn (their run folders are gone).\n\n")


def table(rows: Sequence[dict[str, Any]], data: str) -> str:
    g = group(rows, data)
    lines = ["| method | seeds | linear top-1 | R@1 (mean of clips) | R@5 | R@1 (1 clip) | train s/run |",
             "|---|---|---|---|---|---|---|"]
    for m in [m for m in ORDER if m in g]:
        cells = []
        for k in METRICS:
            mu, sd = mean_std(g[m][k])
            cells.append(f"{100 * mu:.1f} +- {100 * sd:.1f}" if len(g[m][k]) > 1 else f"{100 * mu:.1f}")
        label = m + (" (ceiling)" if m == "supervised" else " (floor)" if m == "untrained" else "")
        label += " *labels*" if m in ("kcl", "tsc") else ""
        old = sum(1 for r in rows if r["data"] == data and r["method"] == m and not is_new_probe(r))
        label += f" (first probe: {old} of {len(g[m]['seed'])})" if old else ""
        kept = sum(1 for r in rows if r["data"] == data and r["method"] == m and "kept_from" in r)
        label += f" (kept: {kept} of {len(g[m]['seed'])})" if kept else ""
        lines.append(f"| {label} | {len(g[m]['seed'])} | " + " | ".join(cells) + f" | {np.mean(g[m]['train_s']):.0f} |")
    return "\n".join(lines) + "\n"


def render(args: Any, rows: list[dict[str, Any]], planned: int, seconds: float, command: str) -> dict[str, Any]:
    """Write ladder.md / ladder.json (and the pictures) to ``args.out`` and ``args.report``."""
    found = claims(rows, args.clips, args.bias)
    header = (f"Set: vcl-synth, {args.classes} motion classes x {args.videos_per_class} videos, {args.video_frames} "
              f"frames at {args.size} px, backgrounds random (bias-{args.bias} set for the FAME claim), data seed "
              f"{args.data_seed}. Backbone r3d_small; clips {args.frames} frames at step {args.frame_step}, "
              f"{args.size} px. Budget per run: {args.steps} steps x batch {args.batch_size}, CPU, one thread per run, "
              f"{args.parallel} runs at once. Linear probe: frozen backbone, features of {args.clips} uniform clips "
              f"per video, vcl-eval linear's protocol (vcl_infer.LinearProbe: standardised L-BFGS logistic regression, "
              f"C 1, on the mean of each train video's L2-normalised clip features; test clips' probabilities "
              f"averaged). Rows marked 'first probe' were scored before that change by the first probe (a torch "
              f"linear layer on every train clip's standardised features, Adam 1e-2, 100 epochs); see 'Probe "
              f"change'. Ceiling budget: {getattr(args, 'ceiling_steps', args.steps)} steps. Retrieval: test videos query "
              f"the train split (hit: same class in the top k), mean of {args.clips} clip features, L2. Numbers in %, "
              f"mean +- std over seeds (sample std).\n\n" + getattr(args, "settings", "") + "\n\n")
    here = [r for r in rows if "kept_from" not in r]
    done = f"{len(rows)} of {planned} runs done; wall time {seconds / 60:.1f} min (first start to last end of " \
           f"the {sum(map(is_new_probe, here))} runs scored by the current probe here) " \
           f"(sum of the runs' own times {sum(r['train_s'] + r['eval_s'] for r in rows) / 60:.1f} min).\n\n"
    done += kept_note(rows)
    md = ("# Learnability ladder\n\n" + header + done + f"Command: `{command}`\n\n## Motion set (unbiased)\n\n"
          + table(rows, "motion") + f"\n## Background-bias {args.bias} set\n\n" + table(rows, "biased")
          + "\n## Claims\n\n" + "\n".join(f"- **{c['verdict']}**: {c['claim']} ({c['detail']})" for c in found) + "\n")
    change = probe_change(rows)
    if change:
        md += "\n## Probe change\n\n" + change
    pending = getattr(args, "pending", [])
    if pending:
        md += f"\nNot run yet ({len(pending)}): {', '.join(pending)}. Resume with the command above.\n"
    result = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "rows": rows, "claims": found, "planned_runs": planned, "wall_s": round(seconds, 1),
              "command": command, "written": time.strftime("%Y-%m-%d %H:%M:%S")}
    for folder in [args.out] + ([args.report] if args.report else []):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ladder.md").write_text(md)
        (folder / "ladder.json").write_text(json.dumps(result, indent=1))
        try:
            bars(rows, folder / "ladder_bars.png")
            curves(args.out / "runs", rows, folder / "ladder_curves.png")
        except Exception as exc:  # noqa: BLE001 - a picture must not lose the table
            print(f"pictures not drawn: {exc}")
    return result


def bars(rows: Sequence[dict[str, Any]], out: Path) -> None:
    """Linear top-1 and R@1 per method, mean with std error bars, floor and chance lines."""
    from training.pictures._plt import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    g = group(rows, "motion")
    methods = [m for m in ORDER if m in g]
    x = np.arange(len(methods))
    for ax, key, title in zip(axes, ("linear_top1", "r1"), ("linear probe top-1", "retrieval R@1")):
        stats = [mean_std(g[m][key]) for m in methods]
        colours = ["tab:green" if m == "supervised" else "tab:grey" if m == "untrained" else "tab:blue" for m in methods]
        ax.bar(x, [100 * s[0] for s in stats], yerr=[100 * s[1] for s in stats], color=colours, capsize=3)
        if "untrained" in g:
            ax.axhline(100 * mean_std(g["untrained"][key])[0], color="k", ls="--", lw=1, label="untrained (floor)")
        ax.set_xticks(x, methods, rotation=45, ha="right")
        ax.set_ylabel("%")
        ax.set_ylim(0, 100)
        ax.set_title(f"{title} (mean +- std over seeds)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def curves(runs: Path, rows: Sequence[dict[str, Any]], out: Path) -> None:
    """Per method: training loss and the online kNN top-1 against the step, one line per seed."""
    from training.pictures._plt import pyplot
    from training.pictures.curves import read_metrics

    methods = [m for m in ORDER if m != "untrained" and any(  # kept rows have no curves: their folders are gone
        r["method"] == m and r["data"] == "motion" and (runs / r["name"] / "metrics.csv").is_file() for r in rows)]
    if not methods:
        return
    plt = pyplot()
    fig, axes = plt.subplots(2, len(methods), figsize=(2.6 * len(methods), 5.2), squeeze=False)
    for j, m in enumerate(methods):
        for r in rows:
            if r["method"] != m or r["data"] != "motion":
                continue
            path = runs / r["name"] / "metrics.csv"
            if not path.is_file():
                continue
            d = read_metrics(path)
            ok = np.isfinite(d.get("loss", np.array([])))
            if ok.any():
                axes[0, j].plot(d["step"][ok], d["loss"][ok], lw=1, label=f"seed {r['seed']}")
            if "knn_top1" in d:
                k = np.isfinite(d["knn_top1"])
                axes[1, j].plot(d["step"][k], 100 * d["knn_top1"][k], marker="o", ms=3, lw=1)
        axes[0, j].set_title(m)
        axes[1, j].set_xlabel("step")
        axes[1, j].set_ylim(0, 100)
    axes[0, 0].set_ylabel("training loss")
    axes[1, 0].set_ylabel("online kNN top-1 (%)")
    for ax in axes.ravel():
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
