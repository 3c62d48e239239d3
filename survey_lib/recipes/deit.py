"""The DeiT recipe (``survey train deit``): the CNN teacher first, then the distilled ViT student.

Touvron et al. 2021, arXiv:2012.12877. The student is the ViT of ``survey train vit`` with a
distillation token (:class:`survey_lib.models.deit.DistilledVisionTransformer`), trained with the
ViT's recipe unchanged (same epochs, lr and label smoothing), so the two compare directly; the
distillation term is ``survey_lib.objectives.distillation`` with DeiT's hyper-parameters.
``distillation`` selects ``"hard"`` (Eq. 3, DeiT's choice), ``"soft"`` (Eq. 2) or ``"none"``.
With a checkpoint, the teacher is checkpointed to ``<checkpoint>.teacher``.
"""
from __future__ import annotations

from typing import Dict

from torch import nn

from ..evaluate import accuracy, agreement_eval_fn, teacher_agreement
from ..models.deit import DistilledVisionTransformer
from ..objectives.distillation import DISTILL_HPARAMS, DistillationLoss, deit_step
from .base import Recipe, RunContext, profile_config, register
from .common import classification_data
from .teacher import RECIPE as TEACHER
from .vit import VIT_MODELS, VIT_TRAIN

__all__ = ["DEIT_MODELS", "CONFIGS", "RECIPE", "deit_for_profile"]

#: The digits ViTs of :mod:`survey_lib.recipes.vit`, so a distilled student and a plain ViT differ
#: only by the distillation token, its position-embedding row and ``head_dist`` (D + D + D*K + K parameters).
DEIT_MODELS: Dict[str, dict] = {k: dict(v) for k, v in VIT_MODELS.items()}

CONFIGS: Dict[str, dict] = {
    p: {"model": DEIT_MODELS[p], "train": VIT_TRAIN[p], "distillation": "hard", "label_smoothing": 0.1}
    for p in DEIT_MODELS
}


def deit_for_profile(profile: str, **overrides) -> DistilledVisionTransformer:
    """The distilled digits ViT of ``profile``, with keyword overrides.

    Raises:
        ValueError: unknown profile.
    """
    return DistilledVisionTransformer(**{**profile_config(DEIT_MODELS, profile, "DeiT"), **overrides})


def _train_teacher(cfg, data, ctx: RunContext) -> None:
    teacher = TEACHER.run(ctx.profile, ctx.seed, checkpoint=f"{ctx.checkpoint}.teacher" if ctx.checkpoint else None,
                          resume=ctx.resume, progress=ctx.progress)
    data.extras.update(teacher=teacher.model, teacher_acc=teacher.metrics["test_acc"],
                       teacher_seconds=teacher.seconds, prepare_seconds=teacher.seconds)


def _step(cfg, data, model):
    kind = cfg["distillation"]
    criterion = DistillationLoss(nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"]), data.extras["teacher"],
                                 kind, num_classes=model.num_classes, **DISTILL_HPARAMS[kind])
    return deit_step(criterion)


def _metrics(model, data, cfg, history):
    teacher = data.extras["teacher"]
    return {"test_acc": accuracy(model, data.test), "teacher_acc": data.extras["teacher_acc"],
            "agreement": teacher_agreement(model, teacher, data.test)}


RECIPE = register(Recipe(
    name="deit",
    summary="DeiT: CNN teacher, then the ViT with a distillation token (hard distillation); test accuracy",
    configs=CONFIGS,
    data=classification_data,
    prepare=_train_teacher,
    build=lambda cfg, data: DistilledVisionTransformer(**cfg["model"]),
    step=_step,
    eval_fn=lambda cfg, data: agreement_eval_fn(data.val, data.extras["teacher"]),
    evaluate=_metrics,
))
