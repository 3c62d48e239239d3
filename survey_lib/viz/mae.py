"""MAE's figures: the masking of an image and reconstructions of removed patches.

Source: He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners", arXiv:2111.06377, Fig. 2-4.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch

from ..layers import patchify, unpatchify

__all__ = ["plot_masking", "plot_reconstructions"]


def _masked_view(imgs: torch.Tensor, mask: torch.Tensor, patch_size: int, fill: float = float("nan")) -> torch.Tensor:
    """Images with removed patches set to ``fill`` (NaN draws as the axes' background)."""
    B, C, H, W = imgs.shape
    patches = patchify(imgs, patch_size)  # (B, N, L)
    patches = patches.masked_fill(mask.bool().unsqueeze(-1), fill)
    return unpatchify(patches, patch_size, (H // patch_size, W // patch_size), C)  # (B, C, H, W)


def _imshow(ax, img: torch.Tensor, vmin: float = 0.0, vmax: float = 1.0, title: Optional[str] = None) -> None:
    import numpy as np

    arr = img.detach().float().cpu()
    arr = arr[0].numpy() if arr.shape[0] == 1 else arr.permute(1, 2, 0).numpy()
    if arr.ndim == 3:
        arr = np.clip(arr, vmin, vmax)
        arr = np.where(np.isnan(arr), 0.85, arr)  # removed patches drawn light grey
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=vmin, vmax=vmax)
    ax.set_facecolor((0.85, 0.85, 0.85))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def plot_masking(img: torch.Tensor, mask: torch.Tensor, ids_keep: torch.Tensor, patch_size: int,
                 vmin: float = 0.0, vmax: float = 1.0):
    """Three panels: patches numbered in ``patchify`` (row-major) order, the removed patches greyed,
    and the visible patches in the order the encoder receives them (``ids_keep``).

    Shapes: img (C, H, W) in [vmin, vmax]; mask (N,); ids_keep (N_vis,). Returns a Figure.
    """
    import matplotlib.pyplot as plt

    C, H, W = img.shape
    gw = W // patch_size
    N = (H // patch_size) * gw
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.6), gridspec_kw=dict(width_ratios=[1, 1, 1.35]))
    _imshow(axes[0], img, vmin, vmax, f"patch order: n = i * {gw} + j")
    _imshow(axes[1], _masked_view(img[None], mask[None], patch_size)[0], vmin, vmax,
            f"{int(mask.sum())} of {N} removed ({mask.mean():.0%})")
    fs = max(4, 48 // gw)
    for n in range(N):
        i, j = divmod(n, gw)
        y, x = i * patch_size + patch_size / 2 - 0.5, j * patch_size + patch_size / 2 - 0.5
        axes[0].text(x, y, str(n), color="tab:red", fontsize=fs, ha="center", va="center")
        if mask[n] == 0:
            axes[1].text(x, y, str(n), color="tab:red", fontsize=fs, ha="center", va="center")
    for ax in axes[:2]:
        ax.set_xticks([v - 0.5 for v in range(0, W + 1, patch_size)], minor=True)
        ax.set_yticks([v - 0.5 for v in range(0, H + 1, patch_size)], minor=True)
        ax.grid(which="minor", color="tab:blue", linewidth=0.5)
        ax.tick_params(which="minor", length=0)
    # The encoder's input: the visible patches as a short sequence.
    vis = patchify(img[None], patch_size)[0, ids_keep]  # (N_vis, L)
    k = len(ids_keep)
    cols = min(k, 8)
    rows = math.ceil(k / cols)
    axes[2].set_axis_off()
    axes[2].set_title(f"encoder input: {k} visible patches, in ids_keep order", fontsize=8)
    for t in range(k):
        r, c = divmod(t, cols)
        inset = axes[2].inset_axes([c / cols + 0.01, 1 - (r + 1) / rows + 0.08 / rows, 0.9 / cols, 0.75 / rows])
        patch = vis[t].reshape(patch_size, patch_size, C).permute(2, 0, 1)  # (C, P, P)
        _imshow(inset, patch, vmin, vmax)
        inset.set_title(str(int(ids_keep[t])), fontsize=6, pad=1)
    fig.tight_layout()
    return fig


def plot_reconstructions(rows: Sequence[Tuple[str, torch.Tensor]], vmin: float = 0.0, vmax: float = 1.0,
                         col_titles: Optional[Sequence[str]] = None, title: Optional[str] = None, scale: float = 1.1):
    """A grid of images: one row per ``(label, images (B, C, H, W))`` pair, one column per image.

    Removed patches given as NaN draw light grey. Returns a Figure.
    """
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), rows[0][1].shape[0]
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(scale * n_cols + 0.8, scale * n_rows + 0.3), squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for c in range(n_cols):
            _imshow(axes[r, c], imgs[c], vmin, vmax, col_titles[c] if (col_titles and r == 0) else None)
        axes[r, 0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
