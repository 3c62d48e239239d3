"""The ViT recipe (``survey train vit``): the presets by profile and their training configuration.

Dosovitskiy et al. 2021, arXiv:2010.11929; the recipe follows Steiner et al. 2022, "How to train
your ViT?", arXiv:2106.10270 (AdamW, warm-up + cosine, label smoothing, augmentation instead of
more regularisation), sized for a CPU: the digits upsampled to 32 px, patch 4 (8 x 8 tokens).
"""
from __future__ import annotations

from typing import Dict

from ..models.vit import VisionTransformer
from ..train import TrainConfig
from .base import Recipe, profile_config, register
from .common import classifier_metrics, digits_classification_data

__all__ = ["VIT_MODELS", "VIT_TRAIN", "CONFIGS", "RECIPE", "vit_for_profile", "vit_train_config"]

#: CPU-sized ViT presets for the 32 x 32 digits (1 channel, 10 classes), by profile.
VIT_MODELS: Dict[str, dict] = {
    "smoke": dict(img_size=32, patch_size=8, in_chans=1, num_classes=10, embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0),
    "cpu": dict(img_size=32, patch_size=4, in_chans=1, num_classes=10, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0),
    "full": dict(img_size=32, patch_size=4, in_chans=1, num_classes=10, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0),
}

#: Training recipes of the digits ViT by profile (:class:`survey_lib.train.TrainConfig` fields).
VIT_TRAIN: Dict[str, dict] = {
    "smoke": dict(epochs=2, batch_size=128, lr=1e-3, warmup_epochs=0.5),
    "cpu": dict(epochs=40, batch_size=64, lr=2e-3, warmup_epochs=3, weight_decay=0.05, label_smoothing=0.1),
    "full": dict(epochs=100, batch_size=128, lr=1e-3, warmup_epochs=5, weight_decay=0.05, label_smoothing=0.1),
}

CONFIGS: Dict[str, dict] = {p: {"model": VIT_MODELS[p], "train": VIT_TRAIN[p]} for p in VIT_MODELS}


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
    summary="ViT classifier on the digits (32 px, random shifts); test accuracy",
    configs=CONFIGS,
    data=digits_classification_data,
    build=lambda cfg, data: VisionTransformer(**cfg["model"]),
    evaluate=classifier_metrics,
))
