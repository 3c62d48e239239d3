"""NAT's figures: which keys each query sees (NA vs SASA, dilation) and neighbourhood attention maps.

Source: Hassani et al. 2023, "Neighborhood Attention Transformer", arXiv:2204.07143, Fig. 3.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..models.nat import attention_to_dense, axis_window
from .common import show_image

__all__ = ["plot_neighborhoods", "plot_neighborhood_attention"]

IntOrPair = Union[int, Tuple[int, int]]


def plot_neighborhoods(
    grid: Tuple[int, int] = (9, 9),
    kernel_size: int = 5,
    queries: Sequence[Tuple[int, int]] = ((0, 0), (4, 4)),
    dilation: int = 1,
    kinds: Sequence[str] = ("na", "sasa"),
):
    """Which keys each query sees: one row per kind (NA, SASA), one column per query (NAT Fig. 3).

    Red: the query; blue: keys inside the grid; orange: SASA's zero-padding positions, drawn in the
    margin around the grid (light grey), where they are not real tokens.

    Shapes: grid (H, W); queries are (row, col) grid positions.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    H, W = grid
    p = (kernel_size // 2) * dilation
    cmap = ListedColormap(["#e6e6e6", "white", "#4c72b0", "#c44e52", "#dd8452"])
    fig, axes = plt.subplots(len(kinds), len(queries), figsize=(2.4 * len(queries), 2.5 * len(kinds)), squeeze=False)
    names = {"na": "NA (shifted window)", "sasa": "SASA (zero padding)"}
    for r, kind in enumerate(kinds):
        keys_h, _ = axis_window(H, kernel_size, dilation, kind)  # (H, k), -1 for padding (SASA)
        keys_w, _ = axis_window(W, kernel_size, dilation, kind)
        for c, (qi, qj) in enumerate(queries):
            canvas = torch.zeros(H + 2 * p, W + 2 * p)
            canvas[p:p + H, p:p + W] = 1
            n_real = 0
            for a in range(kernel_size):
                for b in range(kernel_size):
                    if kind == "na":
                        i, j = int(keys_h[qi, a]), int(keys_w[qj, b])
                    else:  # centred offsets, padding drawn in the margin
                        i, j = qi + dilation * (a - kernel_size // 2), qj + dilation * (b - kernel_size // 2)
                    inside = 0 <= i < H and 0 <= j < W
                    n_real += inside
                    canvas[i + p, j + p] = 2 if inside else 4
            canvas[qi + p, qj + p] = 3
            ax = axes[r, c]
            ax.imshow(canvas.numpy(), cmap=cmap, vmin=0, vmax=4)
            ax.set_xticks(np.arange(-0.5, W + 2 * p, 1), minor=True)
            ax.set_yticks(np.arange(-0.5, H + 2 * p, 1), minor=True)
            ax.grid(which="minor", color="#bbbbbb", linewidth=0.4)
            ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
            ax.add_patch(plt.Rectangle((p - 0.5, p - 0.5), W, H, fill=False, edgecolor="black", linewidth=1.2))
            ax.set_title(f"{names.get(kind, kind)}\nquery {qi, qj}: {n_real} real keys", fontsize=8)
    fig.suptitle(f"{kernel_size}x{kernel_size} neighbourhoods, dilation {dilation}, on a {H}x{W} grid", fontsize=10)
    fig.tight_layout()
    return fig


def plot_neighborhood_attention(
    img: torch.Tensor,
    attn: torch.Tensor,
    kernel_size: IntOrPair,
    dilation: IntOrPair = 1,
    queries: Sequence[Tuple[int, int]] = ((0, 0),),
    title: Optional[str] = None,
):
    """Attention of chosen query tokens over the image, one panel per (query, head).

    Args:
        img: (C, H_img, W_img) the input image.
        attn: (H, W, heads, k*k) window weights of one image and one block (e.g.
            ``model.get_attention_maps(x)[block][b]``).
        kernel_size, dilation: the window the block used (``blk.attn.window(H, W)``).
        queries: (row, col) token positions; each is marked with a cyan dot.
        title: the figure's title.

    Shapes: each panel is the query's dense row (H, W), zero outside its window, upsampled (nearest)
    to the image. All panels share one colour scale, from 0 to the largest weight drawn, shown by the
    colour bar.

    Raises:
        ValueError: ``attn`` is not (H, W, heads, k*k), or a query outside the H x W grid.
    """
    import matplotlib.pyplot as plt
    import torch.nn.functional as F

    if attn.dim() != 4:
        raise ValueError(f"attn must be one image's window weights (H, W, heads, k*k), got shape {tuple(attn.shape)}")
    H, W, heads, _ = attn.shape
    outside = [q for q in queries if not (0 <= q[0] < H and 0 <= q[1] < W)]
    if outside:
        raise ValueError(f"queries {outside} lie outside the {H}x{W} token grid")
    dense = attention_to_dense(attn[None].detach().float(), kernel_size, dilation)[0]  # (heads, N, N)
    rows = {q: dense[:, q[0] * W + q[1]].reshape(heads, H, W) for q in queries}  # (heads, H, W) each
    vmax = max(float(r.max()) for r in rows.values())
    fig, axes = plt.subplots(len(queries), heads + 1, figsize=(2.4 * (heads + 1) + 0.9, 2.6 * len(queries) + 0.6),
                             squeeze=False, layout="constrained")
    sy, sx = img.shape[1] / H, img.shape[2] / W
    im = None
    for r, (qi, qj) in enumerate(queries):
        show_image(axes[r, 0], img, f"input, query {qi, qj}")
        axes[r, 0].title.set_fontsize(10)
        axes[r, 0].plot((qj + 0.5) * sx - 0.5, (qi + 0.5) * sy - 0.5, "o", color="cyan", markersize=6)
        for hd in range(heads):
            ax = axes[r, hd + 1]
            heat = F.interpolate(rows[(qi, qj)][hd][None, None], size=tuple(img.shape[1:]), mode="nearest")[0, 0]
            show_image(ax, img)
            im = ax.imshow(heat.numpy(), cmap="inferno", alpha=0.7, vmin=0.0, vmax=vmax)
            ax.set_title(f"query {qi, qj}, head {hd}", fontsize=10)
            ax.plot((qj + 0.5) * sx - 0.5, (qi + 0.5) * sy - 0.5, "o", color="cyan", markersize=5)
    fig.colorbar(im, ax=axes[:, 1:].ravel().tolist(), fraction=0.03, pad=0.02).set_label("attention weight", fontsize=10)
    fig.suptitle(title or f"neighbourhood attention, kernel {kernel_size}, dilation {dilation}", fontsize=12)
    return fig
