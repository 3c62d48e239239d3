"""The DeiT recipe (``survey train deit``): the CNN teacher first, then the distilled ViT student.

Touvron et al. 2021, arXiv:2012.12877. The student is the ViT of ``survey train vit`` with a
distillation token (:class:`survey_lib.models.deit.DistilledVisionTransformer`), trained with the
ViT's recipe unchanged (same data, epochs, batch, lr, label smoothing), so the two compare directly:
the plain ViT is DeiT's "no distillation" baseline (Table 3, DeiT-B against DeiT-B with the token).
The distillation term is ``survey_lib.objectives.distillation`` with DeiT's hyper-parameters.

* ``smoke``: the 32 px digits and the one-block digits ViT (the pipeline, in seconds).
* ``cpu``: MNIST-5k at 28 px, the ViT's :data:`~survey_lib.recipes.vit.MNIST_MODEL` (mean-pooled
  patch tokens: ``head`` reads their mean, ``head_dist`` the distillation token; see
  :mod:`survey_lib.models.deit`) and :data:`~survey_lib.recipes.vit.MNIST_TRAIN` (150 epochs, batch 32).
* ``full``: the full MNIST from a local folder, the ViT's ``full`` configuration.

Configuration keys besides ``data`` / ``model`` / ``train``:

* ``distillation``: ``"hard"`` (Eq. 3, DeiT's choice), ``"soft"`` (Eq. 2) or ``"none"``.
* ``kl_reduction``: the soft term's KL per sample (``"batchmean"``) or as DeiT's code (``"deit"``).
* ``alpha``, ``tau``: None for DeiT's values (:data:`~survey_lib.objectives.distillation.DISTILL_HPARAMS`).
* ``teacher_fraction``: the labels the teacher was trained on: 1.0 (default, the whole training
  split) or a fraction (the same stratified subset as the student's labels when both are equal).

The teacher is the ``cnn_teacher`` recipe run with exactly the configuration of the ResNet of the
equal-terms comparison (:mod:`survey_lib.recipes.compare`, ``resnet`` and ``resnet_f010``), with the
student's seed: :func:`teacher_overrides`. The same configuration is the same model-cache key, so once
the comparison has trained its ResNets no teacher is trained here. (The overrides are written out
here rather than imported from ``compare``: this module's code is part of every DeiT run's cache key,
and an edit to the comparison's module must not retrain the students; ``tests/test_deit.py`` checks
that both give the same configuration for every profile and fraction.)

**Few labels and a transfer set** (``data.label_fraction`` f < 1): without ``data.transfer_set``
the student trains on the labelled subset only (like the ViT on that fraction); with it, on *every*
training image, the labels hidden (``UNLABELLED``) outside the same stratified subset that
``classification_dataset(..., label_fraction=f)`` keeps (:func:`transfer_set`). The supervised term
is then the label-smoothed cross-entropy over the labelled images of each batch
(:class:`~survey_lib.objectives.distillation.MaskedCrossEntropy`), the distillation term uses every
image, and the training accuracy counts labelled images only. ``data.epoch_size`` sets the images
drawn per epoch: None (one pass over the training set) or ``"labelled"`` (as many as there are
labelled images: the steps per epoch of the labels-only run on that fraction, so the same number of
epochs is the same number of optimiser steps, :func:`survey_lib.data.splits.fixed_steps_loader`).

With a checkpoint, the teacher is checkpointed to ``<checkpoint>.teacher``.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from ..cost import count_parameters
from ..data import PartiallyLabelled, classification_dataset, fixed_steps_loader
from ..evaluate import accuracy, agreement_eval_fn, teacher_agreement
from ..models.deit import DistilledVisionTransformer
from ..objectives.distillation import DISTILL_HPARAMS, DistillationLoss, MaskedCrossEntropy, deit_step
from .base import Recipe, RecipeData, RunContext, profile_config, register
from .common import DIGITS_DATA, fraction_tag
from .teacher import MNIST_CONFIG as TEACHER_MNIST
from .teacher import RECIPE as TEACHER
from .vit import CONFIGS as VIT_CONFIGS
from .vit import VIT_MODELS

__all__ = ["DEIT_MODELS", "CONFIGS", "RECIPE", "deit_for_profile", "teacher_overrides", "labelled_subset",
           "transfer_set", "deit_data"]

#: The digits ViTs of :mod:`survey_lib.recipes.vit`, so a distilled student and a plain ViT differ
#: only by the distillation token, its position-embedding row and ``head_dist`` (D + D + D*K + K parameters).
DEIT_MODELS: Dict[str, dict] = {k: dict(v) for k, v in VIT_MODELS.items()}

#: What this recipe adds to the ViT's ``data`` section (defaults: all the labels, no transfer set).
_DATA_KEYS = {"transfer_set": False, "epoch_size": None}
_DISTILL_KEYS = {"distillation": "hard", "kl_reduction": "batchmean", "alpha": None, "tau": None, "teacher_fraction": 1.0}

#: By profile: the ViT recipe's configuration (data, model, train) plus the distillation keys.
CONFIGS: Dict[str, dict] = {
    p: {"data": {**VIT_CONFIGS[p]["data"], **_DATA_KEYS}, "model": dict(VIT_CONFIGS[p]["model"]),
        "train": dict(VIT_CONFIGS[p]["train"]), **_DISTILL_KEYS}
    for p in ("smoke", "cpu", "full")
}


def deit_for_profile(profile: str, **overrides) -> DistilledVisionTransformer:
    """The distilled *digits* ViT of ``profile`` (:data:`DEIT_MODELS`, 32 px), with keyword overrides.
    (The recipe's ``cpu`` student is ``RECIPE.build(RECIPE.config("cpu"), None)``.)

    Raises:
        ValueError: unknown profile.
    """
    return DistilledVisionTransformer(**{**profile_config(DEIT_MODELS, profile, "DeiT"), **overrides})


def teacher_overrides(profile: str, teacher_fraction: float = 1.0) -> Optional[dict]:
    """The overrides of the ``cnn_teacher`` recipe that train DeiT's teacher under ``profile`` on
    ``teacher_fraction`` of the training labels: those of the comparison's ResNet
    (``compare.compared_overrides("resnet", profile, teacher_fraction)``), so the two are one run.

    ``smoke``: the teacher's own smoke configuration (the digits); ``cpu``: :data:`survey_lib.recipes.teacher.MNIST_CONFIG`
    (MNIST-5k, the ViT's training recipe); ``full``: the same on the full MNIST. A fraction f < 1 keeps
    f of the labels for ``ceil(E / sqrt(f))`` epochs, evaluating validation every ``ceil(E_f / E)``.

    Returns: the overrides, or None for the recipe's configuration unchanged.

    Raises:
        ValueError: an unknown profile or a fraction outside (0, 1].
    """
    fraction_tag(teacher_fraction)
    if profile not in CONFIGS:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(CONFIGS)}")
    out = {} if profile == "smoke" else {key: dict(section) for key, section in TEACHER_MNIST.items()}
    if profile == "full":
        out["data"]["dataset"] = "mnist"
    if teacher_fraction != 1.0:
        epochs = TEACHER.config(profile, out or None)["train"]["epochs"]
        out.setdefault("data", {})["label_fraction"] = float(teacher_fraction)
        out.setdefault("train", {})["epochs"] = int(math.ceil(epochs / math.sqrt(teacher_fraction) - 1e-9))
        out["train"]["eval_every"] = math.ceil(out["train"]["epochs"] / epochs)
    return out or None


def _data_options(cfg) -> dict:
    return {**DIGITS_DATA, **_DATA_KEYS, **cfg.get("data", {})}


def labelled_subset(full: Dataset, subset: Dataset) -> np.ndarray:
    """Indices into ``full`` of the images of ``subset``, a stratified subset that keeps the order
    of ``full`` (what ``classification_dataset(..., label_fraction=f)`` returns).

    Matched by pixels and label, in order (a subsequence match), so the result is exactly the subset
    the dataset module chose, whatever its selection rule.

    Shapes: returns (len(subset),) int64, increasing.

    Raises:
        ValueError: ``subset`` is not an ordered subset of ``full`` (another split or image size).
    """
    big, small = full.images.flatten(1), subset.images.flatten(1)  # (n, P), (m, P)
    big_y, small_y = torch.as_tensor(full.targets), torch.as_tensor(subset.targets)
    out, j = [], 0
    for i in range(len(big_y)):
        if j < len(small_y) and int(big_y[i]) == int(small_y[j]) and torch.equal(big[i], small[j]):
            out.append(i)
            j += 1
    if j != len(small_y):
        raise ValueError(f"only {j} of the {len(small_y)} subset images were found, in order, in the full split: "
                         f"build both with the same dataset, split, img_size and in_chans")
    return np.asarray(out, dtype=np.int64)


def transfer_set(dataset: str, label_fraction: float, img_size: int, in_chans: int = 1, augment: bool = True,
                 max_shift: Optional[int] = None) -> PartiallyLabelled:
    """Every training image of ``dataset``, labelled only inside the stratified ``label_fraction``
    that ``classification_dataset(dataset, "train", label_fraction=...)`` keeps; elsewhere the label
    is ``UNLABELLED`` (-1). The labels-only student on that fraction and the distilled student on
    this transfer set therefore share their labelled images.

    Shapes: item = (image (in_chans, img_size, img_size), label or -1); ``.labelled`` the set of indices.

    Raises:
        ValueError: a fraction outside (0, 1]; an unknown dataset; a fraction below 1 for the full
            MNIST (the catalog supports label fractions of ``digits`` and ``mnist5k`` only).
    """
    fraction_tag(label_fraction)
    common = dict(img_size=img_size, in_chans=in_chans)
    full = classification_dataset(dataset, "train", augment=augment, max_shift=max_shift, **common)
    if label_fraction == 1.0:
        return PartiallyLabelled(full, range(len(full)))
    subset = classification_dataset(dataset, "train", label_fraction=label_fraction, **common)
    return PartiallyLabelled(full, labelled_subset(full, subset))


def deit_data(cfg, seed: int) -> RecipeData:
    """The student's data: the training split (its labelled fraction, or the transfer set with
    ``data.transfer_set``; ``data.epoch_size``: module docstring), validation and test.

    Raises:
        ValueError: ``epoch_size`` neither None, ``"labelled"`` nor a positive integer.
    """
    opts = _data_options(cfg)
    common = dict(img_size=opts["img_size"], in_chans=opts["in_chans"])
    f = float(opts.get("label_fraction", 1.0))
    if opts["transfer_set"]:
        train = transfer_set(opts["dataset"], f, augment=opts["augment"], max_shift=opts.get("max_shift"), **common)
        n_labelled = len(train.labelled)
    else:
        train = classification_dataset(opts["dataset"], "train", augment=opts["augment"], max_shift=opts.get("max_shift"),
                                       label_fraction=f, **common)
        n_labelled = len(train)
    size = opts["epoch_size"]
    if size is not None:
        if size == "labelled":
            size = n_labelled
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"data.epoch_size must be None, 'labelled' or a positive integer, got {opts['epoch_size']!r}")
        train = fixed_steps_loader(train, cfg["train"]["batch_size"], size, seed=seed)
    return RecipeData(train=train, val=classification_dataset(opts["dataset"], "val", **common),
                      test=classification_dataset(opts["dataset"], "test", **common),
                      extras={"labelled_images": n_labelled})


def _train_teacher(cfg, data, ctx: RunContext) -> None:
    teacher = TEACHER.run(ctx.profile, ctx.seed, checkpoint=f"{ctx.checkpoint}.teacher" if ctx.checkpoint else None,
                          resume=ctx.resume, progress=ctx.progress,
                          overrides=teacher_overrides(ctx.profile, cfg["teacher_fraction"]))
    data.extras.update(teacher=teacher.model, teacher_acc=teacher.metrics["test_acc"],
                       teacher_seconds=teacher.seconds, prepare_seconds=teacher.seconds,
                       teacher_cache=teacher.extras.get("cache", "off"))


def _criterion(cfg, data, model) -> DistillationLoss:
    kind = cfg["distillation"]
    hp = dict(DISTILL_HPARAMS[kind])
    hp.update({k: cfg[k] for k in ("alpha", "tau") if cfg.get(k) is not None})
    supervised = MaskedCrossEntropy(cfg["train"].get("label_smoothing", 0.0))
    return DistillationLoss(supervised, data.extras["teacher"], kind, num_classes=model.num_classes,
                            kl_reduction=cfg["kl_reduction"], **hp)


def _metrics(model, data, cfg, history):
    teacher = data.extras["teacher"]
    return {"test_acc": accuracy(model, data.test), "teacher_acc": data.extras["teacher_acc"],
            "agreement": teacher_agreement(model, teacher, data.test), "params": count_parameters(model)}


RECIPE = register(Recipe(
    name="deit",
    summary="DeiT: CNN teacher, then the ViT with a distillation token (hard distillation; cpu: MNIST-5k); test accuracy",
    configs=CONFIGS,
    data=deit_data,
    prepare=_train_teacher,
    build=lambda cfg, data: DistilledVisionTransformer(**cfg["model"]),
    step=lambda cfg, data, model: deit_step(_criterion(cfg, data, model)),
    eval_fn=lambda cfg, data: agreement_eval_fn(data.val, data.extras["teacher"]),
    evaluate=_metrics,
))
