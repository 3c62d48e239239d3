"""Figures of the CNN-vs-ViT study (notebook 08): accuracy over seeds with confidence intervals,
slide-sized confusion matrices, training curves over seeds, a grid of sample images, and per-frame
latency on a stream with readable millisecond ticks.

One colour per model, the survey's (:data:`survey_lib.viz.compare.MODEL_COLORS`); models are
named by :data:`survey_lib.viz.compare.MODEL_LABELS` where they have a label there. The figures draw
results (the intervals come from :mod:`survey_lib.intervals`); they never train.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from ..intervals import seed_interval
from .common import show_image
from .compare import MODEL_LABELS, model_color

__all__ = ["model_label", "plot_accuracy_intervals", "plot_confusion", "plot_seed_curves", "plot_sample_grid",
           "plot_stream_latency", "latency_ticks"]

FONT = 11  #: the base font size of these figures (readable on a slide at the saved 120 dpi)


def model_label(name: str) -> str:
    """How the figures name model ``name``: its :data:`MODEL_LABELS` entry, else the name itself."""
    return MODEL_LABELS.get(name, name)


def plot_accuracy_intervals(results: pd.DataFrame, binomial: Optional[Mapping[Tuple[str, str], Mapping[str, float]]] = None,
                            models: Optional[Sequence[str]] = None, datasets: Optional[Sequence[str]] = None,
                            confidence: float = 0.95, metric: str = "test_acc", title: Optional[str] = None) -> Figure:
    """Accuracy per model, one panel per dataset: every seed as a dot, the mean as a bar end and its
    Student-t interval over the seeds (:func:`survey_lib.intervals.seed_interval`) as an error bar;
    optionally, beside it, one seed's binomial interval on the test images (hollow marker, thin bar).

    Args:
        results: one row per run, with columns ``dataset``, ``model``, ``seed`` and ``metric``
            (fractions in [0, 1]; drawn in %).
        binomial: ``{(dataset, model): {"acc", "low", "high", ...}}`` from
            :func:`survey_lib.intervals.binomial_interval` (e.g. of seed 0), or None.
        models, datasets: which to draw and in what order (default: their order in ``results``).
        confidence: the coverage of the t-intervals.

    The y axis of each panel ends at 100 % and starts 2 points below the lowest interval end, and
    never above 96 %, so a difference of a point is not drawn as a canyon.

    Returns: the Figure (``1 x len(datasets)`` panels).

    Raises:
        ValueError: a column is missing, no rows, or a (dataset, model) with fewer than 2 seeds.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    missing = {"dataset", "model", "seed", metric} - set(results.columns)
    if missing:
        raise ValueError(f"results lacks the columns {sorted(missing)}; it needs dataset, model, seed and {metric}")
    if results.empty:
        raise ValueError("results has no rows")
    datasets = list(datasets or dict.fromkeys(results["dataset"]))
    models = list(models or dict.fromkeys(results["model"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(1.2 + 3.4 * len(datasets) + 0.5 * len(models), 4.8), squeeze=False)
    n_seeds = set()
    for ax, ds in zip(axes[0], datasets):
        lows = []
        for i, m in enumerate(models):
            vals = results[(results["dataset"] == ds) & (results["model"] == m)][metric].to_numpy(dtype=float)
            if vals.size == 0:
                continue
            ci = seed_interval(vals, confidence)  # raises on fewer than 2 seeds
            n_seeds.add(ci["n"])
            c = model_color(m)
            jitter = np.linspace(-0.12, 0.12, vals.size) if vals.size > 1 else np.zeros(1)
            ax.scatter(i - 0.08 + jitter, 100 * vals, s=28, color=c, alpha=0.75, zorder=3, edgecolor="white", lw=0.5)
            ax.errorbar(i - 0.08, 100 * ci["mean"], yerr=100 * ci["half_width"], fmt="s", color=c, ms=8, capsize=7,
                        elinewidth=2.5, capthick=2.5, zorder=4)
            lows.append(ci["low"])
            b = (binomial or {}).get((ds, m))
            if b is not None:
                ax.errorbar(i + 0.28, 100 * b["acc"], yerr=[[100 * (b["acc"] - b["low"])], [100 * (b["high"] - b["acc"])]],
                            fmt="o", mfc="white", color=c, ms=7, capsize=4, elinewidth=1.2, ls="none", zorder=4)
                lows.append(b["low"])
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels([model_label(m) for m in models], fontsize=FONT)
        ax.set_xlim(-0.6, len(models) - 0.4)
        lo = 100 * min(lows) if lows else 0.0
        ax.set_ylim(max(0.0, min(lo - 2.0, 96.0)), 100.5)
        ax.set_title(ds, fontsize=FONT + 1)
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(labelsize=FONT)
    axes[0][0].set_ylabel(f"{metric.replace('_acc', '').replace('_', ' ')} accuracy (%)", fontsize=FONT)
    n = "/".join(str(k) for k in sorted(n_seeds)) or "?"
    handles = [Line2D([], [], marker="o", ls="none", color="0.4", alpha=0.75, label="one seed"),
               Line2D([], [], marker="s", color="0.2", lw=2.5, label=f"mean, {confidence:.0%} t-interval over {n} seeds")]
    if binomial:
        handles.append(Line2D([], [], marker="o", mfc="white", color="0.2", lw=1.2,
                              label=f"one model (seed 0): {confidence:.0%} binomial interval over the test images"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=FONT - 1, frameon=False,
               bbox_to_anchor=(0.5, -0.01))
    fig.suptitle(title or "test accuracy: the spread over seeds and over test images", fontsize=FONT + 1)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], title: Optional[str] = None) -> Figure:
    """A confusion matrix (rows: true class, columns: predicted) sized for a slide: each cell shows
    the count and the fraction of its true class, the colour is that fraction (0 to 1, colour bar).

    Args:
        cm: (K, K) counts.  class_names: K names.

    Returns: the Figure, at least 5 x 4.4 inches (a 2 x 2 matrix stays readable).

    Raises:
        ValueError: ``cm`` is not square, has negative entries, or ``class_names`` has another length.
    """
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"a confusion matrix is square (K, K), got shape {cm.shape}")
    if (cm < 0).any():
        raise ValueError("a confusion matrix holds counts; it has negative entries")
    k = cm.shape[0]
    if len(class_names) != k:
        raise ValueError(f"{len(class_names)} class names for a {k} x {k} confusion matrix")
    frac = cm / cm.sum(1, keepdims=True).clip(min=1)
    side = max(4.4, 0.62 * k + 1.8)
    fig, ax = plt.subplots(figsize=(side + 0.9, side))
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    size = FONT + 1 if k <= 4 else (FONT - 1 if k <= 10 else FONT - 3)
    for i in range(k):
        for j in range(k):
            text = f"{int(cm[i, j])}\n{frac[i, j]:.0%}" if k <= 4 else f"{int(cm[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=size, color="white" if frac[i, j] > 0.55 else "black")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(class_names, fontsize=FONT, rotation=0 if k <= 4 else 45, ha="center" if k <= 4 else "right")
    ax.set_yticklabels(class_names, fontsize=FONT)
    ax.set_xlabel("predicted", fontsize=FONT)
    ax.set_ylabel("true", fontsize=FONT)
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("fraction of the true class", fontsize=FONT - 1)
    bar.ax.tick_params(labelsize=FONT - 1)
    ax.set_title(title or "confusion matrix", fontsize=FONT)
    fig.tight_layout()
    return fig


def plot_seed_curves(histories: Mapping[str, Sequence[object]], metrics: Sequence[str] = ("train_loss", "val_acc"),
                     title: Optional[str] = None) -> Figure:
    """Per-epoch curves of several seeds per model: every seed a thin line, the mean over seeds a
    thick one, in the model's colour; accuracies in %.

    Args:
        histories: ``{model: [History, ...]}`` (:class:`survey_lib.train.History`, one per seed).
        metrics: row keys to draw, one panel each (an epoch without the key is skipped).

    Raises:
        ValueError: no histories, or a model without any.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not histories:
        raise ValueError("no histories to draw")
    empty = [m for m, hs in histories.items() if not hs]
    if empty:
        raise ValueError(f"models without histories: {empty}")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.8 * len(metrics), 4.0), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        scale = 100.0 if metric.endswith("acc") else 1.0
        for m, hs in histories.items():
            c = model_color(m)
            frames = [pd.DataFrame([(r["epoch"], r[metric]) for r in h.rows if metric in r], columns=["epoch", metric])
                      for h in hs]
            for f in frames:
                ax.plot(f["epoch"], scale * f[metric], color=c, lw=0.8, alpha=0.35)
            mean = pd.concat(frames).groupby("epoch")[metric].mean()
            ax.plot(mean.index, scale * mean.values, color=c, lw=2.2, label=f"{model_label(m)} (mean of {len(hs)})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch", fontsize=FONT)
        ax.set_ylabel(metric.replace("_", " ") + (" (%)" if scale == 100.0 else ""), fontsize=FONT)
        ax.tick_params(labelsize=FONT - 1)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=FONT - 1, loc="best")
    if title:
        fig.suptitle(title, fontsize=FONT + 1)
    fig.tight_layout()
    return fig


def plot_sample_grid(rows: Mapping[str, Sequence[Tuple[torch.Tensor, str]]], title: Optional[str] = None) -> Figure:
    """A grid of images, one row per dataset: ``{row name: [(image (C, H, W), caption), ...]}``.

    Each panel is 1.3 inches wide (captions in the base font), so two rows of eight stay above the
    slide-size floor of ``tests/test_figures.py``.

    Raises:
        ValueError: no rows, or a row without images.
    """
    import matplotlib.pyplot as plt

    if not rows or any(len(v) == 0 for v in rows.values()):
        raise ValueError("plot_sample_grid needs at least one row, each with at least one image")
    ncols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.3 * ncols + 0.6, 1.75 * len(rows) + 0.5), squeeze=False)
    for ax_row, (name, items) in zip(axes, rows.items()):
        for j, ax in enumerate(ax_row):
            if j < len(items):
                show_image(ax, items[j][0])
                ax.set_title(items[j][1], fontsize=FONT - 1)
            else:
                ax.set_axis_off()
        ax_row[0].text(-0.12, 0.5, name, transform=ax_row[0].transAxes, rotation=90, ha="right", va="center",
                       fontsize=FONT)
    if title:
        fig.suptitle(title, fontsize=FONT + 1)
    fig.tight_layout()
    return fig


def latency_ticks(low_ms: float, high_ms: float) -> list:
    """Round tick positions (ms) from the 1-2-5 series that span ``[low_ms, high_ms]`` (both > 0):
    every one inside it, and the nearest one on each side (so the data never touch the frame).

    Raises:
        ValueError: a bound that is not positive, or ``low_ms > high_ms``.
    """
    if not (low_ms > 0 and high_ms > 0) or low_ms > high_ms:
        raise ValueError(f"latency_ticks needs 0 < low <= high, got {low_ms}, {high_ms}")
    ticks = []
    for e in range(int(np.floor(np.log10(low_ms))) - 1, int(np.ceil(np.log10(high_ms))) + 1):
        ticks += [m * 10.0 ** e for m in (1, 2, 5)]
    inside = [t for t in ticks if low_ms <= t <= high_ms]
    below = [t for t in ticks if t < low_ms]
    above = [t for t in ticks if t > high_ms]
    return ([below[-1]] if below else []) + inside + ([above[0]] if above else [])


def plot_stream_latency(per_model_ms: Mapping[str, Sequence[float]], budget_ms: Optional[float] = 1000 / 30,
                        title: Optional[str] = None) -> Figure:
    """Per-frame latency of models on the same stream: a histogram and the cumulative fraction of
    frames, on a log millisecond axis whose ticks are plain numbers (0.5, 1, 2, 5, ... ms) and whose
    range includes the frame ``budget_ms`` (a red line; default 33.3 ms, 30 frames per second).

    Args:
        per_model_ms: ``{model: per-frame milliseconds}`` (e.g. ``survey_lib.cost.stream_latency(...)["ms"]``).

    Raises:
        ValueError: no models, a model without frames, or a latency that is not positive.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    if not per_model_ms:
        raise ValueError("no models to draw")
    data = {m: np.asarray(v, dtype=float) for m, v in per_model_ms.items()}
    for m, v in data.items():
        if v.size == 0:
            raise ValueError(f"{m}: no frames")
        if not (np.all(np.isfinite(v)) and np.all(v > 0)):
            raise ValueError(f"{m}: latencies must be positive, finite milliseconds")
    lo = min(v.min() for v in data.values())
    hi = max([v.max() for v in data.values()] + ([budget_ms] if budget_ms else []))
    ticks = latency_ticks(lo, hi)
    bins = np.geomspace(ticks[0], ticks[-1], 50)
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.2))
    for m, v in data.items():
        c, label = model_color(m), model_label(m)
        axes[0].hist(v, bins=bins, histtype="step", lw=1.8, color=c, label=label)
        x = np.sort(v)
        axes[1].step(x, np.arange(1, x.size + 1) / x.size, where="post", color=c, lw=2, label=label)
    fmt = FuncFormatter(lambda t, _: f"{t:g}")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlim(ticks[0], ticks[-1])
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(fmt)
        ax.xaxis.set_minor_locator(NullLocator())
        if budget_ms:
            ax.axvline(budget_ms, color="red", ls="--", lw=1.3, label=f"30 fps budget ({budget_ms:.1f} ms)"
                       if abs(budget_ms - 1000 / 30) < 1e-9 else f"budget ({budget_ms:g} ms)")
        ax.set_xlabel("per-frame latency (ms, log scale)", fontsize=FONT)
        ax.tick_params(labelsize=FONT)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("frames", fontsize=FONT)
    axes[1].set_ylabel("fraction of frames at or below", fontsize=FONT)
    axes[1].set_ylim(0, 1.02)
    axes[0].set_title("distribution", fontsize=FONT)
    axes[1].set_title("cumulative", fontsize=FONT)
    axes[1].legend(fontsize=FONT - 1, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=FONT + 1)
    fig.tight_layout()
    return fig
