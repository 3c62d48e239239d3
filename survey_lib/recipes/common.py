"""Pieces several recipes share: the supervised classification data and metrics, written once."""
from __future__ import annotations

from typing import Any, Dict

from torch import nn

from ..cost import count_parameters
from ..data import DigitsDataset
from ..evaluate import accuracy
from ..train import History
from .base import RecipeData

__all__ = ["digits_classification_data", "classifier_metrics"]


def digits_classification_data(cfg: Dict[str, Any], seed: int) -> RecipeData:
    """The digits for a classifier: the training split with random shifts, the test split plain.

    ``cfg["data"]`` may set ``img_size`` (default 32) and ``in_chans`` (default 1). The per-epoch
    curves are drawn on ``val``, here the test split.
    """
    opts = dict(cfg.get("data", {}))
    img_size, in_chans = opts.get("img_size", 32), opts.get("in_chans", 1)
    train = DigitsDataset(train=True, augment=True, img_size=img_size, in_chans=in_chans)
    test = DigitsDataset(train=False, img_size=img_size, in_chans=in_chans)
    return RecipeData(train=train, val=test, test=test)


def classifier_metrics(model: nn.Module, data: RecipeData, cfg: Dict[str, Any], history: History) -> Dict[str, float]:
    """Test accuracy (a fraction) and parameter count of a trained classifier."""
    return {"test_acc": accuracy(model, data.test), "params": count_parameters(model)}
