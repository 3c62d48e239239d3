"""Figures. Every helper returns a ``matplotlib.figure.Figure``; notebooks save them with
:func:`survey_lib.report.save_figure`.

Sources:
    Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", arXiv:2005.00928 (rollout).
    Dosovitskiy et al. 2021, arXiv:2010.11929, Fig. 7 (position-embedding similarity, attention maps).
    Caron et al. 2021, arXiv:2104.14294, Fig. 1/3 (CLS attention per head of the last layer).
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

__all__ = [
    "attention_rollout",
    "plot_history",
    "plot_confusion_matrix",
    "plot_patch_grid",
    "plot_attention_heads",
    "plot_rollout",
    "plot_pos_embed_similarity",
    "show_image",
]


def _to_display(img: torch.Tensor) -> np.ndarray:
    """(C, H, W) tensor -> (H, W) or (H, W, 3) array scaled to [0, 1] for imshow."""
    img = img.detach().float().cpu()
    img = (img - img.min()) / (img.max() - img.min() + 1e-8)
    if img.shape[0] == 1:
        return img[0].numpy()
    return img.permute(1, 2, 0).numpy()


def show_image(ax, img: torch.Tensor, title: Optional[str] = None) -> None:
    """Draw a (C, H, W) tensor on ``ax`` (grey for one channel), without axes."""
    arr = _to_display(img)
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


# ---------------------------------------------------------------------------------------------
# training curves and confusion matrices
# ---------------------------------------------------------------------------------------------
def plot_history(histories: Union["History", Mapping[str, "History"]], metrics: Sequence[str] = ("train_loss", "val_acc"),
                 title: Optional[str] = None) -> Figure:
    """Per-epoch curves of one or several runs (seaborn line plots), one panel per metric.

    Args:
        histories: a :class:`survey_lib.train.History` or ``{run name: History}``.
        metrics: row keys to plot (e.g. ``train_loss``, ``val_loss``, ``train_acc``, ``val_acc``).
    """
    import pandas as pd
    import seaborn as sns

    if not isinstance(histories, Mapping):
        histories = {"run": histories}
    frames = []
    for name, h in histories.items():
        df = h.to_frame() if hasattr(h, "to_frame") else pd.DataFrame(h)
        df["run"] = name
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    metrics = [m for m in metrics if m in df.columns]
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(4.2 * max(1, len(metrics)), 3.2), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        sns.lineplot(data=df, x="epoch", y=m, hue="run" if len(histories) > 1 else None, marker="o", ax=ax)
        ax.set_title(m.replace("_", " "))
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(cm: np.ndarray, class_names: Optional[Sequence[str]] = None, normalize: bool = False,
                          title: Optional[str] = None) -> Figure:
    """Heatmap of a confusion matrix (rows true, columns predicted), counts or row fractions."""
    import seaborn as sns

    cm = np.asarray(cm, dtype=float)
    data = cm / cm.sum(1, keepdims=True).clip(min=1) if normalize else cm
    k = cm.shape[0]
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * k, 0.8 + 0.4 * k))
    sns.heatmap(data, annot=True, fmt=".2f" if normalize else ".0f", cmap="Blues", cbar=False, ax=ax,
                xticklabels=class_names or "auto", yticklabels=class_names or "auto")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# patches and attention
# ---------------------------------------------------------------------------------------------
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


def _overlay(ax, img: torch.Tensor, heat: torch.Tensor, title: Optional[str] = None, alpha: float = 0.6) -> None:
    """Draw ``img`` (C, H, W) with ``heat`` (gh, gw) upsampled (nearest) on top."""
    H, W = img.shape[1:]
    heat = heat.detach().float()
    heat = F.interpolate(heat[None, None], size=(H, W), mode="nearest")[0, 0]
    show_image(ax, img)
    ax.imshow(heat.numpy(), cmap="inferno", alpha=alpha)
    if title:
        ax.set_title(title, fontsize=9)


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

    Shapes: one panel per head, each a (gh, gw) map of ``attn[head, query, prefix:]``.
    """
    heads = attn.shape[0]
    gh, gw = grid_size
    maps = attn[:, query, num_prefix_tokens:].reshape(heads, gh, gw)  # (h, gh, gw)
    cols = heads + 1
    fig, axes = plt.subplots(1, cols, figsize=(1.9 * cols, 2.2))
    show_image(axes[0], img, "input")
    for hd in range(heads):
        _overlay(axes[hd + 1], img, maps[hd], f"head {hd}")
    fig.suptitle(title or ("CLS attention per head" if query == 0 else f"attention of token {query} per head"), fontsize=10)
    fig.tight_layout()
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
    fig, axes = plt.subplots(2, B, figsize=(1.8 * B, 3.8), squeeze=False)
    for b in range(B):
        show_image(axes[0, b], imgs[b], titles[b] if titles else None)
        _overlay(axes[1, b], imgs[b], cls_map[b])
    axes[1, 0].set_title("rollout", fontsize=9, loc="left")
    fig.suptitle("attention rollout of the CLS token (Abnar & Zuidema 2020)", fontsize=10)
    fig.tight_layout()
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


# ---------------------------------------------------------------------------------------------
# cost growth of attention mechanisms (survey_lib.evaluate.attention_cost_study)
# ---------------------------------------------------------------------------------------------
__all__ += ["plot_cost_growth"]


def plot_cost_growth(df, pass_: str = "forward+backward", title: Optional[str] = None) -> Figure:
    """Log-log time and peak memory against tokens, one line per mechanism, fitted slope in the legend.

    Args:
        df: the DataFrame of :func:`survey_lib.evaluate.attention_cost_study` (columns ``mechanism,
            tokens, pass, ms, peak_mem_bytes``).
        pass_: which pass to draw (``"forward"`` or ``"forward+backward"``).

    The dashed grey lines are slopes 1 (linear) and 2 (quadratic) through the first point of the
    lowest curve, for reference.
    """
    from .evaluate import fit_growth_exponent

    sub = df[df["pass"] == pass_]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, col, label in ((axes[0], "ms", "time per call (ms)"), (axes[1], "peak_mem_bytes", "peak memory (MiB)")):
        scale = 1.0 if col == "ms" else 1.0 / 2**20
        lows = []
        for mech, g in sub.groupby("mechanism", sort=False):
            g = g.sort_values("tokens")
            slope = fit_growth_exponent(g["tokens"], g[col])
            ax.plot(g["tokens"], g[col] * scale, "o-", label=f"{mech} (slope {slope:.2f})")
            lows.append((float(g[col].iloc[0]) * scale, float(g["tokens"].iloc[0])))
        y0, t0 = min(lows)
        t = np.array(sorted(sub["tokens"].unique()), dtype=float)
        for p, ls in ((1, "--"), (2, ":")):
            ax.plot(t, y0 * (t / t0) ** p, ls, color="grey", linewidth=1, label=f"~ N^{p}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tokens N")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title or f"one attention layer, {pass_}: cost against the number of tokens", fontsize=10)
    fig.tight_layout()
    return fig
