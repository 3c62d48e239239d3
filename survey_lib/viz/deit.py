"""Figures of notebook 02's distillation study (:mod:`survey_lib.recipes.deit_study`): test accuracy
of every variant with its seeds and their spread, and validation curves over training.

One colour per model across the survey (:data:`survey_lib.viz.compare.MODEL_COLORS`): the ViT without
distillation in the ViT's colour, the distilled students in DeiT's, the CNN teacher in the ResNet's;
the variants of one model differ by marker or line style. The figures draw results; they never train.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .compare import model_color

__all__ = ["STUDENT_COLOR_KEYS", "variant_color", "study_frame", "study_curves", "plot_study", "plot_study_curves"]

#: The colour key of each kind of run (``Variant.student``) in :data:`survey_lib.viz.compare.MODEL_COLORS`.
STUDENT_COLOR_KEYS = {"vit": "vit", "deit": "deit", "teacher": "resnet"}

_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))
_MARKERS = ("o", "s", "D", "^", "v", "P")


def variant_color(student: str) -> str:
    """The colour of a run of kind ``student`` (``"vit"``, ``"deit"`` or ``"teacher"``)."""
    return model_color(STUDENT_COLOR_KEYS.get(student, student))


def study_frame(study: Mapping[str, object], variants: Mapping[str, object]) -> pd.DataFrame:
    """One row per run of a study ``{name: SeedsResult}``: ``name``, ``label``, ``student``,
    ``fraction``, ``seed``, ``val_acc`` (last epoch), ``test_acc``, ``seconds`` (training wall time).

    Args:
        variants: ``{name: Variant}`` (:data:`survey_lib.recipes.deit_study.VARIANTS`).

    Raises:
        ValueError: a run whose name is not in ``variants``.
    """
    rows = []
    for name, runs in study.items():
        if name not in variants:
            raise ValueError(f"{name!r} is not a variant of the study; it has {list(variants)}")
        v = variants[name]
        for run in runs.results:
            rows.append({"name": name, "label": v.label, "student": v.student, "fraction": float(v.fraction),
                         "seed": run.seed, "val_acc": run.history.last["val_acc"], "test_acc": run.metrics["test_acc"],
                         "seconds": run.history.seconds})
    return pd.DataFrame(rows)


def study_curves(study: Mapping[str, object], names: Sequence[str]) -> pd.DataFrame:
    """The validation curve of every run of ``names``: ``name``, ``seed``, ``epoch``, ``val_acc`` (the
    epochs on which validation was evaluated)."""
    rows = []
    for name in names:
        for run in study[name].results:
            rows += [{"name": name, "seed": run.seed, "epoch": r["epoch"], "val_acc": r["val_acc"]}
                     for r in run.history.rows if "val_acc" in r]
    return pd.DataFrame(rows)


def plot_study(frame: pd.DataFrame, panels: Sequence[Sequence[str]], titles: Sequence[str], metric: str = "test_acc",
               xlim: Optional[Sequence[float]] = None, title: Optional[str] = None) -> Figure:
    """Accuracy of each variant: the mean over seeds (a large marker) with a bar of +- one standard
    deviation, and every seed (small dots); one panel per group of variants, on one shared x axis
    (percent) so that the panels compare.

    Args:
        frame: :func:`study_frame`.  panels: the variant names of each panel, top to bottom.
        titles: one per panel.  xlim: the x range in percent (default: 2 points below the lowest
            seed to 100).

    Raises:
        ValueError: a missing column, a panel naming a variant the frame lacks, or a number of titles
            different from the number of panels.
    """
    import matplotlib.pyplot as plt

    missing = {"name", "label", "student", "seed", metric} - set(frame.columns)
    if missing:
        raise ValueError(f"frame lacks the columns {sorted(missing)}; build it with study_frame(study, VARIANTS)")
    if len(titles) != len(panels):
        raise ValueError(f"{len(panels)} panels but {len(titles)} titles")
    absent = [n for p in panels for n in p if n not in set(frame["name"])]
    if absent:
        raise ValueError(f"the frame holds no run of {absent}")
    heights = [max(1.6, 0.55 * len(p) + 0.9) for p in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.6, sum(heights)), sharex=True,
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    values = 100 * frame[frame["name"].isin([n for p in panels for n in p])][metric]
    lo, hi = xlim if xlim is not None else (max(0.0, float(np.floor(values.min())) - 2.0), 100.0)
    for ax, names, panel_title in zip(axes[:, 0], panels, titles):
        for i, name in enumerate(names):
            g = frame[frame["name"] == name]
            acc = 100 * g[metric].to_numpy()
            y = len(names) - 1 - i
            color = variant_color(g["student"].iloc[0])
            mean = acc.mean()
            std = acc.std(ddof=1) if len(acc) > 1 else 0.0
            ax.errorbar(mean, y, xerr=std, fmt="o", ms=8, color=color, ecolor=color, elinewidth=2, capsize=4, zorder=3)
            ax.scatter(acc, np.full(len(acc), y) - 0.22, s=14, color=color, alpha=0.6, zorder=2)
            ax.annotate(f"{mean:.2f}", (mean, y), xytext=(0, 7), textcoords="offset points", ha="center", fontsize=9)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels([frame[frame["name"] == n]["label"].iloc[0] for n in reversed(names)], fontsize=10)
        ax.set_ylim(-0.7, len(names) - 0.3)
        ax.set_title(panel_title, fontsize=11, loc="left")
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlim(lo, hi)
    n = int(frame.groupby("name")["seed"].nunique().min())
    axes[-1, 0].set_xlabel(f"{metric.replace('_acc', '')} accuracy (%): mean ± 1 std over {n} seeds, dots = seeds",
                           fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_study_curves(curves: pd.DataFrame, names: Sequence[str], labels: Mapping[str, str],
                      students: Mapping[str, str], ylim: Optional[Sequence[float]] = None,
                      title: Optional[str] = None, xlabel: str = "epoch") -> Figure:
    """Validation accuracy against epoch, the mean over seeds of each variant (colour: its model;
    line style: the variant within the model).

    Args:
        curves: :func:`study_curves`.  labels / students: ``{name: label}`` and ``{name: kind}``.
        ylim: the y range in percent (default: from 2 points below the lowest mean of the second half
            of training to 100).  xlabel: the x axis's label (say what an epoch is when runs differ).

    Raises:
        ValueError: a missing column or a variant without a curve.
    """
    import matplotlib.pyplot as plt

    missing = {"name", "seed", "epoch", "val_acc"} - set(curves.columns)
    if missing:
        raise ValueError(f"curves lacks the columns {sorted(missing)}; build it with study_curves(study, names)")
    absent = [n for n in names if n not in set(curves["name"])]
    if absent:
        raise ValueError(f"no curve for {absent}")
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    used: dict = {}
    late = []
    for name in names:
        mean = curves[curves["name"] == name].groupby("epoch")["val_acc"].mean()
        kind = students[name]
        k = used.get(kind, 0)
        used[kind] = k + 1
        # past the line styles, markers keep every variant of a colour apart
        marker = None if k < len(_STYLES) else _MARKERS[(k // len(_STYLES) - 1) % len(_MARKERS)]
        ax.plot(mean.index, 100 * mean.values, linestyle=_STYLES[k % len(_STYLES)], color=variant_color(kind), lw=2,
                marker=marker, markevery=max(1, len(mean) // 12), markersize=5, label=labels[name])
        late.append(100 * mean[mean.index >= mean.index.max() / 2].min())
    lo, hi = ylim if ylim is not None else (max(0.0, float(np.floor(min(late))) - 2.0), 100.0)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(xlabel, fontsize=11)
    ax.set_ylabel("validation accuracy (%)" + (f", axis from {lo:.0f}" if lo > 0 else ""), fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="lower right")
    ax.set_title(title or "validation accuracy during training (mean over seeds)", fontsize=11)
    fig.tight_layout()
    return fig
