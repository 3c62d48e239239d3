"""CLIP's figures: image-text similarity matrices and the joint embedding of images and captions.

Source: Radford et al. 2021 (CLIP), arXiv:2103.00020, Fig. 1 (the similarity matrix).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

__all__ = ["plot_similarity_matrices", "plot_joint_embedding", "plot_temperature"]


def plot_similarity_matrices(matrices: Dict[str, torch.Tensor], row_labels: Sequence[str],
                             col_labels: Sequence[str], title: Optional[str] = None) -> "Figure":
    """Heatmaps of image x text similarity matrices, the diagonal (the true pairs) outlined.

    Args:
        matrices: ``{panel title: (B, B) tensor}``, e.g. cosine similarities before and after training.
        row_labels: B image labels.  col_labels: B captions.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = len(matrices)
    B = len(row_labels)
    fig, axes = plt.subplots(1, n, figsize=(0.55 * B * n + 2.5 * n, 0.55 * B + 2.8), squeeze=False)
    for ax, (name, m) in zip(axes[0], matrices.items()):
        m = m.detach().float().cpu().numpy()
        im = ax.imshow(m, cmap="viridis")
        for i in range(B):
            ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.5))
            for j in range(B):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if m[i, j] < m.mean() else "black")
        ax.set_xticks(range(B), col_labels, rotation=70, ha="right", fontsize=7)
        ax.set_yticks(range(B), row_labels, fontsize=7)
        ax.set_xlabel("caption (text)")
        ax.set_ylabel("image")
        ax.set_title(name, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_joint_embedding(image_features: torch.Tensor, image_labels: torch.Tensor, text_features: torch.Tensor,
                         text_labels: torch.Tensor, seed: int = 0, tsne: bool = True,
                         title: Optional[str] = None) -> "Figure":
    """The joint image-text space in 2-D: PCA (linear, keeps the gap between the modalities) and,
    optionally, t-SNE (neighbourhoods), both fitted on images and texts together.

    Images are dots coloured by class; texts (e.g. the prompt-ensembled class embeddings) are
    numbered stars.

    Shapes: image_features (n, E), image_labels (n,), text_features (m, E), text_labels (m,).
    """
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = torch.cat([F.normalize(image_features.float(), dim=-1), F.normalize(text_features.float(), dim=-1)]).numpy()
    n = image_features.shape[0]  # (n + m, E): images first
    panels = [("PCA", PCA(n_components=2, random_state=seed).fit_transform(x))]
    if tsne:
        perplexity = float(min(30, max(2, (x.shape[0] - 1) // 3)))
        panels.append(("t-SNE", TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (name, y) in zip(axes[0], panels):
        ax.scatter(y[:n, 0], y[:n, 1], c=[cmap(int(k) % 10) for k in image_labels], s=9, alpha=0.6)
        ax.scatter(y[n:, 0], y[n:, 1], c=[cmap(int(k) % 10) for k in text_labels], s=260, marker="*",
                   edgecolors="black", linewidths=0.8)
        for (px, py), k in zip(y[n:], text_labels):
            ax.annotate(str(int(k)), (px, py), fontsize=9, fontweight="bold", xytext=(5, 5), textcoords="offset points")
        ax.set_title(f"{name}: images (dots) and class prompts (stars)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_temperature(histories: Dict[str, "object"], init_inv_tau: float = 1 / 0.07, max_inv_tau: float = 100.0,
                     title: Optional[str] = None) -> "Figure":
    """The learned temperature over training, on an axis that shows what it did: 1/tau per epoch from
    its initial value (epoch 0) to its end, on the whole range it may take (1 to ``max_inv_tau``, the
    clamp of CLIP Sec. 2.5), with the initial value and the cap drawn as lines and the start and end
    of each run written on the panel. A narrow, zoomed axis would make a change of a few tenths look
    like learning.

    Args:
        histories: ``{run name: History}`` whose rows carry ``inv_tau`` (the epoch mean of
            exp(logit_scale), from ``clip_step``).
        init_inv_tau: 1/tau at initialisation (CLIP: 1/0.07).  max_inv_tau: the cap (CLIP: 100).

    Raises:
        ValueError: a history without ``inv_tau``.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for k, (name, h) in enumerate(histories.items()):
        rows = [r for r in h.rows if "inv_tau" in r]
        if not rows:
            raise ValueError(f"{name}: the history has no inv_tau; train with survey_lib.objectives.infonce.clip_step")
        epochs = [0] + [r["epoch"] for r in rows]
        values = [init_inv_tau] + [float(r["inv_tau"]) for r in rows]
        line, = ax.plot(epochs, values, marker="o", ms=3, label=name)
        ax.annotate(f"{values[-1]:.1f}", (epochs[-1], values[-1]), textcoords="offset points",
                    xytext=(4, 6 - 12 * k), color=line.get_color(), fontsize=8)
    ax.axhline(init_inv_tau, ls=":", c="grey", lw=1)
    ax.text(0, init_inv_tau, f" start 1/0.07 = {init_inv_tau:.1f}", va="bottom", fontsize=8, color="grey")
    ax.axhline(max_inv_tau, ls="--", c="grey", lw=1)
    ax.text(0, max_inv_tau, f" cap {max_inv_tau:.0f} (CLIP Sec. 2.5)", va="top", fontsize=8, color="grey")
    ax.set_ylim(0, max_inv_tau * 1.05)
    ax.set_xlabel("epoch (0: initialisation)")
    ax.set_ylabel("1 / tau = exp(logit_scale)")
    ax.set_title(title or "the learned temperature, on its whole range")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    return fig
