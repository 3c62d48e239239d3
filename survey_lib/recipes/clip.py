"""The CLIP recipe (``survey train clip``): image-caption pairs of the digits, zero-shot evaluation.

Radford et al. 2021, arXiv:2103.00020. Captions come from class names through the training
templates (``survey_lib.data.captions``); ``test_acc`` is the zero-shot accuracy with the held-out
templates, plus retrieval recall@1/5. open_clip's own ``CLIP`` of a similar size is built by
:func:`open_clip_for_profile` for the comparison in notebook 05.
"""
from __future__ import annotations

from typing import Dict, List

import torch
from torch import nn

from ..data import HELDOUT_TEMPLATES, CaptionedDigits, CaptionTokenizer, DigitsDataset, fill_template
from ..evaluate import encode_captions, encode_images, retrieval_recall, zero_shot_accuracy
from ..models.clip import CLIP, build_open_clip
from ..objectives.infonce import clip_step
from ..train import TrainConfig
from .base import Recipe, RecipeData, profile_config, register
from .vit import VIT_MODELS

__all__ = ["CLIP_MODELS", "OPEN_CLIP_MODELS", "CLIP_TRAIN", "CONFIGS", "RECIPE", "clip_for_profile",
           "open_clip_for_profile", "clip_train_config", "open_clip_param_groups"]

#: CPU-sized presets for 32 px grey digits and short captions, by profile. The image towers are the
#: digits ViT presets of :mod:`survey_lib.recipes.vit` without their classifier, mean-pooled.
CLIP_MODELS: Dict[str, dict] = {
    "smoke": dict(embed_dim=32, vision_cfg={**VIT_MODELS["smoke"], "global_pool": "avg"},
                  text_cfg=dict(context_length=16, width=32, depth=1, num_heads=2, mlp_ratio=2.0)),
    "cpu": dict(embed_dim=64, vision_cfg={**VIT_MODELS["cpu"], "global_pool": "avg"},
                text_cfg=dict(context_length=16, width=64, depth=2, num_heads=4, mlp_ratio=2.0)),
    "full": dict(embed_dim=128, vision_cfg={**VIT_MODELS["full"], "global_pool": "avg"},
                 text_cfg=dict(context_length=16, width=192, depth=4, num_heads=3, mlp_ratio=4.0)),
}

#: open_clip ``CLIP`` configurations of a similar size (open_clip's vision tower needs 3 channels:
#: use ``DigitsDataset(in_chans=3)``). ``head_width`` is the width per attention head.
OPEN_CLIP_MODELS: Dict[str, dict] = {
    "smoke": dict(embed_dim=32,
                  vision_cfg=dict(image_size=32, patch_size=8, width=32, layers=1, head_width=16, mlp_ratio=2.0),
                  text_cfg=dict(context_length=16, width=32, heads=2, layers=1, mlp_ratio=2.0)),
    "cpu": dict(embed_dim=64,
                vision_cfg=dict(image_size=32, patch_size=4, width=64, layers=4, head_width=16, mlp_ratio=2.0),
                text_cfg=dict(context_length=16, width=64, heads=4, layers=2, mlp_ratio=2.0)),
    "full": dict(embed_dim=128,
                 vision_cfg=dict(image_size=32, patch_size=4, width=192, layers=12, head_width=64, mlp_ratio=4.0),
                 text_cfg=dict(context_length=16, width=192, heads=3, layers=4, mlp_ratio=4.0)),
}

#: Training recipes of the digits CLIP by profile (:class:`survey_lib.train.TrainConfig` fields).
CLIP_TRAIN: Dict[str, dict] = {
    "smoke": dict(epochs=2, batch_size=128, lr=1e-3, warmup_epochs=0.5),
    "cpu": dict(epochs=30, batch_size=64, lr=1e-3, warmup_epochs=2, weight_decay=0.1),
    "full": dict(epochs=100, batch_size=128, lr=5e-4, warmup_epochs=5, weight_decay=0.1),
}

CONFIGS: Dict[str, dict] = {p: {"model": CLIP_MODELS[p], "train": CLIP_TRAIN[p]} for p in CLIP_MODELS}


def clip_for_profile(profile: str, **overrides) -> CLIP:
    """Our CLIP preset of ``profile``, with overrides of its top-level arguments.

    Raises:
        ValueError: unknown profile.
    """
    return CLIP(**{**profile_config(CLIP_MODELS, profile, "CLIP"), **overrides})


def open_clip_for_profile(profile: str, **overrides) -> nn.Module:
    """open_clip's ``CLIP`` of a size similar to our preset of ``profile``, randomly initialised
    (:func:`survey_lib.models.clip.build_open_clip`); ``overrides`` replace top-level keys.

    Raises:
        ValueError: unknown profile.
    """
    return build_open_clip(**{**profile_config(OPEN_CLIP_MODELS, profile, "open_clip's CLIP"), **overrides})


def clip_train_config(profile: str, **overrides) -> TrainConfig:
    """The :class:`~survey_lib.train.TrainConfig` of the digits CLIP for ``profile``, with overrides.

    Raises:
        ValueError: unknown profile.
    """
    return TrainConfig(**{**profile_config(CLIP_TRAIN, profile, "CLIP"), **overrides})


def open_clip_param_groups(model: nn.Module, weight_decay: float) -> List[dict]:
    """AdamW parameter groups as open_clip's training script makes them (``open_clip_train/main.py``),
    for our :class:`~survey_lib.models.clip.CLIP` or open_clip's ``CLIP``.

    open_clip_train decays every parameter except gains, biases and the temperature: it skips
    ``p.ndim < 2`` and names containing ``bn``, ``ln``, ``bias`` or ``logit_scale``. So it *decays*
    the position embeddings of both towers (2-D), which :func:`survey_lib.train.param_groups` skips
    (through the models' ``no_weight_decay()``); both decay the token embedding and skip the class
    embedding. Our class token is (1, 1, D) where open_clip's ``class_embedding`` is (D,), so it is
    skipped by name to get the same split.

    Use: ``fit(model, data, config=cfg, optimizer=torch.optim.AdamW(open_clip_param_groups(model,
    cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas)))``. (open_clip_train's other defaults
    for ViTs, AdamW betas (0.9, 0.98) and eps 1e-6, no gradient clipping, are settings of the
    same call and of :class:`~survey_lib.train.TrainConfig`.)

    Returns:
        ``[{"params": decayed, "weight_decay": weight_decay}, {"params": the rest, "weight_decay": 0.0}]``,
        the order of :func:`survey_lib.train.param_groups`.
    """
    def exclude(name: str, p: torch.Tensor) -> bool:
        return (p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
                or name == "visual.cls_token")

    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in params if not exclude(n, p)], "weight_decay": weight_decay},
            {"params": [p for n, p in params if exclude(n, p)], "weight_decay": 0.0}]


def _data(cfg, seed) -> RecipeData:
    tokenizer = CaptionTokenizer(cfg["model"]["text_cfg"]["context_length"])
    train = CaptionedDigits(train=True, tokenizer=tokenizer, augment=True, seed=0)
    return RecipeData(train=train, test=DigitsDataset(split="test"),
                      extras={"tokenizer": tokenizer, "val": DigitsDataset(split="val")})


def _metrics(model, data, cfg, history):
    tokenizer = data.extras["tokenizer"]
    acc = zero_shot_accuracy(model, tokenizer, data.test, HELDOUT_TEMPLATES)
    img, img_y = encode_images(model, data.test)
    txt = encode_captions(model, tokenizer, [fill_template(t, k) for k in range(10) for t in HELDOUT_TEMPLATES])
    txt_y = torch.arange(10).repeat_interleave(len(HELDOUT_TEMPLATES))
    return {"test_acc": acc, **retrieval_recall(img, txt, img_y, txt_y)}


RECIPE = register(Recipe(
    name="clip",
    summary="CLIP on captioned digits; zero-shot accuracy with held-out templates, retrieval recall@1/5",
    configs=CONFIGS,
    data=_data,
    build=lambda cfg, data: CLIP(**cfg["model"]),
    step=lambda cfg, data, model: clip_step(),
    evaluate=_metrics,
))
