"""Figures of the inductive-bias comparison (notebook 11): one colour per model, accuracy against
training-set size with error bands over seeds, and validation accuracy against wall time.

The figures take tidy frames (:func:`results_frame`, :func:`curves_frame`) built from the study of
:func:`survey_lib.recipes.compare.equal_terms_study`; they draw results, they never train.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = ["MODEL_COLORS", "MODEL_LABELS", "model_color", "results_frame", "curves_frame", "plot_learning_curves",
           "plot_accuracy_vs_time"]

#: One colour per model across the survey's comparison figures (seaborn's colour-blind palette).
MODEL_COLORS: Dict[str, str] = {
    "vit": "#0173b2", "swin": "#de8f05", "swin_no_shift": "#ece133", "nat": "#029e73", "nat_eqflops": "#66c2a5", "resnet": "#d55e00",
    "deit": "#cc78bc", "mae": "#ca9161", "dino": "#fbafe4", "clip": "#949494", "simclr": "#56b4e9",
}
#: How the figures name the models.
MODEL_LABELS: Dict[str, str] = {"vit": "ViT", "swin": "Swin", "swin_no_shift": "Swin, no shifted windows",
                                "nat": "NAT", "nat_eqflops": "NAT at Swin's FLOPs", "resnet": "ResNet"}


def model_color(name: str) -> str:
    """The colour of model ``name`` (grey for a name without one)."""
    return MODEL_COLORS.get(name, "#7f7f7f")


def results_frame(study: Mapping[Tuple[str, float], object],
                  train_images: Optional[Mapping[float, int]] = None) -> pd.DataFrame:
    """One row per run of a study ``{(model, fraction): SeedsResult}``: ``model``, ``fraction``,
    ``seed``, ``train_images`` (from ``train_images[fraction]``; NaN without it), ``epochs``,
    ``val_acc`` (last epoch), ``test_acc``, ``seconds`` (training wall time)."""
    rows = []
    for (name, fraction), runs in study.items():
        for run in runs.results:
            rows.append({"model": name, "fraction": float(fraction), "seed": run.seed,
                         "train_images": (train_images or {}).get(float(fraction), np.nan), "epochs": len(run.history.rows),
                         "val_acc": run.history.last["val_acc"], "test_acc": run.metrics["test_acc"],
                         "seconds": run.history.seconds})
    return pd.DataFrame(rows)


def curves_frame(study: Mapping[Tuple[str, float], object], fraction: float = 1.0) -> pd.DataFrame:
    """One row per epoch of every run at ``fraction``: ``model``, ``seed``, ``epoch``, ``seconds``
    (cumulative training wall time, s), ``val_acc``."""
    rows = []
    for (name, f), runs in study.items():
        if float(f) != float(fraction):
            continue
        for run in runs.results:
            elapsed = 0.0
            for r in run.history.rows:
                elapsed += r["seconds"]
                rows.append({"model": name, "seed": run.seed, "epoch": r["epoch"], "seconds": elapsed,
                             "val_acc": r["val_acc"]})
    return pd.DataFrame(rows)


def plot_learning_curves(results: pd.DataFrame, metric: str = "test_acc", models: Optional[Sequence[str]] = None,
                         ylim: Optional[Tuple[float, float]] = None, title: Optional[str] = None) -> Figure:
    """Accuracy against the number of training images, one line per model (mean over seeds) with a
    band of +- one standard deviation, log-scaled x axis.

    Args:
        results: :func:`results_frame` (needs ``model``, ``train_images``, ``metric``).

    Raises:
        ValueError: a column is missing.
    """
    import matplotlib.pyplot as plt

    missing = {"model", "train_images", metric} - set(results.columns)
    if missing:
        raise ValueError(f"results lacks the columns {sorted(missing)}; build it with results_frame(study)")
    models = list(models or dict.fromkeys(results["model"]))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name in models:
        g = results[results["model"] == name].groupby("train_images")[metric]
        mean, std = g.mean(), g.std(ddof=1).fillna(0.0)
        n = int(g.size().min()) if len(g.size()) else 0
        ax.plot(mean.index, 100 * mean.values, "o-", color=model_color(name), lw=2,
                label=f"{MODEL_LABELS.get(name, name)}")
        ax.fill_between(mean.index, 100 * (mean - std).values, 100 * (mean + std).values, color=model_color(name),
                        alpha=0.2, lw=0)
    ax.set_xscale("log")
    ticks = sorted(results["train_images"].unique())
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{int(t)}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("labelled training images (log scale)", fontsize=11)
    ax.set_ylabel(f"{metric.replace('_acc', '').replace('_', ' ')} accuracy (%)", fontsize=11)
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=10, loc="lower right")
    ax.set_title(title or f"accuracy against training-set size (bands: +- 1 std over {n} seeds)", fontsize=11)
    fig.tight_layout()
    return fig


def plot_accuracy_vs_time(curves: pd.DataFrame, models: Optional[Sequence[str]] = None,
                          budget: Optional[float] = None, ylim: Optional[Tuple[float, float]] = None) -> Figure:
    """Validation accuracy against cumulative training time, one line per model (mean over seeds at
    each epoch), with an optional vertical line at a time ``budget`` (s). The ``seconds`` column is
    whatever clock the caller chose (notebook 11: epochs times the interleaved-timing seconds per
    epoch of :func:`survey_lib.recipes.compare.seconds_per_epoch`).

    Args:
        curves: :func:`curves_frame` (needs ``model``, ``epoch``, ``seconds``, ``val_acc``).

    Raises:
        ValueError: a column is missing.
    """
    import matplotlib.pyplot as plt

    missing = {"model", "epoch", "seconds", "val_acc"} - set(curves.columns)
    if missing:
        raise ValueError(f"curves lacks the columns {sorted(missing)}; build it with curves_frame(study)")
    models = list(models or dict.fromkeys(curves["model"]))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name in models:
        g = curves[curves["model"] == name].groupby("epoch")[["seconds", "val_acc"]].mean()
        ax.plot(g["seconds"], 100 * g["val_acc"], "-", color=model_color(name), lw=2, label=MODEL_LABELS.get(name, name))
    if budget is not None:
        ax.axvline(budget, color="grey", ls="--", lw=1, label="the ViT's training time")
    ax.set_xlabel("training time (s, one CPU thread)", fontsize=11)
    ax.set_ylabel("validation accuracy (%)", fontsize=11)
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=10, loc="lower right")
    ax.set_title("validation accuracy against training time (mean over seeds)", fontsize=11)
    fig.tight_layout()
    return fig
