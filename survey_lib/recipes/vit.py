"""The ViT recipe (``survey train vit``): the presets by profile and their training configuration.

Dosovitskiy et al. 2021, arXiv:2010.11929; the recipe follows Steiner et al. 2022, "How to train
your ViT?", arXiv:2106.10270 (AdamW, warm-up + cosine, label smoothing, augmentation instead of
more regularisation), sized for a CPU.

* ``smoke``: the 8 x 8 digits upsampled to 32 px, a one-block ViT (the pipeline, in seconds).
* ``cpu``: MNIST-5k at its own 28 px (:data:`MNIST_MODEL`, :data:`MNIST_TRAIN`), chosen on the
  validation split (notebook 01 shows the runs).
* ``full``: the full MNIST from a local folder (``survey_lib.data.MNISTDisk``).

:data:`VIT_MODELS` / :data:`VIT_TRAIN` are the 32 px digits presets of every profile, which the
notebooks that still train on the digits build with :func:`vit_for_profile` and
:func:`vit_train_config`.
"""
from __future__ import annotations

from typing import Dict

from ..models.vit import VisionTransformer
from ..train import TrainConfig
from .base import Recipe, profile_config, register
from .common import DIGITS_DATA, classification_data, classifier_metrics

__all__ = ["VIT_MODELS", "VIT_TRAIN", "MNIST_DATA", "MNIST_MODEL", "MNIST_TRAIN", "CONFIGS", "RECIPE",
           "vit_for_profile", "vit_train_config"]

#: CPU-sized ViT presets for the 32 x 32 digits (1 channel, 10 classes), by profile.
VIT_MODELS: Dict[str, dict] = {
    "smoke": dict(img_size=32, patch_size=8, in_chans=1, num_classes=10, embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0,
                  global_pool="token"),
    "cpu": dict(img_size=32, patch_size=4, in_chans=1, num_classes=10, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0,
                global_pool="token"),
    "full": dict(img_size=32, patch_size=4, in_chans=1, num_classes=10, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0,
                 global_pool="token"),
}

#: Training recipes of the digits ViT by profile (:class:`survey_lib.train.TrainConfig` fields).
VIT_TRAIN: Dict[str, dict] = {
    "smoke": dict(epochs=2, batch_size=128, lr=1e-3, warmup_epochs=0.5),
    "cpu": dict(epochs=40, batch_size=64, lr=2e-3, warmup_epochs=3, weight_decay=0.05, label_smoothing=0.1),
    "full": dict(epochs=100, batch_size=128, lr=1e-3, warmup_epochs=5, weight_decay=0.05, label_smoothing=0.1),
}

#: MNIST-5k at 28 px with random 2-pixel shifts.
MNIST_DATA: Dict[str, object] = {"dataset": "mnist5k", "img_size": 28, "in_chans": 1, "augment": True, "max_shift": 2,
                                 "label_fraction": 1.0}

#: The ``cpu`` ViT for 28 px MNIST: patch 7 (4 x 4 = 16 tokens), 64 wide, 4 blocks, mean-pooled patch
#: tokens, stochastic depth 0.1. Chosen on the validation split among patch 2 / 4 / 7, widths 64-128,
#: class token or mean pooling, 30-150 epochs, batch 16-128, lr 5e-4 to 3e-3, label smoothing, drop
#: path, shifts and small affine augmentation (one seed per trial, one thread; notebook 01 re-measures
#: the two choices that mattered most on validation).
MNIST_MODEL: Dict[str, object] = dict(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=64, depth=4,
                                      num_heads=4, mlp_ratio=2.0, global_pool="avg", drop_path_rate=0.1)

#: Its training recipe: a long schedule at batch 32 (the small model underfits short ones).
MNIST_TRAIN: Dict[str, object] = dict(epochs=150, batch_size=32, lr=2e-3, warmup_epochs=3, weight_decay=0.05,
                                      label_smoothing=0.1)

CONFIGS: Dict[str, dict] = {
    "smoke": {"data": dict(DIGITS_DATA), "model": VIT_MODELS["smoke"], "train": VIT_TRAIN["smoke"]},
    "cpu": {"data": dict(MNIST_DATA), "model": MNIST_MODEL, "train": MNIST_TRAIN},
    "full": {"data": {**MNIST_DATA, "dataset": "mnist"},
             "model": {**MNIST_MODEL, "embed_dim": 192, "depth": 12, "num_heads": 3, "mlp_ratio": 4.0},
             "train": dict(epochs=100, batch_size=128, lr=1e-3, warmup_epochs=5, weight_decay=0.05, label_smoothing=0.1)},
}


def vit_for_profile(profile: str, **overrides) -> VisionTransformer:
    """The ViT preset of ``profile`` (``smoke``, ``cpu`` or ``full``), with keyword overrides.

    Raises:
        ValueError: unknown profile.
    """
    return VisionTransformer(**{**profile_config(VIT_MODELS, profile, "the ViT"), **overrides})


def vit_train_config(profile: str, **overrides) -> TrainConfig:
    """The :class:`~survey_lib.train.TrainConfig` of the digits ViT for ``profile``, with overrides.

    Raises:
        ValueError: unknown profile.
    """
    return TrainConfig(**{**profile_config(VIT_TRAIN, profile, "the ViT"), **overrides})


RECIPE = register(Recipe(
    name="vit",
    summary="ViT classifier (cpu: MNIST-5k at 28 px, random shifts); test accuracy",
    configs=CONFIGS,
    data=classification_data,
    build=lambda cfg, data: VisionTransformer(**cfg["model"]),
    evaluate=classifier_metrics,
))
