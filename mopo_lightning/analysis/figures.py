"""Report figures as PNG: matplotlib ``Figure`` objects on the Agg canvas (no pyplot state, no display).

- ``learning_curves``: score (or return) against SAC updates, the mean over seeds with its 95% bootstrap
  band, one line per configuration;
- ``interval_plot``: each configuration's final IQM and mean with their 95% intervals (rliable's interval
  estimate plot, drawn here without pyplot);
- ``heat_map``: final IQM over an h x lambda grid, one per ``heat_map_grids`` key (all but h and lambda).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mopo_lightning.files import atomic_path


def save(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG through a temporary file (``files.atomic_path``)."""
    path = Path(path)
    FigureCanvasAgg(figure)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def learning_curves(curves: Sequence[tuple], ylabel: str, title: str) -> Figure:
    """``curves``: (label, sac_updates, mean, low, high[, tail_x, tail_mean]) per configuration; the optional
    tail (dashed) continues the mean over the seeds that evaluated further, so a curve never ends silently
    where its shortest seed ended."""
    figure = Figure(figsize=(6.4, 4.0))
    ax = figure.add_subplot()
    for label, x, mean, low, high, *tail in curves:
        (line,) = ax.plot(x, mean, label=label, lw=1.6)
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, lw=0)
        if tail and len(tail[0]):
            ax.plot(np.r_[x[-1:], tail[0]], np.r_[mean[-1:], tail[1]], ls="--", lw=1.2, color=line.get_color(),
                    label=f"{label}: fewer seeds")
    ax.set_xlabel("SAC updates")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7, frameon=False)
    return figure


def interval_plot(rows: Sequence[tuple[str, dict]], xlabel: str, title: str) -> Figure:
    """``rows``: (label, {"iqm": Interval, "mean": Interval}) per configuration; one panel per statistic."""
    height = 1.0 + 0.35 * max(1, len(rows))
    figure = Figure(figsize=(7.0, height))
    axes = figure.subplots(1, 2, sharey=True)
    y = np.arange(len(rows))
    for ax, key in zip(axes, ("iqm", "mean"), strict=True):
        values = np.array([r[key].value for _, r in rows])
        low = np.array([r[key].low for _, r in rows])
        high = np.array([r[key].high for _, r in rows])
        ax.barh(y, high - low, left=low, height=0.6, color="tab:blue", alpha=0.35)
        ax.vlines(values, y - 0.3, y + 0.3, color="k", lw=1.5)
        ax.set_title(key.upper() if key == "iqm" else "Mean", fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.15)
    axes[0].set_yticks(y, [label for label, _ in rows], fontsize=7)
    axes[0].invert_yaxis()
    figure.suptitle(title, fontsize=10, y=1.0 + 0.25 / height)
    return figure


def heat_map(values: np.ndarray, hs: Sequence, lambdas: Sequence, label: str, title: str) -> Figure:
    """``values[i, j]``: the statistic at ``hs[i]`` and ``lambdas[j]`` (NaN where no run)."""
    values = np.asarray(values, dtype=np.float64)
    assert values.shape == (len(hs), len(lambdas)), values.shape  # [h, lambda]
    figure = Figure(figsize=(1.6 + 1.1 * len(lambdas), 1.4 + 0.8 * len(hs)))
    ax = figure.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto")
    for i in range(len(hs)):
        for j in range(len(lambdas)):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", color="w", fontsize=9)
    ax.set_xticks(range(len(lambdas)), [f"{v:g}" for v in lambdas])
    ax.set_yticks(range(len(hs)), [str(v) for v in hs])
    ax.set_xlabel("penalty coefficient lambda")
    ax.set_ylabel("rollout length h")
    ax.set_title(title, fontsize=10)
    figure.colorbar(image, ax=ax, label=label)
    return figure


def _aligned(curves: list[list[tuple[int, float | None]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """SAC-update points every seed evaluated at (with a finite value) and their ``[seeds, 1, points]`` values;
    then the later points some seeds reached, with the mean over those seeds (the tail)."""
    tables = [{u: v for u, v in c if v is not None and np.isfinite(v)} for c in curves]
    points = sorted(set.intersection(*(set(t) for t in tables))) if tables else []
    last = points[-1] if points else -1
    tail = sorted({u for t in tables for u in t if u > last})
    tail_mean = [float(np.mean([t[u] for t in tables if u in t])) for u in tail]
    return np.array(points), np.array([[[t[u] for u in points]] for t in tables]), np.array(tail), np.array(tail_mean)


def study_figures(configs: Sequence[dict], out: Path, reps: int, seed: int) -> list[Path]:
    """Learning curves and an interval plot per panel (task and dataset), and h x lambda heat maps.

    ``configs``: ``report.figure_data``'s dicts (label, measure, panel, grid_key, h, lambda, statistics,
    curves). Returns the PNG paths written.
    """
    from mopo_lightning.analysis.statistics import MIN_RUNS, Interval, curve

    written: list[Path] = []
    panels: dict[str, list[dict]] = {}
    for config in configs:
        panels.setdefault(config["panel"], []).append(config)
    for index, (panel, members) in enumerate(sorted(panels.items())):
        measure = "normalised score" if members[0]["measure"] == "normalized_score" else "return"
        lines = []
        for config in members:
            x, values, tail_x, tail_mean = _aligned(config["curves"])
            if x.size and values.shape[0] >= MIN_RUNS:
                mean, low, high = curve(values, reps, seed)
            elif x.size:  # below MIN_RUNS the band is the seeds' range, as in the tables
                mean, low, high = values.mean(axis=(0, 1)), values.min(axis=(0, 1)), values.max(axis=(0, 1))
            if x.size:
                lines.append((config["label"], x, mean, low, high, tail_x, tail_mean))
        stem = f"{index:02d}_{_slug(panel)}"
        title = f"{panel}: mean over seeds; band: 95% bootstrap CI, or the range below 5 seeds"
        written.append(save(learning_curves(lines, measure, title), out / f"{stem}_curves.png"))
        rows = [(c["label"], {k: Interval(**c["statistics"][k]) for k in ("iqm", "mean")})
                for c in members if c["statistics"]]
        if rows:
            kinds = {r["iqm"].kind for _, r in rows}
            what = "95% bootstrap CIs" if kinds == {"bootstrap"} else "95% bootstrap CIs, or the range below 5 runs"
            written.append(save(interval_plot(rows, f"final {measure}", f"{panel}: {what}"),
                                out / f"{stem}_intervals.png"))
    for index, (key, values, hs, lambdas) in enumerate(heat_map_grids(configs)):
        written.append(save(heat_map(values, hs, lambdas, "final IQM", f"{key}: final IQM over seeds"),
                            out / f"heatmap_{index:02d}_{_slug(key)}.png"))
    return written


def heat_map_grids(configs: Sequence[dict]) -> list[tuple[str, np.ndarray, list, list]]:
    """(grid key, final IQM ``[h, lambda]``, hs, lambdas) per grid of at least 2 x 2. A grid is keyed by
    everything of its configurations but h and lambda (``cells.grid_key``), so one cell holds one
    configuration; two in one cell would be a keying fault: ``ValueError``, never an overwrite."""
    grids: dict[str, list[dict]] = {}
    for config in configs:
        if config["statistics"] and config["h"] is not None and config["lambda"] is not None:
            grids.setdefault(config["grid_key"], []).append(config)
    out = []
    for key, members in sorted(grids.items()):
        hs, lambdas = sorted({c["h"] for c in members}), sorted({c["lambda"] for c in members})
        if len(hs) < 2 or len(lambdas) < 2:
            continue
        values, filled = np.full((len(hs), len(lambdas)), np.nan), set()
        for c in members:
            i, j = hs.index(c["h"]), lambdas.index(c["lambda"])
            if (i, j) in filled:
                raise ValueError(f"heat map {key}: two configurations at h {c['h']}, lambda {c['lambda']:g}")
            values[i, j] = c["statistics"]["iqm"]["value"]
            filled.add((i, j))
        out.append((key, values, hs, lambdas))
    return out


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in text)[:80]


def calibration(rows: Sequence[dict], out: Path) -> Path | None:
    """``report['premise_kinds']`` as one figure: per penalty kind, the Spearman rank correlation of u(s, a)
    with the true one-step model error on the policy's own states, one marker per configuration (its mean over
    runs) and a bar at the mean over configurations. None when no run measured the kinds."""
    kinds = list(dict.fromkeys(k for r in rows for k in r["spearman"]))
    if not kinds:
        return None
    figure = Figure(figsize=(7.0, 3.6))
    ax = figure.add_subplot()
    x = np.arange(len(kinds))
    means = [np.mean([r["spearman"][k] for r in rows if k in r["spearman"]]) for k in kinds]
    ax.bar(x, means, color="tab:blue", alpha=0.35, label="mean over configurations")
    for row in rows:
        points = [(i, row["spearman"][k]) for i, k in enumerate(kinds) if k in row["spearman"]]
        ax.plot([p[0] for p in points], [p[1] for p in points], "o", ms=4, alpha=0.8,
                label=f"{row['configuration']} (n={row['runs']})" if len(rows) <= 8 else None)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, kinds, rotation=20, fontsize=8)
    ax.set_ylabel("Spearman(u, true one-step error)")
    ax.set_title("Which penalty tracks the model's error where the policy goes (final evaluation)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=6, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes
    return save(figure, out / "calibration.png")
