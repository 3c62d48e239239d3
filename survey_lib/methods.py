"""Training recipes by profile, shared by the notebooks and ``survey train <method>``.

Each recipe is a function ``(profile, checkpoint=None, seed=0) -> dict`` that builds the model,
trains it on the embedded data with :func:`survey_lib.train.fit`, and returns at least
``{"model", "history", "test_acc", "seconds"}``. Register new methods in :data:`METHODS`.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

from .train import TrainConfig

__all__ = ["VIT_TRAIN", "vit_train_config", "train_vit", "METHODS", "train_method"]

#: Training recipes of the digits ViT (``survey_lib.models.vit.VIT_CONFIGS``) by profile.
#: cpu: 98.9% test accuracy after 40 epochs, 201 s (seed 0; notebooks/01_vit.ipynb, run of 2026-12-01).
VIT_TRAIN: Dict[str, dict] = {
    "smoke": dict(epochs=2, batch_size=128, lr=1e-3, warmup_epochs=0.5),
    "cpu": dict(epochs=40, batch_size=64, lr=2e-3, warmup_epochs=3, weight_decay=0.05, label_smoothing=0.1),
    "full": dict(epochs=100, batch_size=128, lr=1e-3, warmup_epochs=5, weight_decay=0.05, label_smoothing=0.1),
}


def vit_train_config(profile: str, **overrides) -> TrainConfig:
    """The :class:`TrainConfig` of the digits ViT for ``profile``, with overrides."""
    if profile not in VIT_TRAIN:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(VIT_TRAIN)}")
    return TrainConfig(**{**VIT_TRAIN[profile], **overrides})


def train_vit(profile: str = "cpu", checkpoint: Optional[str] = None, seed: int = 0) -> dict:
    """Train the digits ViT of ``profile`` (32 px, augmented) and report its test accuracy."""
    from .data import DigitsDataset
    from .evaluate import accuracy
    from .models.vit import vit_for_profile
    from .train import fit, seed_everything

    seed_everything(seed)
    model = vit_for_profile(profile)
    train_set, test_set = DigitsDataset(train=True, augment=True), DigitsDataset(train=False)
    cfg = vit_train_config(profile, seed=seed, checkpoint_path=checkpoint, desc=f"vit [{profile}]")
    history = fit(model, train_set, test_set, cfg)
    return {"model": model, "history": history, "test_acc": accuracy(model, test_set), "seconds": history.seconds}


#: ``survey train <name>`` dispatches here.
METHODS: Dict[str, Callable[..., dict]] = {
    "vit": train_vit,
}


def train_method(name: str, profile: str = "cpu", checkpoint: Optional[str] = None, seed: int = 0) -> dict:
    """Run the recipe ``name``; returns its result dict without the model (printable).

    Raises:
        ValueError: unknown method.
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    out = METHODS[name](profile=profile, checkpoint=checkpoint, seed=seed)
    return {k: v for k, v in out.items() if k not in ("model", "history")}


def train_mae(profile: str = "cpu", checkpoint: Optional[str] = None, seed: int = 0) -> dict:
    """MAE pre-training on the digits; ``test_acc`` is a linear probe on the frozen encoder's
    mean-pooled features (see :func:`survey_lib.objectives.mae.train_mae`)."""
    from .objectives.mae import train_mae as _train_mae

    return _train_mae(profile=profile, checkpoint=checkpoint, seed=seed)


METHODS["mae"] = train_mae


def train_dino(profile: str = "cpu", checkpoint: Optional[str] = None, seed: int = 0) -> dict:
    """DINO self-distillation on the digits (ViT backbone, no labels); ``test_acc`` is the weighted
    k-NN accuracy of the teacher's CLS feature (see :func:`survey_lib.objectives.dino.train_dino`)."""
    from .objectives.dino import train_dino as _train_dino

    return _train_dino(profile=profile, checkpoint=checkpoint, seed=seed)


METHODS["dino"] = train_dino


def train_deit(profile: str = "cpu", checkpoint: Optional[str] = None, seed: int = 0) -> dict:
    """DeiT: a CNN teacher (small timm ResNet), then the digits ViT with a distillation token trained
    with hard distillation (see :func:`survey_lib.objectives.distillation.train_deit`)."""
    from .objectives.distillation import train_deit as _train_deit

    return _train_deit(profile=profile, checkpoint=checkpoint, seed=seed)


METHODS["deit"] = train_deit


def train_clip(profile: str = "cpu", checkpoint: Optional[str] = None, seed: int = 0) -> dict:
    """CLIP on digit-caption pairs (captions from class names through training templates);
    ``test_acc`` is the zero-shot accuracy with held-out templates (see
    :func:`survey_lib.captions.train_clip`), plus retrieval recall@1/5."""
    from .captions import train_clip as _train_clip

    return _train_clip(profile=profile, checkpoint=checkpoint, seed=seed)


METHODS["clip"] = train_clip


def train_swin(profile: str = "cpu", checkpoint: Optional[str] = None, seed: int = 0) -> dict:
    """Swin Transformer (shifted windows, hierarchical) on the 32 px digits (see
    :func:`survey_lib.models.swin.train_swin`; recipes in ``SWIN_TRAIN``)."""
    from .models.swin import train_swin as _train_swin

    return _train_swin(profile=profile, checkpoint=checkpoint, seed=seed)


METHODS["swin"] = train_swin


def train_nat(profile: str = "cpu", checkpoint: Optional[str] = None, seed: int = 0) -> dict:
    """Neighborhood Attention Transformer on the 32 px digits (see
    :func:`survey_lib.models.nat.train_nat`; recipes in ``NAT_TRAIN``)."""
    from .models.nat import train_nat as _train_nat

    return _train_nat(profile=profile, checkpoint=checkpoint, seed=seed)


METHODS["nat"] = train_nat


def train_multitask(profile: str = "cpu", checkpoint: Optional[str] = None, seed: int = 0) -> dict:
    """The ITMO thesis's multi-task self-distillation (DINO + rotation + supervised) with 10% of the
    digits' labels (see :func:`survey_lib.objectives.multitask.train_multitask`); ``test_acc`` is the
    supervised head's test accuracy.

    Raises:
        ValueError: a ``checkpoint`` (this recipe trains in one go and does not resume).
    """
    from .objectives.multitask import train_multitask as _train_multitask

    if checkpoint is not None:
        raise ValueError("survey train multitask does not write or resume checkpoints; drop --checkpoint")
    return _train_multitask(profile=profile, seed=seed)


METHODS["multitask"] = train_multitask
