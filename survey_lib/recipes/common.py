"""Pieces several recipes share: the supervised classification data and metrics, written once."""
from __future__ import annotations

from typing import Any, Dict

from torch import nn

from ..cost import count_parameters
from ..data import classification_dataset
from ..evaluate import accuracy
from ..train import History
from .base import RecipeData

__all__ = ["DIGITS_DATA", "classification_data", "classifier_metrics", "fraction_tag"]

#: The ``data`` section of a recipe on the 32 px digits (the ``smoke`` data).
DIGITS_DATA = {"dataset": "digits", "img_size": 32, "in_chans": 1, "augment": True, "max_shift": None, "label_fraction": 1.0}


def classification_data(cfg: Dict[str, Any], seed: int) -> RecipeData:
    """A labelled dataset's three splits for a classifier: ``train`` (with random shifts when
    ``data.augment``) to learn, ``val`` for the per-epoch curves (and every choice made while
    tuning), ``test`` for the final metrics, read once at the end.

    ``cfg["data"]``: ``dataset`` (``digits``, ``mnist5k``, ``mnist``), ``img_size``, ``in_chans``,
    ``augment`` and optionally ``max_shift`` and ``label_fraction`` (of the training split).
    """
    opts = {**DIGITS_DATA, **cfg.get("data", {})}
    common = dict(img_size=opts["img_size"], in_chans=opts["in_chans"])
    train = classification_dataset(opts["dataset"], "train", augment=opts["augment"], max_shift=opts.get("max_shift"),
                                   label_fraction=opts.get("label_fraction", 1.0), **common)
    return RecipeData(train=train, val=classification_dataset(opts["dataset"], "val", **common),
                      test=classification_dataset(opts["dataset"], "test", **common))


def classifier_metrics(model: nn.Module, data: RecipeData, cfg: Dict[str, Any], history: History) -> Dict[str, float]:
    """Test accuracy (a fraction) and parameter count of a trained classifier."""
    return {"test_acc": accuracy(model, data.test), "params": count_parameters(model)}


def fraction_tag(fraction: float) -> str:
    """``0.1 -> "f010"``: a label fraction as the three-digit percentage of the summary rows.

    Raises:
        ValueError: a fraction outside (0, 1].
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"a label fraction lies in (0, 1], got {fraction}")
    return f"f{round(fraction * 100):03d}"
