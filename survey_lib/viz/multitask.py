"""The ITMO thesis's framework pictured, and the views of one image.

Source: the ITMO MSc thesis "Bringing Vision Transformers Closer to Individuals" (2022), its framework figure.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch

from .common import show_image

__all__ = ["plot_framework", "plot_views"]


def plot_framework(n_local: int = 6, title: Optional[str] = None):
    """The framework pictured: views -> student (three heads) and EMA teacher (one head) -> losses.

    Returns a Figure (boxes and arrows drawn with matplotlib).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(11, 5.2))
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 6)
    ax.set_axis_off()

    def box(x, y, w, h, text, color, fs=9):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=color, ec="k", lw=0.8))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fs)
        return (x, y, w, h)

    def arrow(a, b, style="-|>", color="k", ls="-"):
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=12, color=color, lw=1.0, ls=ls))

    box(0.1, 4.3, 1.9, 0.9, "2 global views\n(rotated 0/90/180/270)", "#cfe2f3")
    box(0.1, 3.1, 1.9, 0.9, "1 masked global view\n(40-60% masked, rotated)", "#cfe2f3")
    box(0.1, 1.7, 1.9, 0.9, f"{n_local} local views\n(upright)", "#d9ead3")
    box(3.0, 3.6, 1.6, 1.2, "student\nViT", "#fff2cc", 10)
    box(3.0, 0.7, 1.6, 1.2, "teacher\nViT (EMA)", "#fce5cd", 10)
    box(5.4, 4.9, 1.9, 0.7, "contrastive head\n(DINO MLP)", "#ead1dc")
    box(5.4, 3.9, 1.9, 0.7, "supervised head\n(linear, K classes)", "#ead1dc")
    box(5.4, 2.9, 1.9, 0.7, "rotation head\n(linear, 4)", "#ead1dc")
    box(5.4, 0.9, 1.9, 0.7, "contrastive head\n(EMA copy)", "#ead1dc")
    box(8.2, 4.0, 2.6, 1.3, "self-distillation (x 1.0)\nH(P_t(x), P_s(x')),\nx in {g1, g2, m}, x' != x", "#f4cccc")
    box(8.2, 2.6, 2.6, 1.0, "supervised CE (x 2.5)\nlabelled, upright views", "#f4cccc")
    box(8.2, 1.3, 2.6, 1.0, "rotation CE (x 1.0)\nquarter turn of each\nglobal-sized view", "#f4cccc")
    for y in (4.75, 3.55, 2.15):
        arrow((2.05, y), (2.95, 4.2))
    arrow((2.05, 4.5), (2.95, 1.5), color="tab:brown")
    arrow((2.05, 3.4), (2.95, 1.3), color="tab:brown")
    for y in (5.25, 4.25, 3.25):
        arrow((4.65, 4.2), (5.35, y))
    arrow((4.65, 1.3), (5.35, 1.25))
    arrow((7.35, 5.25), (8.15, 4.8))
    arrow((7.35, 1.25), (8.15, 4.3), color="tab:brown")
    arrow((7.35, 4.25), (8.15, 3.1))
    arrow((7.35, 3.25), (8.15, 1.8))
    arrow((3.8, 3.55), (3.8, 1.95), style="-|>", color="grey", ls="--")
    ax.text(3.9, 2.7, "EMA\n(no gradient)", fontsize=8, color="grey")
    ax.set_title(title or "the multi-task self-distillation framework (thesis S4, \"Tort\")", fontsize=11)
    return fig


def plot_views(img: torch.Tensor, batch: Mapping[str, Any], index: int = 0, n_global: int = 3,
               title: Optional[str] = None):
    """One image and its views from a :class:`MultiTaskViews` batch, with rotation labels.

    Shapes: img (C, H, W) in [0, 1]; ``batch["views"]`` tensors (B, C, s, s) (denormalised for
    display by the caller or min-max scaled here). Returns a Figure.
    """
    import matplotlib.pyplot as plt

    
    views = [v[index] for v in batch["views"]]
    sizes = [img.shape[-1]] + [v.shape[-1] for v in views]
    fig, axes = plt.subplots(1, len(sizes), figsize=(1.7 * len(sizes), 2.8), gridspec_kw={"width_ratios": sizes})
    show_image(axes[0], img, "image")
    for j, v in enumerate(views):
        if j < n_global:
            deg = 90 * int(batch["rotations"][j, index])
            kind = "masked" if (j == 2 and batch.get("mask") is not None) else f"global {j + 1}"
            show_image(axes[j + 1], v, f"{kind}\nrot {deg} deg")
        else:
            show_image(axes[j + 1], v, f"local {j - n_global + 1}\n(upright)")
    fig.suptitle(title or "the framework's views of one digit (teacher: the global-sized ones)", fontsize=10)
    fig.tight_layout()
    return fig
