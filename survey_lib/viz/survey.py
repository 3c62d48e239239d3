"""Figures of the survey tables: cost scatters, the family tree of variants, stream latency.

Sources: the review's Tables 1-2 and the variants in :mod:`survey_lib.zoo`.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from ..zoo import AXES, VARIANTS, Variant, timm_models_for

__all__ = ["plot_cost_scatter", "plot_family_tree", "plot_latency_distribution"]


def plot_cost_scatter(df, x: str, y: str, hue: Optional[str] = "axis", label: str = "model", logx: bool = True,
                      logy: bool = True, xlabel: Optional[str] = None, ylabel: Optional[str] = None,
                      title: Optional[str] = None, ax=None):
    """A seaborn scatter of two cost columns of a measurement table, every point labelled (labels
    placed by adjustText so that they neither overlap each other nor hide the points).

    Returns:
        the matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    from adjustText import adjust_text

    d = df.dropna(subset=[x, y])
    if ax is None:
        fig, ax = plt.subplots(figsize=(8.5, 6))
    else:
        fig = ax.figure
    sns.scatterplot(data=d, x=x, y=y, hue=hue if hue in d.columns else None, s=60, ax=ax)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    # labels are moved apart from each other and from the points (adjustText), with a thin line back to
    # their point where they had to move, so a dense cluster (the Base-size models) stays readable
    texts = [ax.text(r[x], r[y], str(r[label]), fontsize=9) for _, r in d.iterrows()]
    adjust_text(texts, x=d[x].to_numpy(dtype=float), y=d[y].to_numpy(dtype=float), ax=ax,
                expand=(1.2, 1.4), arrowprops=dict(arrowstyle="-", color="0.5", lw=0.5))
    ax.set_xlabel(xlabel or x, fontsize=11)
    ax.set_ylabel(ylabel or y, fontsize=11)
    ax.grid(alpha=0.3, which="both")
    if title:
        ax.set_title(title, fontsize=12)
    if ax.get_legend() is not None:
        ax.legend(fontsize=9, loc="lower right", title="axis of change", title_fontsize=9)
    fig.tight_layout()
    return fig


def plot_family_tree(variants: Optional[Sequence[Variant]] = None, in_timm: Optional[Dict[str, bool]] = None):
    """Family tree as a timeline: one row per variant in order of arXiv date, one column per axis of
    change, arrows from the variant each builds on, and what it changed written beside it.

    Args:
        variants: default :data:`VARIANTS` without the CNN reference (ResNet).
        in_timm: key -> bool; filled markers are in timm, hollow ones are not (default: looked up in
            the installed timm).

    Returns:
        the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    if variants is None:
        variants = [v for v in VARIANTS if v.key != "ResNet"]
    if in_timm is None:
        in_timm = {v.key: bool(timm_models_for(v)) for v in variants}
    rows = sorted(variants, key=lambda v: (v.date, v.key))
    lanes = [a for a in AXES if any(v.axis == a for v in rows)]
    pos = {v.key: (lanes.index(v.axis), -i) for i, v in enumerate(rows)}
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(14, 0.34 * len(rows) + 1.6))
    text_x = len(lanes) - 0.3
    for i, v in enumerate(rows):  # guide lines and year separators
        ax.plot([-0.5, text_x], [-i, -i], color="0.92", lw=0.6, zorder=0)
        year = int(v.date)
        if i == 0 or year != int(rows[i - 1].date):
            ax.axhline(-i + 0.5, color="0.55", lw=0.8, zorder=0)
            ax.text(-0.65, -i + 0.3, str(year), ha="right", va="top", fontsize=9, weight="bold", color="0.35")
    for v in rows:
        if v.parent in pos:
            (x0, y0), (x1, y1) = pos[v.parent], pos[v.key]
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=1,
                        arrowprops=dict(arrowstyle="-|>", color="0.55", lw=0.7, shrinkA=5, shrinkB=5,
                                        connectionstyle="arc3,rad=-0.25" if x1 != x0 else "arc3,rad=0.5"))
    for v in rows:
        x, y = pos[v.key]
        c = cmap(AXES.index(v.axis) % 10)
        ax.scatter([x], [y], s=55, color=c if in_timm.get(v.key) else "white", edgecolors=c, linewidths=1.6,
                   zorder=3)
        month = int(round((v.date % 1) * 12 + 0.5))
        ax.text(text_x, y, f"{v.key}", va="center", fontsize=8.5, weight="bold")
        ax.text(text_x + 1.55, y, f"{int(v.date)}-{month:02d}  {v.change}" + ("" if in_timm.get(v.key) else "  [not in timm]"),
                va="center", fontsize=7.5, color="0.2")
    ax.set_xticks(range(len(lanes)))
    ax.set_xticklabels(lanes, rotation=35, ha="left", fontsize=9)
    ax.xaxis.tick_top()
    ax.set_yticks([])
    ax.set_xlim(-1.3, text_x + 9.5)
    ax.set_ylim(-len(rows) + 0.4, 0.7)
    for side in ("right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.set_title("ViT variants: what each changed (column), when (row, by arXiv date), what it builds on (arrow);"
                 " hollow = not in timm", fontsize=10, pad=12)
    fig.tight_layout()
    return fig


def plot_latency_distribution(per_model_ms: Dict[str, np.ndarray], budget_ms: Optional[float] = 1000 / 30,
                              title: Optional[str] = None):
    """Per-frame latency of several models on the same stream: histogram (log x) and ECDF.

    Args:
        per_model_ms: model name -> per-frame milliseconds.
        budget_ms: a frame budget to draw (default 33.3 ms, i.e. 30 frames per second).

    Returns:
        the matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    df = pd.concat([pd.DataFrame({"model": k, "ms": np.asarray(v)}) for k, v in per_model_ms.items()],
                   ignore_index=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    sns.histplot(data=df, x="ms", hue="model", bins=40, log_scale=True, element="step", ax=axes[0])
    sns.ecdfplot(data=df, x="ms", hue="model", log_scale=True, ax=axes[1])
    for ax in axes:
        if budget_ms:
            ax.axvline(budget_ms, color="red", ls="--", lw=1)
        ax.set_xlabel("per-frame latency (ms, log scale)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_title("distribution")
    axes[1].set_title("cumulative (red: 30 fps budget)" if budget_ms else "cumulative")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
