"""The NAT recipe (``survey train nat``): presets by profile and their training configuration.

Hassani et al. 2023, arXiv:2204.07143; DiNAT dilations (arXiv:2209.15001). CPU-sized for 32 x 32
digits: 2 levels (8 x 8 and 4 x 4 token grids) instead of 4, widths 16-96 instead of 64-512, kernel
3 instead of 7.
"""
from __future__ import annotations

from typing import Dict

from ..models.nat import NAT
from .base import Recipe, profile_config, register
from .common import DIGITS_DATA, classifier_metrics, classification_data
from .vit import MNIST_DATA, MNIST_TRAIN

__all__ = ["NAT_MODELS", "NAT_TRAIN", "MNIST_MODEL", "MNIST_CONFIG", "CONFIGS", "RECIPE", "nat_for_profile"]

#: CPU-sized presets for the 32 x 32 digits (1 channel, 10 classes), by profile. The tokenizer gives
#: an 8 x 8 grid, the downsampler 4 x 4; DiNA blocks (dilation 2) alternate with NA blocks on 8 x 8.
#: head_dim is 8, 16 or 32 (a power of two), so natten's CPU backend can run every block too.
NAT_MODELS: Dict[str, dict] = {
    "smoke": dict(img_size=32, in_chans=1, num_classes=10, embed_dim=16, depths=(1, 1), num_heads=(1, 2),
                  kernel_size=3, mlp_ratio=2.0, drop_path_rate=0.0),
    "cpu": dict(img_size=32, in_chans=1, num_classes=10, embed_dim=48, depths=(2, 2), num_heads=(3, 6),
                kernel_size=3, dilations=((1, 2), (1, 1)), mlp_ratio=2.0, drop_path_rate=0.0),
    "full": dict(img_size=32, in_chans=1, num_classes=10, embed_dim=96, depths=(3, 4), num_heads=(3, 6),
                 kernel_size=3, dilations=((1, 2, 1), (1, 1, 1, 1)), mlp_ratio=3.0, drop_path_rate=0.1),
}

#: Training recipes of the digits NAT by profile (:class:`survey_lib.train.TrainConfig` fields).
NAT_TRAIN: Dict[str, dict] = {
    "smoke": dict(epochs=2, batch_size=128, lr=2e-3, warmup_epochs=0.5),
    "cpu": dict(epochs=30, batch_size=64, lr=2e-3, warmup_epochs=3, weight_decay=0.05, label_smoothing=0.1),
    "full": dict(epochs=100, batch_size=128, lr=1e-3, warmup_epochs=5, weight_decay=0.05, label_smoothing=0.1),
}

#: NAT on 28 px MNIST (the inductive-bias comparison, :mod:`survey_lib.recipes.compare`): the paper's
#: tokenizer (two 3x3 stride-2 convolutions) gives a 7 x 7 grid where a 3 x 3 neighbourhood is local
#: (DiNA with dilation 2 in every second block reaches across it), then a 4 x 4 level. Set once, not
#: searched (one thread, seed 0, 60 epochs: validation 99.2%, 221 s; kernel 5 does not fit the 4 x 4 level).
MNIST_MODEL: Dict[str, object] = dict(img_size=28, in_chans=1, num_classes=10, embed_dim=48, depths=(2, 2),
                                      num_heads=(3, 6), kernel_size=3, dilations=((1, 2), (1, 1)), mlp_ratio=2.0,
                                      drop_path_rate=0.1)

#: The full ``survey train nat`` configuration on MNIST-5k: the ViT's data and training recipe
#: (:data:`survey_lib.recipes.vit.MNIST_TRAIN`), so the two differ by the architecture only.
MNIST_CONFIG: Dict[str, dict] = {"data": dict(MNIST_DATA), "model": MNIST_MODEL, "train": dict(MNIST_TRAIN)}

CONFIGS: Dict[str, dict] = {p: {"data": dict(DIGITS_DATA), "model": NAT_MODELS[p], "train": NAT_TRAIN[p]}
                            for p in NAT_MODELS}


def nat_for_profile(profile: str, **overrides) -> NAT:
    """The NAT preset of ``profile``, with keyword overrides.

    Raises:
        ValueError: unknown profile.
    """
    return NAT(**{**profile_config(NAT_MODELS, profile, "NAT"), **overrides})


RECIPE = register(Recipe(
    name="nat",
    summary="Neighborhood Attention Transformer on the digits (32 px, random shifts); test accuracy",
    configs=CONFIGS,
    data=classification_data,
    build=lambda cfg, data: NAT(**cfg["model"]),
    evaluate=classifier_metrics,
))
