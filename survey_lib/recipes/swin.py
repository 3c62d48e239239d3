"""The Swin recipe (``survey train swin``): presets by profile and their training configuration.

Liu et al. 2021, arXiv:2103.14030. Sized for 1,437 digits on a CPU: AdamW with batch 32-128
instead of 1024, 40-100 epochs instead of 300, and no stochastic depth in the ``cpu`` preset
(Sec. 4.1 uses drop path 0.2 for Swin-T; on the digits it made the model underfit).
"""
from __future__ import annotations

from typing import Dict

from ..models.swin import SwinTransformer
from ..train import TrainConfig
from .base import Recipe, profile_config, register
from .common import DIGITS_DATA, classifier_metrics, classification_data
from .vit import MNIST_DATA, MNIST_TRAIN

__all__ = ["SWIN_MODELS", "SWIN_TRAIN", "MNIST_MODEL", "MNIST_CONFIG", "CONFIGS", "RECIPE", "swin_for_profile",
           "swin_train_config"]

#: CPU-sized presets for the 32 x 32 digits (1 channel, 10 classes), by profile.
#: smoke / cpu: patch 4 -> 8x8 grid, 4x4 windows (4 windows, shifted in every second block), then a
#: 4x4 stage that is one global window. full: patch 2 -> 16x16 (16 windows), 8x8 (4), 4x4 (global).
SWIN_MODELS: Dict[str, dict] = {
    "smoke": dict(img_size=32, patch_size=4, in_chans=1, num_classes=10, embed_dim=16, depths=(2, 1),
                  num_heads=(2, 4), window_size=4, mlp_ratio=2.0, drop_path_rate=0.0, shifted_windows=True),
    "cpu": dict(img_size=32, patch_size=4, in_chans=1, num_classes=10, embed_dim=64, depths=(2, 2),
                num_heads=(2, 4), window_size=4, mlp_ratio=2.0, drop_path_rate=0.0, shifted_windows=True),
    "full": dict(img_size=32, patch_size=2, in_chans=1, num_classes=10, embed_dim=64, depths=(2, 2, 6),
                 num_heads=(2, 4, 8), window_size=4, mlp_ratio=4.0, drop_path_rate=0.2, shifted_windows=True),
}

#: Training recipes of the digits Swin by profile; the ViT's loop and augmentation, batch 32 for cpu.
SWIN_TRAIN: Dict[str, dict] = {
    "smoke": dict(epochs=2, batch_size=128, lr=1e-3, warmup_epochs=0.5),
    "cpu": dict(epochs=40, batch_size=32, lr=2e-3, warmup_epochs=3, weight_decay=0.05, label_smoothing=0.1),
    "full": dict(epochs=100, batch_size=128, lr=1e-3, warmup_epochs=5, weight_decay=0.05, label_smoothing=0.1),
}

#: Swin on 28 px MNIST (the inductive-bias comparison, :mod:`survey_lib.recipes.compare`): patch 2 gives
#: a 14 x 14 grid, so 7 x 7 windows make 4 windows per image, shifted by 3 in every second block (the
#: mechanism has something to do), then a 7 x 7 stage that is one global window. 32 wide, (2, 2) blocks,
#: stochastic depth 0.1 like the ViT. Set once, not searched (one thread, seed 0, 60 epochs: validation
#: 97.8% with drop path 0.1, 98.4% without, 472 s and 432 s; the comparison keeps 0.1, the ViT's).
MNIST_MODEL: Dict[str, object] = dict(img_size=28, patch_size=2, in_chans=1, num_classes=10, embed_dim=32, depths=(2, 2),
                                      num_heads=(2, 4), window_size=7, mlp_ratio=2.0, drop_path_rate=0.1,
                                      shifted_windows=True)

#: The full ``survey train swin`` configuration on MNIST-5k: the ViT's data and training recipe
#: (:data:`survey_lib.recipes.vit.MNIST_TRAIN`), so the two differ by the architecture only.
MNIST_CONFIG: Dict[str, dict] = {"data": dict(MNIST_DATA), "model": MNIST_MODEL, "train": dict(MNIST_TRAIN)}

CONFIGS: Dict[str, dict] = {p: {"data": dict(DIGITS_DATA), "model": SWIN_MODELS[p], "train": SWIN_TRAIN[p]}
                            for p in SWIN_MODELS}


def swin_for_profile(profile: str, **overrides) -> SwinTransformer:
    """The Swin preset of ``profile``, with keyword overrides.

    Raises:
        ValueError: unknown profile.
    """
    return SwinTransformer(**{**profile_config(SWIN_MODELS, profile, "Swin"), **overrides})


def swin_train_config(profile: str, **overrides) -> TrainConfig:
    """The :class:`~survey_lib.train.TrainConfig` of the digits Swin for ``profile``, with overrides.

    Raises:
        ValueError: unknown profile.
    """
    return TrainConfig(**{**profile_config(SWIN_TRAIN, profile, "Swin"), **overrides})


RECIPE = register(Recipe(
    name="swin",
    summary="Swin Transformer (shifted windows) on the digits (32 px, random shifts); test accuracy",
    configs=CONFIGS,
    data=classification_data,
    build=lambda cfg, data: SwinTransformer(**cfg["model"]),
    evaluate=classifier_metrics,
))
