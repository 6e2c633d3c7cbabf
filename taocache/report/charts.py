"""Matplotlib charts of a benchmark, returned as PNG bytes for inlining."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from .aggregate import METRICS, frontier
from .matched import reference_label

TITLES = {
    "lpips": "LPIPS (lower is better)",
    "ssim": "SSIM (higher is better)",
    "psnr": "PSNR, dB (higher is better)",
    "cvvdp": "ColorVideoVDP, JOD (higher is better)",
}


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _colours(methods: list[str]) -> dict[str, tuple]:
    """One colour per series; the fewer-steps baseline, which every cache must beat, in black."""
    cmap = plt.get_cmap("tab10")
    others = [m for m in methods if m != "steps"]
    colours = {m: cmap(i % 10) for i, m in enumerate(others)}
    colours["steps"] = (0.0, 0.0, 0.0, 1.0)
    return colours


def quality_vs_speedup(settings: list[dict], lpips_note: str | None, axis: str = "speedup") -> bytes:
    """One panel per metric: every setting as a point, each method's frontier as a line."""
    methods = sorted({s["series"] for s in settings if s.get(axis)})
    colours = _colours(methods)
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.4))
    for ax, metric in zip(axes, ("lpips", "ssim", "psnr", "cvvdp")):
        ax.set_title(TITLES[metric])
        ax.set_xlabel("denoising-loop speed-up (measured)" if axis == "speedup" else "call ratio")
        ax.grid(alpha=0.3)
        plotted = False
        for method in methods:
            points = [
                (s[axis], s[metric])
                for s in settings
                if s["series"] == method and s.get(axis) and s.get(metric) is not None
            ]
            if not points:
                continue
            plotted = True
            xs, ys = zip(*points)
            ax.scatter(xs, ys, color=colours[method], s=18, alpha=0.45)
            curve = frontier(points, METRICS[metric])
            ax.plot(*zip(*curve), "-o", color=colours[method], label=method, markersize=4)
        if not plotted:
            message = lpips_note if metric == "lpips" and lpips_note else "no values"
            ax.text(
                0.5, 0.5, _wrap(message, 40), ha="center", va="center", transform=ax.transAxes, fontsize=9
            )
            ax.set_xticks([])
            ax.set_yticks([])
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), bbox_to_anchor=(0.5, -0.02))
    return _png(fig)


def speedup_vs_calls(settings: list[dict]) -> bytes:
    """Measured loop speed-up against the FLOP ratio: how much of the saved work shows up as saved time."""
    methods = sorted({s["series"] for s in settings if s.get("speedup") and s.get("flop_ratio")})
    colours = _colours(methods)
    fig, ax = plt.subplots(figsize=(6, 4.4))
    top = 1.0
    for method in methods:
        points = [
            (s["flop_ratio"], s["speedup"])
            for s in settings
            if s["series"] == method and s.get("speedup") and s.get("flop_ratio")
        ]
        xs, ys = zip(*points)
        top = max(top, *xs, *ys)
        ax.scatter(xs, ys, color=colours[method], label=method, s=22)
    line = np.linspace(1, top * 1.05, 10)
    ax.plot(line, line, "k--", lw=1, label="time saved = work saved")
    ax.plot(line, 0.9 * line, "k:", lw=1, label="0.9 x FLOP ratio")
    ax.set_xlabel("FLOP ratio (full run's denoiser FLOPs / method's)")
    ax.set_ylabel("denoising-loop speed-up (measured)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def step_timeline(rows: list[dict]) -> bytes:
    """Rows of settings, columns of steps: the share of a full denoiser call computed at each step."""
    width = max((len(r["computed"]) for r in rows), default=1)
    grid = np.full((len(rows), width), np.nan)
    for i, row in enumerate(rows):
        grid[i, : len(row["computed"])] = row["computed"]
    fig, ax = plt.subplots(figsize=(min(4 + width * 0.22, 16), 1.2 + 0.28 * len(rows)))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#eeeeee")
    image = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows], fontsize=8)
    ax.set_xlabel("denoising step (grey: the run has fewer steps)")
    ax.set_xticks(range(0, width, max(1, width // 20)))
    fig.colorbar(image, ax=ax, fraction=0.025, label="share of a full call computed")
    return _png(fig)


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines + [line])


def paired_intervals(matched: dict) -> bytes | None:
    """One panel per matched call ratio: TaoCache minus each series in PSNR, the mean with its paired 95%
    interval as a bar (a bare dot where there are too few pairs for one); None when nothing was compared."""
    targets = [(t, [r for r in rows if r["difference"] is not None]) for t, rows in matched["targets"].items()]
    targets = [(t, rows) for t, rows in targets if rows]
    if not targets:
        return None
    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 0.6 + 0.45 * max(len(r) for _, r in targets)),
                             squeeze=False)
    for ax, (target, rows) in zip(axes[0], targets):
        for y, row in enumerate(rows):
            d = row["difference"]
            colour = "tab:green" if row["leads"] else ("black" if row["series"] == "steps" else "tab:gray")
            if d["low"] is not None:
                ax.errorbar(d["mean"], y, xerr=[[d["mean"] - d["low"]], [d["high"] - d["mean"]]], fmt="o",
                            color=colour, capsize=4)
            else:
                ax.plot(d["mean"], y, "o", color=colour, fillstyle="none")
        ax.axvline(0, color="k", lw=0.8, ls=":")
        ax.set_yticks(range(len(rows)), [r["series"] for r in rows], fontsize=8)
        ax.set_title(f"at {target}x call ratio")
        ax.set_xlabel(f"{reference_label(matched, target)} - method, PSNR dB (95% CI)")
        ax.grid(alpha=0.3, axis="x")
    return _png(fig)
