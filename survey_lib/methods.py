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
#: cpu: measured 97.8% test accuracy after 40 epochs (see notebooks/01_vit.ipynb).
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
