"""Per-seed training curves of a comparison: every seed's validation curve, so the reader sees the
seed-to-seed spread that the paired tests of :mod:`survey_lib.evaluate` weigh.

Notebooks 03 (Swin) and 04 (NAT) draw their model against the ViT with the runs of the equal-terms
comparison (:func:`survey_lib.recipes.compare.equal_terms_study`); the frame comes from
:func:`survey_lib.viz.compare.curves_frame`, the colours and names from
:data:`survey_lib.viz.compare.MODEL_COLORS` / :data:`~survey_lib.viz.compare.MODEL_LABELS`. The figure
draws results; it never trains.
"""
from __future__ import annotations

from typing import Optional, Sequence

import pandas as pd
from matplotlib.figure import Figure

from .compare import MODEL_LABELS, model_color

__all__ = ["SEED_STYLES", "plot_seed_curves"]

#: Line styles that tell the seeds of one model apart (cycled beyond four seeds).
SEED_STYLES = ("-", "--", ":", "-.")


def plot_seed_curves(curves: pd.DataFrame, models: Optional[Sequence[str]] = None, zoom_from: Optional[int] = None,
                     title: Optional[str] = None) -> Figure:
    """Validation accuracy against epoch, one line per (model, seed): the model's colour, the seed's
    line style. Two panels: every epoch on a 0-100 % axis (nothing exaggerated), and the epochs from
    ``zoom_from`` on, on an axis that spans their values (its title says it is a zoom).

    Args:
        curves: :func:`survey_lib.viz.compare.curves_frame` of a study (columns ``model``, ``seed``,
            ``epoch``, ``val_acc``; accuracies as fractions in [0, 1]).
        models: which models, in which order (default: the frame's, in order of appearance).
        zoom_from: the first epoch of the right panel (default: the middle epoch of the longest run, and
            at least two epochs before its end).
        title: the figure's title.

    Shapes: one line per (model, seed); y in percent.

    Raises:
        ValueError: a missing column, an empty frame, a model the frame does not hold, or a
            ``zoom_from`` outside the epochs of the frame.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    missing = {"model", "seed", "epoch", "val_acc"} - set(curves.columns)
    if missing:
        raise ValueError(f"curves lacks the columns {sorted(missing)}; build it with survey_lib.viz.compare.curves_frame(study)")
    if curves.empty:
        raise ValueError("curves has no rows: the study holds no run")
    present = list(dict.fromkeys(curves["model"]))
    models = list(models) if models is not None else present
    unknown = [m for m in models if m not in present]
    if unknown:
        raise ValueError(f"curves holds no run of {unknown}; it has {present}")
    first, last = int(curves["epoch"].min()), int(curves["epoch"].max())
    zoom_from = max(first, min((first + last + 1) // 2, last - 1)) if zoom_from is None else int(zoom_from)
    if not first <= zoom_from <= last:
        raise ValueError(f"zoom_from must be an epoch of the runs, in [{first}, {last}], got {zoom_from}")

    marker = "o" if last - first < 20 else None  # short runs (smoke): show the points
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.4))
    zoomed = curves[(curves["epoch"] >= zoom_from) & curves["model"].isin(models)]
    for name in models:
        runs = curves[curves["model"] == name]
        for k, (seed, g) in enumerate(runs.groupby("seed", sort=True)):
            g = g.sort_values("epoch")
            style = SEED_STYLES[k % len(SEED_STYLES)]
            label = f"{MODEL_LABELS.get(name, name)}, seed {seed}"
            for ax, part in ((axes[0], g), (axes[1], g[g["epoch"] >= zoom_from])):
                ax.plot(part["epoch"], 100 * part["val_acc"], style, color=model_color(name), lw=1.6, label=label,
                        marker=marker, markersize=4)
    axes[0].set_ylim(0, 100)
    axes[0].set_title("validation accuracy, every epoch", fontsize=11)
    lo, hi = 100 * float(zoomed["val_acc"].min()), 100 * float(zoomed["val_acc"].max())
    pad = max(0.25, 0.1 * (hi - lo))
    axes[1].set_ylim(max(0.0, lo - pad), min(100.0, hi + pad))
    axes[1].set_title(f"zoom: epochs {zoom_from} to {last} (note the y axis)", fontsize=11)
    for ax in axes:
        ax.set_xlabel("epoch", fontsize=11)
        ax.set_ylabel("validation accuracy (%)", fontsize=11)
        ax.tick_params(labelsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=9, loc="best")
    n_seeds = int(curves[curves["model"].isin(models)].groupby("model")["seed"].nunique().min())
    fig.suptitle(title or f"validation curves of every seed ({n_seeds} per model)", fontsize=12)
    fig.tight_layout()
    return fig

