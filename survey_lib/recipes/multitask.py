"""The ITMO thesis's multi-task self-distillation (``survey train multitask``) and its supervised
baseline (``survey train supervised_baseline``), with a fraction of the digits' labels.

The framework (``survey_lib.objectives.multitask``): DINO-style distillation + rotation prediction +
a supervised head, weights 1.0 / 1.0 / 2.5, a masked global view, local crops. ``study`` selects
the label fraction (stratified), the setting (``"small_data"``: only the labelled images exist, as
in the thesis; ``"semi_supervised"``: every image feeds the self-supervised losses, only the
labelled ones the supervised loss), the switched-on losses and the ablation switches. ``epochs``
are passes of ``samples_per_epoch`` images (1,437 in ``cpu``): the same optimiser steps
for every label fraction and method. ``test_acc`` is the supervised head's test accuracy;
``knn_acc`` / ``knn_teacher_acc`` the weighted k-NN of the student's / teacher's CLS feature with the
labelled images as the memory bank.

Deviations from the thesis: see ``survey_lib.objectives.multitask`` (16 px digits, a tiny ViT, a
few hundred steps, teacher momentum 0.96 -> 1, no photometric noise).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset

from ..data import DIGITS_MEAN, DIGITS_STD, DigitsDataset, MultiTaskViews, PartiallyLabelled, fixed_steps_loader, labelled_indices
from ..evaluate import accuracy, probe_accuracies
from ..models.vit import VisionTransformer
from ..objectives.multitask import LOSS_NAMES, MultiTaskDINO, build_multitask, multitask_step
from .base import Recipe, RecipeData, RecipeResult, register
from .dino import DIGITS_PHOTOMETRIC

__all__ = ["MULTITASK_CONFIGS", "CONFIGS", "RECIPE", "BASELINE", "digits_views", "multitask_overrides",
           "train_multitask", "train_supervised_baseline"]

#: The framework and its supervised baseline on the digits (16 px in smoke and cpu, 32 px in full),
#: by profile.
MULTITASK_CONFIGS: Dict[str, dict] = {
    "smoke": dict(
        vit=dict(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0),
        views=dict(global_size=16, local_size=8, n_local_crops=2, mask_scale=(0.4, 0.6), rotate_prob=0.75,
                   **DIGITS_PHOTOMETRIC),
        head=dict(out_dim=128, use_bn=True, hidden_dim=64, bottleneck_dim=32),
        loss=dict(student_temp=0.1, teacher_temp=0.04, center_momentum=0.9),
        momentum_teacher=0.96, label_smoothing=0.1, samples_per_epoch=96,
        train=dict(epochs=2, batch_size=32, lr=3e-3, warmup_epochs=0.5, weight_decay=0.04, clip_grad=3.0),
        baseline=dict(lr=2e-3, weight_decay=0.05, clip_grad=1.0),
    ),
    "cpu": dict(
        vit=dict(img_size=16, patch_size=4, in_chans=1, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0),
        views=dict(global_size=16, local_size=8, n_local_crops=2, mask_scale=(0.4, 0.6), rotate_prob=0.75,
                   **DIGITS_PHOTOMETRIC),
        head=dict(out_dim=512, use_bn=True, hidden_dim=256, bottleneck_dim=64),
        loss=dict(student_temp=0.1, teacher_temp=0.04, center_momentum=0.9),
        momentum_teacher=0.96, label_smoothing=0.1, samples_per_epoch=1437,
        train=dict(epochs=12, batch_size=64, lr=3e-3, warmup_epochs=1, weight_decay=0.04, clip_grad=3.0),
        baseline=dict(lr=2e-3, weight_decay=0.05, clip_grad=1.0),
    ),
    "full": dict(
        vit=dict(img_size=32, patch_size=4, in_chans=1, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0),
        views=dict(global_size=32, local_size=16, n_local_crops=6, mask_scale=(0.4, 0.6), rotate_prob=0.75,
                   **DIGITS_PHOTOMETRIC),
        head=dict(out_dim=4096, use_bn=True, hidden_dim=1024, bottleneck_dim=128),
        loss=dict(student_temp=0.1, teacher_temp=0.04, center_momentum=0.9),
        momentum_teacher=0.99, label_smoothing=0.1, samples_per_epoch=1437,
        train=dict(epochs=100, batch_size=64, lr=1e-3, warmup_epochs=10, weight_decay=0.04, clip_grad=3.0),
        baseline=dict(lr=1e-3, weight_decay=0.05, clip_grad=1.0),
    ),
}

#: The study's switches, the same for every profile: label fraction, setting, losses, ablations,
#: neighbours of the k-NN probe (the thesis: 20).
STUDY: Dict[str, Any] = dict(label_fraction=0.1, setting="small_data", losses=tuple(LOSS_NAMES), masked_view=True,
                             supervised_views="upright", k=20)

CONFIGS: Dict[str, dict] = {p: {**c, "study": dict(STUDY)} for p, c in MULTITASK_CONFIGS.items()}


def digits_views(**views: Any) -> MultiTaskViews:
    """:class:`~survey_lib.data.MultiTaskViews` for :class:`~survey_lib.data.DigitsDataset` items
    (normalised inputs, normalised outputs, no flips)."""
    return MultiTaskViews(mean=[DIGITS_MEAN], std=[DIGITS_STD], inputs_normalized=True, **views)


def _knn(encoder, bank: Dataset, test_set: Dataset, k: int) -> float:
    return probe_accuracies(encoder, bank, test_set, k=min(k, len(bank)), linear=False)["knn_acc"]


def _check_study(study: Mapping[str, Any]) -> None:
    if study["setting"] not in ("small_data", "semi_supervised"):
        raise ValueError(f"setting must be 'small_data' or 'semi_supervised', got {study['setting']!r}")
    unknown = set(study["losses"]) - set(LOSS_NAMES)
    if unknown:
        raise ValueError(f"unknown losses {sorted(unknown)}; choose from {LOSS_NAMES}")


# ---------------------------------------------------------------------------------------------
# the framework
# ---------------------------------------------------------------------------------------------
def _data(cfg, seed) -> RecipeData:
    study = cfg["study"]
    _check_study(study)
    size = cfg["vit"]["img_size"]
    full = DigitsDataset(split="train", img_size=size)
    idx = labelled_indices(full.targets, study["label_fraction"])
    bank = torch.utils.data.Subset(full, idx.tolist())  # the labelled images: k-NN memory bank
    train_set: Dataset = bank if study["setting"] == "small_data" else PartiallyLabelled(full, idx.tolist())
    views = digits_views(**cfg["views"], masked_view=study["masked_view"])  # validates the mask scale
    loader = fixed_steps_loader(train_set, cfg["train"]["batch_size"], cfg["samples_per_epoch"], seed, views.collate)
    return RecipeData(train=loader, val=DigitsDataset(split="val", img_size=size),
                      test=DigitsDataset(split="test", img_size=size),
                      extras={"bank": bank, "views": views, "n_labelled": len(idx)})


def _build(cfg, data) -> MultiTaskDINO:
    study = cfg["study"]
    losses = study["losses"]
    net = VisionTransformer(**cfg["vit"], num_classes=0)
    return build_multitask(net, cfg["vit"]["embed_dim"], 10, cfg["train"]["epochs"], use_dino="dino" in losses,
                           use_supervised="supervised" in losses, use_rotation="rotation" in losses,
                           masked_view=study["masked_view"], n_local_crops=data.extras["views"].n_local,
                           **cfg["head"], **cfg["loss"], momentum_teacher=cfg["momentum_teacher"],
                           label_smoothing=cfg["label_smoothing"], supervised_views=study["supervised_views"])


def _head_accuracy(model: MultiTaskDINO, dataset) -> Optional[float]:
    if not model.use_supervised:
        return None
    with torch.no_grad():
        return float((model.classify(dataset.images).argmax(-1) == dataset.targets).float().mean())


def _val_acc_fn(cfg, data):
    return lambda m: {} if not m.use_supervised else {"val_acc": _head_accuracy(m, data.val)}


def _metrics(model, data, cfg, history) -> Dict[str, float]:
    k, bank = cfg["study"]["k"], data.extras["bank"]
    return {"test_acc": _head_accuracy(model, data.test), "knn_acc": _knn(model.student_embed, bank, data.test, k),
            "knn_teacher_acc": _knn(model.teacher_embed, bank, data.test, k), "n_labelled": data.extras["n_labelled"]}


RECIPE = register(Recipe(
    name="multitask",
    summary="the ITMO thesis's multi-task self-distillation with 10% of the labels; supervised head's test accuracy",
    configs=CONFIGS,
    data=_data,
    build=_build,
    step=lambda cfg, data, model: multitask_step,
    eval_fn=_val_acc_fn,
    evaluate=_metrics,
))


# ---------------------------------------------------------------------------------------------
# the supervised baseline
# ---------------------------------------------------------------------------------------------
def _baseline_data(cfg, seed) -> RecipeData:
    size = cfg["vit"]["img_size"]
    full = DigitsDataset(split="train", img_size=size, augment=True)
    idx = labelled_indices(full.targets, cfg["study"]["label_fraction"])
    train_set = torch.utils.data.Subset(full, idx.tolist())
    bank = torch.utils.data.Subset(DigitsDataset(split="train", img_size=size), idx.tolist())
    loader = fixed_steps_loader(train_set, cfg["train"]["batch_size"], cfg["samples_per_epoch"], seed)
    return RecipeData(train=loader, val=DigitsDataset(split="val", img_size=size),
                      test=DigitsDataset(split="test", img_size=size), extras={"bank": bank, "n_labelled": len(idx)})


def _baseline_metrics(model, data, cfg, history) -> Dict[str, float]:
    return {"test_acc": accuracy(model, data.test), "knn_acc": _knn(model.embed, data.extras["bank"], data.test, cfg["study"]["k"]),
            "n_labelled": data.extras["n_labelled"]}


#: The baseline trains with the framework's steps per epoch and epochs, and the project's supervised
#: recipe (AdamW, warm-up + cosine, label smoothing 0.1, random 1-pixel shifts; the "How to train
#: your ViT" style of recipe the thesis compares with): ``baseline`` replaces lr, weight decay and clip.
BASELINE_CONFIGS: Dict[str, dict] = {
    p: {**c, "train": {**c["train"], **c["baseline"], "label_smoothing": c["label_smoothing"]}} for p, c in CONFIGS.items()
}

BASELINE = register(Recipe(
    name="supervised_baseline",
    summary="the supervised ViT on the multitask recipe's labelled fraction and steps; test accuracy",
    configs=BASELINE_CONFIGS,
    data=_baseline_data,
    build=lambda cfg, data: VisionTransformer(**cfg["vit"], num_classes=10),
    evaluate=_baseline_metrics,
))


# ---------------------------------------------------------------------------------------------
# the study's keyword interface (notebook 10)
# ---------------------------------------------------------------------------------------------
def multitask_overrides(label_fraction: Optional[float] = None, setting: Optional[str] = None,
                        losses: Optional[Sequence[str]] = None, epochs: Optional[int] = None,
                        masked_view: Optional[bool] = None, mask_scale: Optional[Tuple[float, float]] = None,
                        student_temp: Optional[float] = None, teacher_temp: Optional[float] = None,
                        n_local_crops: Optional[int] = None, supervised_views: Optional[str] = None,
                        views: Optional[Mapping[str, Any]] = None, momentum_teacher: Optional[float] = None,
                        train: Optional[Mapping[str, Any]] = None, k: Optional[int] = None) -> Dict[str, Any]:
    """The configuration overrides of the study's switches, by their names in the thesis's ablations."""
    study = {key: v for key, v in dict(label_fraction=label_fraction, setting=setting, losses=losses,
                                      masked_view=masked_view, supervised_views=supervised_views, k=k).items()
             if v is not None}
    out: Dict[str, Any] = {"study": study, "views": dict(views or {}), "loss": {}, "train": dict(train or {})}
    if mask_scale is not None:
        out["views"]["mask_scale"] = mask_scale
    if n_local_crops is not None:
        out["views"]["n_local_crops"] = n_local_crops
    if student_temp is not None:
        out["loss"]["student_temp"] = student_temp
    if teacher_temp is not None:
        out["loss"]["teacher_temp"] = teacher_temp
    if epochs is not None:
        out["train"]["epochs"] = int(epochs)
    if momentum_teacher is not None:
        out["momentum_teacher"] = momentum_teacher
    return out


def train_multitask(profile: str = "cpu", seed: int = 0, progress: Optional[bool] = None, desc: Optional[str] = None,
                    **switches) -> RecipeResult:
    """``survey train multitask`` with the study's switches (:func:`multitask_overrides`)."""
    return RECIPE.run(profile, seed, overrides=multitask_overrides(**switches), progress=progress, desc=desc)


def train_supervised_baseline(profile: str = "cpu", seed: int = 0, label_fraction: float = 0.1,
                              epochs: Optional[int] = None, k: int = 20, progress: Optional[bool] = None,
                              desc: Optional[str] = None) -> RecipeResult:
    """``survey train supervised_baseline`` on ``label_fraction`` of the labels, for ``epochs``."""
    overrides: Dict[str, Any] = {"study": {"label_fraction": label_fraction, "k": k}}
    if epochs is not None:
        overrides["train"] = {"epochs": int(epochs)}
    return BASELINE.run(profile, seed, overrides=overrides, progress=progress, desc=desc)
