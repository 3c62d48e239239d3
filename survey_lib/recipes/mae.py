"""The MAE recipe (``survey train mae``): masked-autoencoder pre-training, then probes of the encoder.

He et al. 2022, arXiv:2111.06377. AdamW with betas (0.9, 0.95) and weight decay 0.05 as in MAE's
pre-training (Table 8), with a higher learning rate for the tiny model. The final metrics are a
linear probe (``test_acc``; logistic regression) and the weighted k-NN (k = 20) on the frozen
encoder's mean-pooled features of the full, unmasked images.

Deviations from the paper: 32 px digits with random 1-pixel shifts instead of ImageNet with random
resized crops; 40 epochs (``cpu``) instead of 800-1600, batch 64 instead of 4096, a fixed learning
rate instead of the paper's ``base_lr * batch / 256`` rule.
"""
from __future__ import annotations

from typing import Dict

from ..data import DigitsDataset
from ..evaluate import extract_features, knn_classify, linear_probe
from ..models.mae import MaskedAutoencoderViT
from ..objectives.mae import mae_step
from ..train import TrainConfig
from .base import Recipe, RecipeData, profile_config, register
from .vit import VIT_MODELS

__all__ = ["MAE_MODELS", "MAE_TRAIN", "CONFIGS", "RECIPE", "mae_for_profile", "mae_train_config"]

#: The encoder is the digits ViT of the same profile (without its head), plus a light decoder.
MAE_MODELS: Dict[str, dict] = {
    profile: {**{k: v for k, v in VIT_MODELS[profile].items() if k not in ("num_classes", "global_pool")}, **decoder}
    for profile, decoder in {
        "smoke": dict(decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2, mask_ratio=0.75, norm_pix_loss=True, weight_init="vit"),
        "cpu": dict(decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=4, mask_ratio=0.75, norm_pix_loss=True, weight_init="vit"),
        "full": dict(decoder_embed_dim=128, decoder_depth=4, decoder_num_heads=4, mask_ratio=0.75, norm_pix_loss=True, weight_init="vit"),
    }.items()
}

#: Training recipes by profile. Cost of the ``cpu`` preset: the decoder runs on all 65 tokens, the
#: encoder on 17 (notebook 06 reports the measured seconds).
MAE_TRAIN: Dict[str, dict] = {
    "smoke": dict(epochs=2, batch_size=128, lr=1.5e-3, warmup_epochs=0.5, betas=(0.9, 0.95), weight_decay=0.05),
    "cpu": dict(epochs=40, batch_size=64, lr=1.5e-3, warmup_epochs=3, betas=(0.9, 0.95), weight_decay=0.05),
    "full": dict(epochs=400, batch_size=128, lr=1.5e-3, warmup_epochs=20, betas=(0.9, 0.95), weight_decay=0.05),
}

CONFIGS: Dict[str, dict] = {p: {"model": MAE_MODELS[p], "train": MAE_TRAIN[p]} for p in MAE_MODELS}


def mae_for_profile(profile: str, **overrides) -> MaskedAutoencoderViT:
    """The MAE preset of ``profile``, with keyword overrides.

    Raises:
        ValueError: unknown profile.
    """
    return MaskedAutoencoderViT(**{**profile_config(MAE_MODELS, profile, "MAE"), **overrides})


def mae_train_config(profile: str, **overrides) -> TrainConfig:
    """The :class:`~survey_lib.train.TrainConfig` of the digits MAE for ``profile``, with overrides.

    Raises:
        ValueError: unknown profile.
    """
    return TrainConfig(**{**profile_config(MAE_TRAIN, profile, "MAE"), **overrides})


def _data(cfg, seed) -> RecipeData:
    return RecipeData(train=DigitsDataset(split="train", augment=True), test=DigitsDataset(split="test"),
                      extras={"probe_train": DigitsDataset(split="train"), "val": DigitsDataset(split="val")})


def _metrics(model, data, cfg, history):
    f_tr, y_tr = extract_features(model.embed, data.extras["probe_train"])
    f_te, y_te = extract_features(model.embed, data.test)
    return {"test_acc": linear_probe(f_tr, y_tr, f_te, y_te), "knn_acc": knn_classify(f_tr, y_tr, f_te, y_te),
            "final_loss": history.last.get("train_loss", float("nan"))}


RECIPE = register(Recipe(
    name="mae",
    summary="MAE pre-training on the digits (no labels); linear-probe and k-NN accuracy of the encoder",
    configs=CONFIGS,
    data=_data,
    build=lambda cfg, data: MaskedAutoencoderViT(**cfg["model"]),
    step=lambda cfg, data, model: mae_step(),
    evaluate=_metrics,
))
