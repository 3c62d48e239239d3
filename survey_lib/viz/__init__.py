"""Every figure of the survey. Helpers return a ``matplotlib.figure.Figure``; notebooks save them
through :class:`survey_lib.report.Reporter`. Figures draw results; they never train.

* :mod:`.common` - images, training curves, confusion matrices, cost growth;
* :mod:`.attention` - the patch grid, attention maps per head, rollout, position embeddings;
* one module per method: :mod:`.swin`, :mod:`.nat`, :mod:`.mae`, :mod:`.dino`, :mod:`.multitask`,
  :mod:`.clip`, and :mod:`.survey` for the survey tables.

The shared helpers are re-exported here (``from survey_lib import viz; viz.plot_history(...)``).
"""
from .attention import attention_rollout, plot_attention_heads, plot_patch_grid, plot_pos_embed_similarity, plot_rollout
from .common import plot_confusion_matrix, plot_cost_growth, plot_history, show_image

__all__ = [
    "show_image",
    "plot_history",
    "plot_confusion_matrix",
    "plot_cost_growth",
    "plot_patch_grid",
    "plot_attention_heads",
    "attention_rollout",
    "plot_rollout",
    "plot_pos_embed_similarity",
]
