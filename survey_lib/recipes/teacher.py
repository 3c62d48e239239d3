"""DeiT's CNN teacher (``survey train cnn_teacher``): a small timm ResNet trained on the digits.

DeiT (Touvron et al. 2021, arXiv:2012.12877, Sec. 5.2) distils from a convnet (RegNetY-16GF on
ImageNet); here the teacher is timm's ``resnet10t`` with narrow channels, randomly initialised.
"""
from __future__ import annotations

from typing import Dict

from torch import nn

from ..models.resnet import timm_resnet
from ..train import TrainConfig
from .base import Recipe, profile_config, register
from .common import DIGITS_DATA, classifier_metrics, classification_data
from .vit import MNIST_DATA, MNIST_TRAIN

__all__ = ["TEACHER_MODELS", "TEACHER_TRAIN", "MNIST_CONFIG", "CONFIGS", "RECIPE", "cnn_teacher", "teacher_train_config"]

#: timm ``resnet10t`` (deep-tiered stem, one BasicBlock per stage, average-pool shortcuts) with
#: narrow channels for 32 x 32 one-channel digits, by profile. ``cpu``: ~0.32M parameters,
#: ~5.6 MFLOPs per image.
TEACHER_MODELS: Dict[str, dict] = {
    "smoke": dict(model_name="resnet10t", channels=(8, 16, 32, 64), stem_width=8),
    "cpu": dict(model_name="resnet10t", channels=(16, 32, 64, 128), stem_width=16),
    "full": dict(model_name="resnet10t", channels=(64, 128, 256, 512), stem_width=32),
}

#: Training recipes of the teacher (:class:`survey_lib.train.TrainConfig` fields) by profile.
TEACHER_TRAIN: Dict[str, dict] = {
    "smoke": dict(epochs=1, batch_size=128, lr=2e-3, warmup_epochs=0.2),
    "cpu": dict(epochs=15, batch_size=64, lr=2e-3, warmup_epochs=1, weight_decay=0.05, label_smoothing=0.1),
    "full": dict(epochs=100, batch_size=128, lr=2e-3, warmup_epochs=5, weight_decay=0.05, label_smoothing=0.1),
}

#: The ``cpu`` ResNet on 28 px MNIST-5k (the inductive-bias comparison, :mod:`survey_lib.recipes.compare`):
#: the same network (its strides take 28 px to a 1 x 1 map), with the ViT's data and training recipe
#: (:data:`survey_lib.recipes.vit.MNIST_TRAIN`), so the two differ by the architecture only. Not searched
#: (one thread, seed 0, 60 epochs: validation 99.0%, 112 s).
MNIST_CONFIG: Dict[str, dict] = {"data": dict(MNIST_DATA), "model": dict(TEACHER_MODELS["cpu"]), "train": dict(MNIST_TRAIN)}

CONFIGS: Dict[str, dict] = {p: {"data": dict(DIGITS_DATA), "model": TEACHER_MODELS[p], "train": TEACHER_TRAIN[p]}
                            for p in TEACHER_MODELS}


def cnn_teacher(profile: str = "cpu", in_chans: int = 1, num_classes: int = 10, **overrides) -> nn.Module:
    """The teacher preset of ``profile``: a small timm ResNet, randomly initialised (``pretrained=False``).

    Args:
        overrides: replace ``model_name`` or any timm ``ResNet`` argument (``channels``, ``stem_width``, ...).

    Shapes: (B, in_chans, H, W) -> (B, num_classes).

    Raises:
        ValueError: unknown profile.
    """
    return timm_resnet(**{**profile_config(TEACHER_MODELS, profile, "the CNN teacher"), **overrides},
                       in_chans=in_chans, num_classes=num_classes)


def teacher_train_config(profile: str, **overrides) -> TrainConfig:
    """The :class:`~survey_lib.train.TrainConfig` of the CNN teacher for ``profile``, with overrides.

    Raises:
        ValueError: unknown profile.
    """
    return TrainConfig(**{**profile_config(TEACHER_TRAIN, profile, "the CNN teacher"), **overrides})


RECIPE = register(Recipe(
    name="cnn_teacher",
    summary="DeiT's CNN teacher: a small timm ResNet on the digits; test accuracy",
    configs=CONFIGS,
    data=classification_data,
    build=lambda cfg, data: timm_resnet(**cfg["model"], in_chans=1, num_classes=10),
    evaluate=classifier_metrics,
))
