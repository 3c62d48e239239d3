"""The SimCLR recipe (``survey train simclr``): two random views per image, NT-Xent, k-NN of the encoder.

Chen et al. 2020, arXiv:2002.05709. The encoder is CLIP's image tower of the same profile (same
config and pooling, :mod:`survey_lib.recipes.clip`), so the two differ only by the objective; the
projection head is SimCLR's (``survey_lib.objectives.infonce.SimCLR``). Views:
``survey_lib.data.views.simclr_augment`` (crop, shift, small rotation, erasing; no flips or colour
for digits). ``test_acc`` is the weighted k-NN accuracy (k = 20) of the frozen encoder's feature.

Deviations from the paper: temperature 0.2 (the paper's best is 0.1-0.5 for its batch sizes),
batch 128 instead of 4096, 30 epochs (``cpu``) instead of hundreds, AdamW instead of LARS.
"""
from __future__ import annotations

from typing import Dict

from ..data import DigitsDataset, TwoViews, simclr_augment
from ..evaluate import extract_features, knn_classify
from ..models.vit import VisionTransformer
from ..objectives.infonce import NTXentLoss, SimCLR, simclr_step
from .base import Recipe, RecipeData, register
from .clip import CLIP_MODELS

__all__ = ["SIMCLR_TRAIN", "CONFIGS", "RECIPE"]

#: Training recipes by profile; two views per image, so one epoch costs about two image-tower epochs.
SIMCLR_TRAIN: Dict[str, dict] = {
    "smoke": dict(epochs=1, batch_size=128, lr=1e-3, warmup_epochs=0.5),
    "cpu": dict(epochs=30, batch_size=128, lr=1e-3, warmup_epochs=3, weight_decay=0.05),
    "full": dict(epochs=200, batch_size=256, lr=1e-3, warmup_epochs=10, weight_decay=0.05),
}

CONFIGS: Dict[str, dict] = {
    p: {"encoder": {**CLIP_MODELS[p]["vision_cfg"], "num_classes": 0}, "proj_dim": CLIP_MODELS[p]["embed_dim"],
        "temperature": 0.2, "train": SIMCLR_TRAIN[p], "eval_every": "end"}
    for p in SIMCLR_TRAIN
}


def _data(cfg, seed) -> RecipeData:
    size = cfg["encoder"]["img_size"]
    return RecipeData(train=TwoViews(DigitsDataset(split="train", img_size=size), simclr_augment(img_size=size)),
                      val=DigitsDataset(split="val", img_size=size), test=DigitsDataset(split="test", img_size=size),
                      extras={"probe_train": DigitsDataset(split="train", img_size=size)})


def _build(cfg, data) -> SimCLR:
    width = cfg["encoder"]["embed_dim"]
    return SimCLR(VisionTransformer(**cfg["encoder"]), feature_dim=width, proj_dim=cfg["proj_dim"], hidden_dim=4 * width)


def _knn(model, data, split: str) -> float:
    a, ya = extract_features(model.embed, data.extras["probe_train"])
    b, yb = extract_features(model.embed, getattr(data, split))
    return knn_classify(a, ya, b, yb)


def _metrics(model, data, cfg, history) -> Dict[str, float]:
    knn = _knn(model, data, "test")
    return {"test_acc": knn, "knn_acc": knn}


RECIPE = register(Recipe(
    name="simclr",
    summary="SimCLR (NT-Xent on two views) on the digits; k-NN accuracy of the encoder",
    configs=CONFIGS,
    data=_data,
    build=_build,
    step=lambda cfg, data, model: simclr_step(NTXentLoss(cfg["temperature"])),
    eval_fn=lambda cfg, data: (lambda m: {"val_acc": _knn(m, data, "val")}),
    evaluate=_metrics,
))
