"""DeiT where distillation can help: the study of notebook 02 and ``benchmarks/deit_study.py``.

Touvron et al. 2021, arXiv:2012.12877 (DeiT): a convnet teacher helps a ViT on ImageNet (Table 3:
DeiT-B 81.8% -> 83.4% with hard distillation through the token). On MNIST-5k a ViT trained on all
3,500 labels already agrees with a ~99% teacher almost everywhere, so the teacher has little to add;
distillation can help where the teacher knows what the labels do not tell the student: with few
labels. The study (every run through the model cache, :func:`distillation_study`):

* **All the labels** (150 epochs, the ViT's recipe): ``deit_none`` (the plain ViT: the ``vit``
  recipe's runs, DeiT's "no distillation" baseline is the same network without the token),
  ``deit_soft`` (Eq. 2), ``deit_hard`` (Eq. 3), the teacher trained on all the labels (``cnn_teacher``).
* **10% of the labels** (350 images): ``deit_none_f010`` (the ViT on those 350 images: the equal-terms
  comparison's ``vit_f010`` runs, ``epochs_for_fraction(150, 0.1)`` = 475 epochs of 11 steps) against
  students trained with the same number of optimiser steps on the 3,500-image *transfer set* (the 350
  labels kept, the other labels hidden; an "epoch" draws 350 of the 3,500 images, so 475 epochs are
  the same 5,225 steps, the same warm-up and cosine, and validation is evaluated as often):
  ``deit_soft_f010``, ``deit_hard_f010`` (teacher: all the labels), ``deit_soft_deitkl_f010`` (soft with
  DeiT's KL normalisation), and the semi-supervised variants ``deit_hard_t010_f010``,
  ``deit_soft_t010_f010`` whose teacher saw only the same 350 labels (``cnn_teacher_f010``, the
  comparison's ``resnet_f010``): the CNN learns more from 350 labels than the ViT does, and its
  predictions on the 3,150 unlabelled images then teach the ViT (what isolates the inductive-bias
  transfer from "the teacher saw ten times more labels").
* **The long schedule at 10%**: equal steps give the transfer-set student about 48 passes over its
  3,500 images, a third of the all-labels run's 150; ``deit_none_long_f010`` and
  ``deit_hard_long_f010`` both take the all-labels run's 16,500 steps (``Variant.schedule="images"``),
  so that the teacher, not the budget, is what separates them.

The teachers and the labels-only runs are the equal-terms comparison's own runs
(:mod:`survey_lib.recipes.compare`: the same recipes, configurations and seeds, so the same cache
keys), shared with notebooks 01 and 11. Verdicts: :func:`distillation_verdicts`.

This module registers no recipe: it imports ``compare`` (whose code must not enter the DeiT runs'
cache keys, see :mod:`survey_lib.recipes.deit`) and runs the registered ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..evaluate import compare_seeds, verdict
from .base import Recipe, SeedsResult, run_seeds
from .compare import compared_overrides, compared_recipe
from .deit import RECIPE as DEIT

__all__ = ["STUDY_FRACTION", "Variant", "VARIANTS", "FULL_DATA", "FEW_LABELS", "variant_run", "distillation_study",
           "CLAIMS", "distillation_verdicts"]

#: The label fraction of the few-label study.
STUDY_FRACTION = 0.1


@dataclass(frozen=True)
class Variant:
    """One row of the study.

    Attributes:
        name: the ``summary.csv`` method.  label: how figures and tables name it.
        student: ``"vit"`` (labels only: the ``vit`` recipe's runs), ``"deit"`` (a distilled student)
            or ``"teacher"`` (the ``cnn_teacher`` recipe's runs, the comparison's ResNet).
        fraction: the fraction of the training labels.  distillation: ``"soft"`` / ``"hard"`` (students).
        kl_reduction: ``"batchmean"`` or ``"deit"`` (soft only).  teacher_fraction: the labels the
            teacher saw.
        schedule: ``"labels"`` (below 1: the labels-only run's optimiser steps, ``epochs_for_fraction``
            epochs of as many images as there are labels) or ``"images"`` (below 1: the all-labels run's
            steps, ``ceil(E / f)`` such epochs: 1,500 x 11 = 16,500 steps at 10%, the steps of 150
            epochs over the 3,500 images, so the transfer set is passed over as often as the full
            data is).
    """

    name: str
    label: str
    student: str
    fraction: float = 1.0
    distillation: str = "none"
    kl_reduction: str = "batchmean"
    teacher_fraction: float = 1.0
    schedule: str = "labels"


VARIANTS: Dict[str, Variant] = {v.name: v for v in (
    Variant("cnn_teacher", "CNN teacher (all labels)", "teacher"),
    Variant("deit_none", "ViT, labels only", "vit"),
    Variant("deit_soft", "DeiT soft", "deit", distillation="soft"),
    Variant("deit_hard", "DeiT hard", "deit", distillation="hard"),
    Variant("cnn_teacher_f010", "CNN teacher (10% labels)", "teacher", STUDY_FRACTION),
    Variant("deit_none_f010", "ViT, labels only", "vit", STUDY_FRACTION),
    Variant("deit_soft_f010", "DeiT soft", "deit", STUDY_FRACTION, "soft"),
    Variant("deit_soft_deitkl_f010", "DeiT soft, DeiT's KL", "deit", STUDY_FRACTION, "soft", "deit"),
    Variant("deit_hard_f010", "DeiT hard", "deit", STUDY_FRACTION, "hard"),
    Variant("deit_soft_t010_f010", "DeiT soft, 10% teacher", "deit", STUDY_FRACTION, "soft", teacher_fraction=STUDY_FRACTION),
    Variant("deit_hard_t010_f010", "DeiT hard, 10% teacher", "deit", STUDY_FRACTION, "hard", teacher_fraction=STUDY_FRACTION),
    Variant("deit_none_long_f010", "ViT, labels only, long", "vit", STUDY_FRACTION, schedule="images"),
    Variant("deit_hard_long_f010", "DeiT hard, long", "deit", STUDY_FRACTION, "hard", schedule="images"),
)}

#: The rows on all the labels and on the study's fraction, in the order figures show them.
FULL_DATA: Tuple[str, ...] = tuple(n for n, v in VARIANTS.items() if v.fraction == 1.0)
FEW_LABELS: Tuple[str, ...] = tuple(n for n, v in VARIANTS.items() if v.fraction != 1.0)


def _variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; the study has {list(VARIANTS)}")
    return VARIANTS[name]


def variant_run(name: str, profile: str = "cpu") -> Tuple[Recipe, Optional[dict]]:
    """The registered recipe and the overrides that train variant ``name`` under ``profile``.

    * teachers: ``compared_overrides("resnet", profile, fraction)`` (the comparison's ResNet runs);
    * labels only: ``compared_overrides("vit", profile, fraction)`` (the ``vit`` recipe's runs; on all
      the labels the same configuration as ``get_recipe("vit").config(profile)``);
    * distilled students: the ``deit`` recipe with the variant's distillation keys; below 1 the
      transfer set, an epoch of as many images as there are labels, and the labels-only run's
      ``train`` overrides (its epochs and ``eval_every``): the same optimiser steps and schedule.

    Raises:
        ValueError: an unknown variant or profile.
    """
    v = _variant(name)
    if v.student in ("teacher", "vit"):
        model = "resnet" if v.student == "teacher" else "vit"
        recipe, ov = compared_recipe(model), compared_overrides(model, profile, v.fraction)
        return recipe, _with_schedule(recipe, profile, ov, v)
    DEIT.config(profile)  # an unknown profile raises here
    ov: dict = {"distillation": v.distillation, "kl_reduction": v.kl_reduction, "teacher_fraction": v.teacher_fraction}
    if v.fraction != 1.0:
        labels_only = compared_overrides("vit", profile, v.fraction) or {}
        ov["data"] = {"label_fraction": v.fraction, "transfer_set": True, "epoch_size": "labelled"}
        ov["train"] = dict(labels_only.get("train", {}))
    return DEIT, _with_schedule(DEIT, profile, ov, v)


def _with_schedule(recipe: Recipe, profile: str, overrides: Optional[dict], v: Variant) -> Optional[dict]:
    """``overrides`` with the epochs of ``v.schedule == "images"`` below 1 (see :class:`Variant`):
    ``ceil(E / f)`` epochs of the labelled images' steps, the warm-up ``1 / f`` times as many of them
    (the all-labels run's warm-up steps), validation about every ``1 / f`` of them."""
    if v.schedule == "labels" or v.fraction == 1.0:
        return overrides
    if v.schedule != "images":
        raise ValueError(f"variant {v.name!r}: schedule must be 'labels' or 'images', got {v.schedule!r}")
    base = recipe.config(profile)["train"]
    out = dict(overrides or {})
    out["train"] = dict(out.get("train", {}), epochs=int(math.ceil(base["epochs"] / v.fraction - 1e-9)),
                        warmup_epochs=base["warmup_epochs"] / v.fraction, eval_every=int(math.ceil(1 / v.fraction - 1e-9)))
    return out


def distillation_study(profile: str = "cpu", seeds: Sequence[int] = (0, 1, 2), variants: Optional[Sequence[str]] = None,
                       progress: Optional[bool] = None) -> Dict[str, SeedsResult]:
    """Train (or read from the model cache) every variant for every seed.

    Args:
        variants: names of :data:`VARIANTS` (default all, in that order: teachers and labels-only runs
            before the students that need them).

    Returns: ``{name: SeedsResult}``; every run's metrics hold ``test_acc`` (the test split, read
    once, at the end of training) and its history the per-epoch ``val_acc`` (students also
    ``val_agree``, the agreement with their teacher on validation).

    Raises:
        ValueError: no seeds, an unknown variant or profile.
    """
    names = list(VARIANTS) if variants is None else [_variant(n).name for n in variants]
    if not list(seeds):
        raise ValueError("distillation_study needs at least one seed (three for any comparison under cpu)")
    out: Dict[str, SeedsResult] = {}
    for name in names:
        recipe, overrides = variant_run(name, profile)
        out[name] = run_seeds(recipe, profile, seeds, overrides=overrides, progress=progress, desc=f"{name} [{profile}]")
    return out


#: The claims the study decides: (A, B, what "A > B" means). A distilled student against the
#: labels-only ViT on the same labels, the objectives against each other, the two teachers.
CLAIMS: Tuple[Tuple[str, str, str], ...] = (
    ("deit_soft", "deit_none", "soft distillation beats labels only (all labels)"),
    ("deit_hard", "deit_none", "hard distillation beats labels only (all labels)"),
    ("deit_soft_f010", "deit_none_f010", "soft distillation beats labels only (10% labels)"),
    ("deit_hard_f010", "deit_none_f010", "hard distillation beats labels only (10% labels)"),
    ("deit_soft_deitkl_f010", "deit_none_f010", "soft distillation with DeiT's KL beats labels only (10% labels)"),
    ("deit_soft_t010_f010", "deit_none_f010", "soft distillation from the 10% teacher beats labels only (10% labels)"),
    ("deit_hard_t010_f010", "deit_none_f010", "hard distillation from the 10% teacher beats labels only (10% labels)"),
    ("deit_hard_long_f010", "deit_none_long_f010",
     "hard distillation beats labels only at the all-labels run's steps (10% labels)"),
    ("deit_hard_long_f010", "deit_none_f010", "hard distillation at the all-labels run's steps beats labels only at its own (10% labels)"),
    ("deit_none_long_f010", "deit_none_f010", "three times the steps help the labels-only ViT (10% labels)"),
    ("deit_hard_f010", "deit_soft_f010", "hard beats soft (10% labels)"),
    ("deit_soft_f010", "deit_soft_deitkl_f010", "the per-sample KL beats DeiT's KL (10% labels)"),
    ("deit_hard", "deit_soft", "hard beats soft (all labels)"),
    ("deit_hard_f010", "deit_hard_t010_f010", "the all-labels teacher teaches hard distillation better than the 10% teacher"),
    ("deit_soft_f010", "deit_soft_t010_f010", "the all-labels teacher teaches soft distillation better than the 10% teacher"),
    ("cnn_teacher_f010", "deit_none_f010", "the CNN learns more from 10% of the labels than the ViT"),
)


def distillation_verdicts(study: Dict[str, SeedsResult], metric: str = "test_acc", alpha: float = 0.05,
                          claims: Sequence[Tuple[str, str, str]] = CLAIMS) -> List[dict]:
    """Every claim of :data:`CLAIMS` whose two variants are in ``study``, decided over seeds.

    For each: ``compare_seeds`` (a paired t-test over seeds: seed s gives both runs the same
    initialisation of the shared weights and the same split; :func:`survey_lib.evaluate.compare_seeds`)
    and the stricter claim "A beats B by more than two pooled standard deviations"
    (``verdict(diff, p, margin=2 * pooled_std)``).

    Returns: one dict per claim: ``a``, ``b``, ``claim``, the ``compare_seeds`` fields (``mean_a``,
    ``std_a``, ``mean_b``, ``std_b``, ``n``, ``diff``, ``pooled_std``, ``p_value``, ``verdict``), and
    ``two_std`` (bool: diff > 2 pooled std) and ``verdict_two_std``.

    Raises:
        ValueError: runs of different seeds for a claim's two variants.
    """
    out = []
    for a, b, claim in claims:
        if a not in study or b not in study:
            continue
        if study[a].seeds != study[b].seeds:
            raise ValueError(f"{a} and {b} ran different seeds ({study[a].seeds} and {study[b].seeds}); a paired "
                             f"comparison needs the same seeds")
        c = compare_seeds(study[a].values(metric), study[b].values(metric), alpha=alpha)
        pooled = c["pooled_std"]
        margin = 2 * pooled if pooled is not None else math.inf
        out.append({"a": a, "b": b, "claim": claim, **c, "two_std": pooled is not None and c["diff"] > margin,
                    "verdict_two_std": verdict(c["diff"], c["p_value"], alpha, margin)})
    return out
