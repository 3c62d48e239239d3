"""Figures every notebook uses: images, training curves, confusion matrices, cost growth.

Every helper returns a ``matplotlib.figure.Figure`` (or draws on an axis it is given); notebooks save
figures with :class:`survey_lib.report.Reporter`. Figures draw results; they never train.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Optional, Sequence, Union

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from ..cost import fit_growth_exponent

if TYPE_CHECKING:
    from ..train import History

__all__ = ["show_image", "plot_history", "plot_confusion_matrix", "plot_cost_growth"]


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


def _overlay(ax, img: torch.Tensor, heat: torch.Tensor, title: Optional[str] = None, alpha: float = 0.6,
             vmin: Optional[float] = None, vmax: Optional[float] = None):
    """Draw ``img`` (C, H, W) with ``heat`` (gh, gw) upsampled (nearest) on top, on the colour scale
    [vmin, vmax] (default: the map's own range); returns the heat map's image, for a colour bar."""
    H, W = img.shape[1:]
    heat = heat.detach().float()
    heat = F.interpolate(heat[None, None], size=(H, W), mode="nearest")[0, 0]
    show_image(ax, img)
    im = ax.imshow(heat.numpy(), cmap="inferno", alpha=alpha, vmin=vmin, vmax=vmax)
    if title:
        ax.set_title(title, fontsize=11)
    return im


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
# cost growth of attention mechanisms (survey_lib.cost.attention_cost_study)
# ---------------------------------------------------------------------------------------------
def plot_cost_growth(df, pass_: str = "forward+backward", title: Optional[str] = None) -> Figure:
    """Log-log time and peak memory against tokens, one line per mechanism, fitted slope in the legend.

    Args:
        df: the DataFrame of :func:`survey_lib.evaluate.attention_cost_study` (columns ``mechanism,
            tokens, pass, ms, peak_mem_bytes``).
        pass_: which pass to draw (``"forward"`` or ``"forward+backward"``).

    The dashed grey lines are slopes 1 (linear) and 2 (quadratic) through the first point of the
    lowest curve, for reference.
    """
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
