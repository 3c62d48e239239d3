"""DINO's figures: the multi-crop views of an image and the collapse diagnostics per epoch.

Source: Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers",
arXiv:2104.14294, Sec. 3.1 (multi-crop) and Sec. 5.3 / Fig. 7 (collapse).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence

import torch

from .common import show_image

__all__ = ["plot_multicrop", "plot_collapse"]


def plot_multicrop(img: torch.Tensor, crops: Sequence[torch.Tensor], n_global: int = 2, title: Optional[str] = None):
    """The source image, its global views and its local views, drawn at their true relative size.

    Shapes: img (C, H, W); crops: tensors (C, s, s), globals first. Returns a Figure.
    """
    import matplotlib.pyplot as plt

    
    sizes = [img.shape[-1]] + [c.shape[-1] for c in crops]
    fig, axes = plt.subplots(1, len(sizes), figsize=(1.9 * len(sizes), 2.4),
                             gridspec_kw={"width_ratios": sizes})
    show_image(axes[0], img, "image")
    for j, c in enumerate(crops):
        kind = "global" if j < n_global else "local"
        role = "teacher + student" if j < n_global else "student only"
        show_image(axes[j + 1], c, f"{kind} {j + 1}\n{c.shape[-1]} px, {role}")
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
