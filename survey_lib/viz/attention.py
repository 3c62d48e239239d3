"""Patches and attention: the patch grid, attention maps per head, rollout, position embeddings.

Sources:
    Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", arXiv:2005.00928 (rollout).
    Dosovitskiy et al. 2021, arXiv:2010.11929, Fig. 7 (position-embedding similarity, attention maps).
    Caron et al. 2021, arXiv:2104.14294, Fig. 1/3 (CLS attention per head of the last layer).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from .common import _overlay, show_image

__all__ = ["plot_patch_grid", "plot_attention_heads", "attention_rollout", "plot_rollout", "plot_pos_embed_similarity"]


def plot_patch_grid(img: torch.Tensor, patch_size: int, title: Optional[str] = None, number: bool = True) -> Figure:
    """The image with its P x P patch grid drawn and each patch numbered in token order (row-major).

    Shapes: img (C, H, W).
    """
    C, H, W = img.shape
    fig, ax = plt.subplots(figsize=(4, 4 * H / W))
    show_image(ax, img)
    ax.set_axis_on()
    ax.set_xticks(np.arange(-0.5, W, patch_size))
    ax.set_yticks(np.arange(-0.5, H, patch_size))
    ax.set_xticklabels([])
    ax.set_yticklabels([])
    ax.grid(color="tab:red", linewidth=1)
    ax.tick_params(length=0)
    if number:
        gw = W // patch_size
        for n in range((H // patch_size) * gw):
            i, j = divmod(n, gw)
            ax.text(j * patch_size + patch_size / 2 - 0.5, i * patch_size + patch_size / 2 - 0.5, str(n),
                    color="yellow", fontsize=max(5, 60 // gw), ha="center", va="center")
    ax.set_title(title or f"{(H // patch_size) * (W // patch_size)} patches of {patch_size}x{patch_size}")
    fig.tight_layout()
    return fig


def plot_attention_heads(img: torch.Tensor, attn: torch.Tensor, grid_size: Tuple[int, int], query: int = 0,
                         num_prefix_tokens: int = 1, title: Optional[str] = None) -> Figure:
    """What one query token attends to, per head, overlaid on the image (ViT Fig. 6, DINO Fig. 3).

    Args:
        img: (C, H, W) the input image.
        attn: (h, N, N) attention of one image and one layer, N = prefix + gh*gw (e.g. from
            ``model.get_attention_maps(x)[layer][b]``).
        grid_size: (gh, gw) patch grid.
        query: the query token (0 = CLS).
        num_prefix_tokens: tokens before the patches (1 for CLS, 2 with DeiT's distillation token).

    Shapes: one panel per head, each a (gh, gw) map of ``attn[head, query, prefix:]``. Every head is
    drawn on one colour scale, from 0 to the largest weight of any head, with one colour bar, so a
    head that attends weakly looks weak.
    """
    heads = attn.shape[0]
    gh, gw = grid_size
    maps = attn[:, query, num_prefix_tokens:].reshape(heads, gh, gw).detach().float()  # (h, gh, gw)
    cols = heads + 1
    fig, axes = plt.subplots(1, cols, figsize=(2.3 * cols + 0.6, 3.1))
    show_image(axes[0], img, "input")
    axes[0].title.set_fontsize(11)
    vmax = float(maps.max())
    for hd in range(heads):
        im = _overlay(axes[hd + 1], img, maps[hd], f"head {hd}", vmin=0.0, vmax=vmax)
    fig.suptitle(title or ("CLS attention per head" if query == 0 else f"attention of token {query} per head"), fontsize=12)
    fig.tight_layout()
    fig.colorbar(im, ax=list(axes), shrink=0.8, pad=0.02, label="attention weight")
    return fig


def attention_rollout(attentions: Sequence[torch.Tensor], head_fusion: str = "mean") -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020, arXiv:2005.00928, Sec. 3).

    Each layer's attention is fused over heads, the residual connection is modelled by adding the
    identity, ``A_hat = 0.5 * A + 0.5 * I`` with rows renormalised, and the layers are multiplied:
    ``R = A_hat_L ... A_hat_1``. ``R[i, j]`` estimates how much input token j flows into output token i.

    Args:
        attentions: per-layer tensors (B, h, N, N), first layer first.
        head_fusion: ``mean`` (the paper), ``max`` or ``min`` over heads.

    Shapes: returns (B, N, N).
    """
    if not attentions:
        raise ValueError("attention_rollout needs at least one layer of attention")
    result = None
    for a in attentions:
        if head_fusion not in ("mean", "max", "min"):
            raise ValueError(f"head_fusion must be 'mean', 'max' or 'min', got {head_fusion!r}")
        fused = {"mean": a.mean(1), "max": a.amax(1), "min": a.amin(1)}[head_fusion]  # (B, N, N)
        eye = torch.eye(fused.shape[-1], dtype=fused.dtype).expand_as(fused)
        a_hat = 0.5 * fused + 0.5 * eye
        a_hat = a_hat / a_hat.sum(-1, keepdim=True)  # rows sum to 1
        result = a_hat if result is None else a_hat @ result  # (B, N, N)
    return result


def plot_rollout(imgs: torch.Tensor, attentions: Sequence[torch.Tensor], grid_size: Tuple[int, int],
                 num_prefix_tokens: int = 1, titles: Optional[Sequence[str]] = None) -> Figure:
    """Images next to the rollout of the CLS token onto the patches (first row: input, second: rollout).

    Shapes: imgs (B, C, H, W); attentions: per-layer (B, h, N, N).
    """
    rollout = attention_rollout(attentions)  # (B, N, N)
    gh, gw = grid_size
    cls_map = rollout[:, 0, num_prefix_tokens:].reshape(-1, gh, gw)  # (B, gh, gw)
    B = imgs.shape[0]
    fig, axes = plt.subplots(2, B, figsize=(2.0 * B + 0.8, 4.4), squeeze=False)
    vmax = float(cls_map.max())
    for b in range(B):
        show_image(axes[0, b], imgs[b], titles[b] if titles else None)
        im = _overlay(axes[1, b], imgs[b], cls_map[b], vmin=0.0, vmax=vmax)
    axes[1, 0].set_title("rollout", fontsize=11, loc="left")
    fig.suptitle("attention rollout of the CLS token (Abnar & Zuidema 2020)", fontsize=12)
    fig.tight_layout()
    fig.colorbar(im, ax=list(axes[1]), shrink=0.9, pad=0.02, label="rolled-out attention")
    return fig


def plot_pos_embed_similarity(pos_embed: torch.Tensor, grid_size: Tuple[int, int], num_prefix_tokens: int = 1) -> Figure:
    """Cosine similarity of each patch's position embedding with every other one (ViT paper Fig. 7 centre).

    Panel (i, j) shows, for the patch at grid position (i, j), its similarity with all patches.

    Shapes: pos_embed (1, prefix + gh*gw, D).
    """
    gh, gw = grid_size
    pe = pos_embed[0, num_prefix_tokens:].detach().float()  # (gh*gw, D)
    pe = F.normalize(pe, dim=-1)
    sim = (pe @ pe.T).reshape(gh, gw, gh, gw)  # (gh, gw, gh, gw)
    fig, axes = plt.subplots(gh, gw, figsize=(0.75 * gw + 1, 0.75 * gh), squeeze=False)
    for i in range(gh):
        for j in range(gw):
            im = axes[i, j].imshow(sim[i, j].numpy(), vmin=-1, vmax=1, cmap="viridis")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if j == 0:
                axes[i, j].set_ylabel(str(i + 1), fontsize=7)
            if i == gh - 1:
                axes[i, j].set_xlabel(str(j + 1), fontsize=7)
    fig.colorbar(im, ax=axes, fraction=0.03, label="cosine similarity")
    fig.suptitle("position-embedding similarity (ViT Fig. 7)", fontsize=10)
    return fig
