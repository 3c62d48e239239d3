"""Swin's figures: windows and shifted windows, the attention mask, window attention, the bias table.

Source: Liu et al. 2021, "Swin Transformer", arXiv:2103.14030, Fig. 2 and 4, Sec. 3.2, Eq. 4.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from ..models.swin import SwinTransformer, WindowAttention, shifted_window_labels, shifted_window_mask, window_attention_to_grid
from .common import show_image

__all__ = ["plot_window_partition", "plot_shifted_window_mask", "plot_window_attention", "plot_relative_position_bias"]


def _draw_lines(ax, H: int, W: int, step: Tuple[float, float], offset: Tuple[float, float] = (0, 0), **kw) -> None:
    """Horizontal and vertical lines every ``step`` pixels starting at ``offset`` (imshow coordinates)."""
    y = offset[0]
    while y <= H + 1e-9:
        ax.axhline(y - 0.5, **kw)
        y += step[0]
    x = offset[1]
    while x <= W + 1e-9:
        ax.axvline(x - 0.5, **kw)
        x += step[1]


def _label_colours(labels: torch.Tensor):
    import matplotlib.pyplot as plt

    uniq = {int(v): i for i, v in enumerate(torch.unique(labels).tolist())}
    idx = labels.clone().apply_(lambda v: uniq[v]).numpy()
    return idx, plt.get_cmap("tab20", max(len(uniq), 2))


def plot_window_partition(img: torch.Tensor, patch_size: int, window_size: int, shift_size: Optional[int] = None):
    """Three panels: W-MSA windows on the image, the shifted windows (SW-MSA), and the same shifted
    windows after the cyclic shift, where they are ordinary windows again but some mix regions.

    Args:
        img: (C, H, W) image.  patch_size: P (pixels per token).  window_size: M (tokens).
        shift_size: s (tokens), default M // 2.

    Colours in panels 2 and 3 are the ids of :func:`shifted_window_labels`: tokens of one window
    with different colours are the pairs the mask blocks.
    """
    import matplotlib.pyplot as plt
    
    s = window_size // 2 if shift_size is None else shift_size
    C, H, W = img.shape
    gh, gw = H // patch_size, W // patch_size
    labels = shifted_window_labels((gh, gw), window_size, s)  # (gh, gw)
    colours, cmap = _label_colours(labels)
    big = lambda a: torch.as_tensor(a).repeat_interleave(patch_size, 0).repeat_interleave(patch_size, 1).numpy()  # noqa: E731
    win_px, s_px = window_size * patch_size, s * patch_size
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.9))
    titles = [f"W-MSA: {gh // window_size * (gw // window_size)} windows of {window_size}x{window_size} tokens",
              f"SW-MSA: windows shifted by {s} tokens", f"after torch.roll by -{s}: masked windows"]
    for k, ax in enumerate(axes):
        shown = torch.roll(img, shifts=(-s_px, -s_px), dims=(1, 2)) if k == 2 else img
        show_image(ax, shown)
        ax.set_title(titles[k], fontsize=9)
        _draw_lines(ax, H, W, (patch_size, patch_size), color="white", linewidth=0.3, alpha=0.5)
        if k == 0:
            _draw_lines(ax, H, W, (win_px, win_px), color="tab:red", linewidth=2.5)
        else:
            lab = colours if k == 1 else torch.roll(torch.as_tensor(colours), shifts=(-s, -s), dims=(0, 1)).numpy()
            ax.imshow(big(lab), cmap=cmap, alpha=0.45, vmin=0, vmax=cmap.N - 1)
            off = (s_px, s_px) if k == 1 else (0, 0)
            _draw_lines(ax, H, W, (win_px, win_px), off, color="tab:red", linewidth=2.5)
            if k == 1:
                _draw_lines(ax, H, W, (H + 1, W + 1), (0, 0), color="tab:red", linewidth=2.5)
    fig.suptitle("Swin's windows (Liu et al. 2021, Fig. 2 and 4): red lines are window borders, colours the "
                 "shifted windows", fontsize=10)
    fig.tight_layout()
    return fig


def plot_shifted_window_mask(grid_size: int = 8, window_size: int = 4, shift_size: Optional[int] = None):
    """The rolled region labels of a small grid and the (N x N) mask of each window (black = -100).

    Shapes: one panel for the grid, one per window (nW of them).
    """
    import matplotlib.pyplot as plt

    s = window_size // 2 if shift_size is None else shift_size
    labels = shifted_window_labels(grid_size, window_size, s)  # (H, W)
    rolled = torch.roll(labels, shifts=(-s, -s), dims=(0, 1))  # (H, W)
    mask = shifted_window_mask(grid_size, window_size, s)  # (nW, N, N)
    colours, cmap = _label_colours(rolled)
    nW = mask.shape[0]
    fig, axes = plt.subplots(1, nW + 1, figsize=(2.6 * (nW + 1), 2.9))
    ax = axes[0]
    ax.imshow(colours, cmap=cmap, vmin=0, vmax=cmap.N - 1)
    for r in range(grid_size):
        for c in range(grid_size):
            ax.text(c, r, str(int(rolled[r, c])), ha="center", va="center", fontsize=6)
    _draw_lines(ax, grid_size, grid_size, (window_size, window_size), color="tab:red", linewidth=2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{grid_size}x{grid_size} grid after roll by -{s}\n(number = shifted window before the roll)",
                 fontsize=8)
    for w in range(nW):
        axes[w + 1].imshow((mask[w] == 0).numpy(), cmap="gray", vmin=0, vmax=1)
        axes[w + 1].set_title(f"window {w}: {int((mask[w] != 0).sum())} of {mask.shape[1] ** 2} pairs masked",
                              fontsize=8)
        axes[w + 1].set_xlabel("key token", fontsize=7)
        axes[w + 1].set_ylabel("query token", fontsize=7)
        axes[w + 1].tick_params(labelsize=6)
    fig.suptitle("shifted-window attention mask: white = may attend (0), black = blocked (-100)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_window_attention(img: torch.Tensor, model: SwinTransformer, maps: Sequence[torch.Tensor],
                          query: Tuple[int, int], block_ids: Optional[Sequence[int]] = None, title: Optional[str] = None):
    """What one image location attends to in several blocks (mean over heads), drawn on the image.

    Args:
        img: (C, H, W) the input image.
        model: the model that produced ``maps`` (for each block's grid, window and shift).
        maps: one image's maps, ``[m[b] for m in model.get_attention_maps(x)]``, each (nW, h, N, N).
        query: (row, col) pixel of the query location; each block uses the token covering it.
        block_ids: which blocks to draw (default: all).  title: the figure's title.

    The red outline marks the query's window (a shifted block's window straddles the W-MSA borders).
    All panels share one colour scale, from 0 to the largest weight drawn, shown by the colour bar.

    Raises:
        ValueError: ``maps`` has fewer entries than the model has blocks, a block id out of range, or
            a query outside the image.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    blocks = model.blocks()
    if len(maps) != len(blocks):
        raise ValueError(f"maps has {len(maps)} entries but the model has {len(blocks)} blocks; pass one image's "
                         "maps of every block: [m[b] for m in model.get_attention_maps(x)]")
    block_ids = list(range(len(blocks))) if block_ids is None else list(block_ids)
    bad = [k for k in block_ids if not 0 <= k < len(blocks)]
    if bad:
        raise ValueError(f"block ids {bad} out of range: the model has blocks 0..{len(blocks) - 1}")
    C, H, W = img.shape
    if not (0 <= query[0] < H and 0 <= query[1] < W):
        raise ValueError(f"query {tuple(query)} lies outside the {H}x{W} image")
    heats = []
    for k in block_ids:
        blk = blocks[k]
        gh, gw = blk.input_resolution
        px = H // gh  # pixels per token at this stage
        heat = window_attention_to_grid(maps[k], blk, (query[0] // px, query[1] // px)).mean(0)  # (gh, gw)
        heats.append(heat.repeat_interleave(px, 0).repeat_interleave(px, 1))  # (H, W)
    vmax = max(float(h.max()) for h in heats)
    fig, axes = plt.subplots(1, len(block_ids) + 1, figsize=(2.7 * (len(block_ids) + 1) + 0.8, 3.7),
                             layout="constrained")
    show_image(axes[0], img, "input + query")
    axes[0].title.set_fontsize(10)
    axes[0].plot(query[1], query[0], marker="x", color="tab:red", markersize=10, mew=2.5)
    im = None
    for ax, k, heat in zip(axes[1:], block_ids, heats):
        blk = blocks[k]
        gh, gw = blk.input_resolution
        show_image(ax, img)
        im = ax.imshow(heat.numpy(), cmap="inferno", alpha=0.7, vmin=0.0, vmax=vmax)
        seen = (heat > 1e-12).numpy().astype(float)  # keys behind the mask get exp(-100) ~ 1e-44
        if 0 < seen.sum() < seen.size:  # outline what the query can attend to (padded: edges too)
            padded = np.pad(seen, 1)
            ax.contour(np.arange(-1, W + 1), np.arange(-1, H + 1), padded, levels=[0.5], colors="tab:red",
                       linewidths=1.8)
            ax.set_xlim(-0.5, W - 0.5)
            ax.set_ylim(H - 0.5, -0.5)
        stage = next(i for i, st in enumerate(model.layers) if any(b is blk for b in st.blocks))
        kind = "SW-MSA" if blk.shifted else ("W-MSA" if blk.num_windows > 1 else "global")
        ax.set_title(f"block {k} (stage {stage})\n{kind}, {gh}x{gw} tokens", fontsize=10)
    fig.colorbar(im, ax=list(axes[1:]), fraction=0.025, pad=0.02).set_label("attention weight (mean over heads)",
                                                                            fontsize=10)
    fig.suptitle(title or f"attention of the location {tuple(query)}: it never leaves its window", fontsize=12)
    return fig


def plot_relative_position_bias(attn: WindowAttention, title: Optional[str] = None):
    """The learned table B_hat of Eq. 4 per head, as a (2M - 1) x (2M - 1) image of offsets.

    Pixel (dy, dx) (centre = offset 0) is the bias added to the score of a query and a key that is
    ``dy`` rows above and ``dx`` columns left of it (query minus key). One diverging colour scale,
    symmetric about 0 and shared by the heads, with its colour bar.
    """
    import matplotlib.pyplot as plt

    mh, mw = attn.window_size
    table = attn.relative_position_bias_table.detach().float()  # ((2M_h-1)(2M_w-1), h)
    img = table.T.reshape(-1, 2 * mh - 1, 2 * mw - 1)  # (h, 2M_h - 1, 2M_w - 1)
    h = img.shape[0]
    fig, axes = plt.subplots(1, h, figsize=(max(3.2 * h + 1.2, 6.0), 3.9), squeeze=False, layout="constrained")
    lim = float(img.abs().max()) or 1.0
    for i, ax in enumerate(axes[0]):
        im = ax.imshow(img[i].numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim,
                       extent=(-(mw - 1) - 0.5, mw - 1 + 0.5, mh - 1 + 0.5, -(mh - 1) - 0.5))
        ax.set_title(f"head {i}", fontsize=11)
        ax.set_xlabel("dx (columns)", fontsize=10)
        if i == 0:
            ax.set_ylabel("dy (rows)", fontsize=10)
        ax.tick_params(labelsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), fraction=0.04).set_label("bias added to the score", fontsize=10)
    fig.suptitle(title or "relative position bias B_hat (Eq. 4) per head", fontsize=12)
    return fig
