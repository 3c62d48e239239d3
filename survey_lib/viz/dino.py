"""DINO's figures: the multi-crop views of an image and the collapse diagnostics per epoch.

Source: Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers",
arXiv:2104.14294, Sec. 3.1 (multi-crop) and Sec. 5.3 / Fig. 7 (collapse).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence

import torch

from .common import show_image

__all__ = ["plot_multicrop", "plot_collapse", "STUDY_COLORS", "plot_study", "plot_stroke_attention"]


def plot_multicrop(img: torch.Tensor, crops: Sequence[torch.Tensor], n_global: int = 2, title: Optional[str] = None):
    """The source image, its global views and its local views, drawn at their true relative size.

    Shapes: img (C, H, W); crops: tensors (C, s, s), globals first. Returns a Figure.
    """
    import matplotlib.pyplot as plt

    
    sizes = [img.shape[-1]] + [c.shape[-1] for c in crops]
    fig, axes = plt.subplots(1, len(sizes), figsize=(2.0 * len(sizes), 3.0),
                             gridspec_kw={"width_ratios": sizes})
    show_image(axes[0], img, "image")
    for j, c in enumerate(crops):
        kind = "global" if j < n_global else "local"
        role = "teacher + student" if j < n_global else "student only"
        show_image(axes[j + 1], c, f"{kind} {j + 1}, {c.shape[-1]} px\n{role}" if j < n_global else f"{kind} {j + 1}\n{c.shape[-1]} px\n{role}")
    fig.suptitle(title or "multi-crop: the teacher sees the global views, the student sees all", fontsize=10)
    fig.tight_layout()
    return fig


def plot_collapse(histories: Dict[str, Any], out_dim: int, title: Optional[str] = None):
    """Teacher entropy (against 0 and log K) and KL(P_t || P_s) per epoch for several runs (DINO Fig. 7).

    Args:
        histories: ``{run name: History}`` whose rows hold ``teacher_entropy`` and ``kl``.
        out_dim: K, to draw the ``log K`` line (uniform collapse).
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    keys = [("teacher_entropy", "teacher entropy H(P_t) (nats)"),
            ("teacher_marginal_entropy", "entropy of the batch-mean P_t"),
            ("kl", "KL(P_t || P_s) (nats)")]
    for ax, (key, label) in zip(axes, keys):
        for name, h in histories.items():
            ys = h.series(key)
            ax.plot(range(1, len(ys) + 1), ys, marker="o", ms=3, label=name)
        if key != "kl":
            ax.axhline(math.log(out_dim), color="k", ls="--", lw=1)
            ax.text(1, math.log(out_dim), f" log K = {math.log(out_dim):.2f}", va="bottom", fontsize=8)
            ax.axhline(0.0, color="grey", ls=":", lw=1)
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[-1].set_yscale("symlog", linthresh=1e-2)
    axes[0].legend(fontsize=8)
    fig.suptitle(title or "collapse diagnostics (DINO Sec. 5.3, Fig. 7)", fontsize=10)
    fig.tight_layout()
    return fig


#: One colour per row of notebook 07's study (the trained models keep the survey's colours of
#: :data:`survey_lib.viz.compare.MODEL_COLORS`: the ViT's for DINO-ViT, NAT's for DinoNAT; the controls grey).
STUDY_COLORS: Dict[str, str] = {
    "dino_vit": "#0173b2", "dino_nat": "#029e73", "dino_no_centering": "#de8f05", "dino_no_sharpening": "#d55e00",
    "dino_source_sign": "#cc78bc", "dino_epoch_teacher": "#ca9161", "random_vit": "#949494", "random_nat": "#b0b0b0",
    "raw_pixels": "#404040",
}


def plot_study(values: Dict[str, Dict[str, Sequence[float]]], labels: Optional[Dict[str, str]] = None,
               title: Optional[str] = None, xlabel: str = "test accuracy"):
    """Accuracy of every row of a study, one panel per probe: a bar at the mean over seeds and one dot
    per seed, on an axis from 0 to 1 (a difference is never exaggerated by a cut axis).

    Args:
        values: ``{probe title: {method: [value per seed]}}`` (a single value: no seeds, e.g. raw pixels).
        labels: how to name each method (default: the method).  xlabel: the axis label.

    Raises:
        ValueError: no panels, or panels with different methods.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    if not values:
        raise ValueError("plot_study needs at least one panel")
    methods = list(next(iter(values.values())))
    if any(list(v) != methods for v in values.values()):
        raise ValueError("every panel must list the same methods in the same order")
    labels = labels or {}
    fig, axes = plt.subplots(1, len(values), figsize=(5.2 * len(values), 0.45 * len(methods) + 1.6), sharey=True)
    axes = np.atleast_1d(axes)
    y = np.arange(len(methods))[::-1]
    for ax, (panel, vals) in zip(axes, values.items()):
        for yi, m in zip(y, methods):
            v = np.asarray(vals[m], dtype=float)
            colour = STUDY_COLORS.get(m, "#7f7f7f")
            ax.barh(yi, v.mean(), color=colour, alpha=0.75, height=0.7)
            if v.size > 1:
                ax.plot(v, np.full(v.size, yi), "o", color="k", ms=4, alpha=0.8)
            ax.text(min(v.mean() + 0.01, 0.9), yi, f"{v.mean():.3f}" + (f" (n={v.size})" if v.size > 1 else ""),
                    va="center", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_xlabel(xlabel, fontsize=11)
        ax.set_title(panel, fontsize=12)
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(y)
    axes[0].set_yticklabels([labels.get(m, m) for m in methods], fontsize=10)
    fig.suptitle(title or "frozen teacher features: mean over seeds (bar) and each seed (dot)", fontsize=12)
    fig.tight_layout()
    return fig


def plot_stroke_attention(ratios: Dict[str, Sequence[Sequence[float]]], title: Optional[str] = None):
    """Per head, the attention mass on stroke pixels divided by the stroke's share of the image (1: a
    head blind to the content), one group of bars per model, one dot per seed.

    Args:
        ratios: ``{model: [[ratio of head h for seed s] per head] per seed]}`` (seeds x heads).

    Raises:
        ValueError: models with different numbers of heads.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    heads = {len(r[0]) for r in ratios.values()}
    if len(heads) != 1:
        raise ValueError(f"every model must have the same number of heads, got {sorted(heads)}")
    h = heads.pop()
    fig, ax = plt.subplots(figsize=(1.4 * h + 3.5, 3.6))
    width = 0.8 / len(ratios)
    for j, (name, r) in enumerate(ratios.items()):
        r = np.asarray(r, dtype=float)  # (seeds, heads)
        x = np.arange(h) + (j - (len(ratios) - 1) / 2) * width
        key = "dino_vit" if "DINO" in name else "random_vit" if "random" in name else name
        ax.bar(x, r.mean(0), width=width * 0.9, color=STUDY_COLORS.get(key, "#7f7f7f"), alpha=0.8, label=name)
        for s in range(r.shape[0]):
            ax.plot(x, r[s], "o", color="k", ms=3, alpha=0.7)
    ax.axhline(1.0, color="k", ls="--", lw=1)
    ax.text(h - 0.5, 1.0, "blind to the stroke", va="bottom", ha="right", fontsize=9)
    ax.set_ylim(0, None)
    ax.set_xticks(range(h))
    ax.set_xticklabels([f"head {i}" for i in range(h)], fontsize=10)
    ax.set_ylabel("attention on stroke / stroke share", fontsize=10)
    ax.legend(fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(title or "last-layer CLS attention on the stroke, per head (test digits)", fontsize=11)
    fig.tight_layout()
    return fig
