"""Fine-tuning the multi-task framework's encoder (``survey train multitask_finetune``): the student
ViT of a ``multitask`` run, given a new linear head and trained end to end on the same labelled
images with the supervised baseline's recipe, against the same ViT from scratch (``init="scratch"``:
the ``supervised_baseline`` run of the same fraction, seed and budget, up to the recipe's name).

Source: the ITMO thesis "Bringing Vision Transformers Closer to Individuals" (2022), which fine-tunes
the encoder its framework trained and reports that it converges faster than training from scratch.
The fine-tuning recipe is the baseline's (:data:`~survey_lib.recipes.multitask.BASELINE_CONFIGS`:
AdamW lr 2e-3, weight decay 0.05, warm-up + cosine, label smoothing 0.1, random shifts), with the same
steps, so the two inits differ only in the weights they start from.

Deviations from the thesis: the framework run is the project's ``multitask`` recipe (MNIST-5k at 28 px
under ``cpu``, a 4-block ViT; see that module); the fine-tuning recipe is the baseline's, not tuned for
fine-tuning (no lower learning rate or layer-wise decay), so any advantage of the pre-trained weights
has to survive a learning rate chosen for training from scratch.

``study.label_fraction`` (and ``study.k``) are shared by the framework run and the fine-tuning, so
both see the same stratified labelled images (:func:`survey_lib.data.labelled_indices`).
``pretrain``: None (the framework with the study's defaults) or a dict of the framework's keyword
switches (:func:`~survey_lib.recipes.multitask.multitask_overrides`, e.g. ``{"epochs": 30}``).
"""
from __future__ import annotations

from typing import Dict, Optional

from ..models.vit import VisionTransformer
from .base import Recipe, RecipeData, RecipeResult, RunContext, register
# The baseline's data and metrics are reused as they are, so the two inits see the same images and
# are scored the same way.
from .multitask import BASELINE_CONFIGS, RECIPE as MULTITASK, _baseline_data, _baseline_metrics, multitask_overrides

__all__ = ["INITS", "FINETUNE_CONFIGS", "FINETUNE_RECIPE", "load_framework_encoder", "train_multitask_finetune"]

#: ``"framework"``: start from the student of the ``multitask`` run; ``"scratch"``: PyTorch's initialisation.
INITS = ("framework", "scratch")

FINETUNE_CONFIGS: Dict[str, dict] = {p: {**c, "init": "framework", "pretrain": None} for p, c in BASELINE_CONFIGS.items()}


def load_framework_encoder(classifier: VisionTransformer, backbone: VisionTransformer) -> Dict[str, list]:
    """Copy the framework student's backbone (a head-less :class:`VisionTransformer`) into a
    classifier of the same size; the classifier's ``head`` keeps its fresh initialisation. The copy
    is in place: the classifier maps (B, C, H, W) -> (B, num_classes) as before, with the backbone's
    features. Source: the ITMO thesis's fine-tuning of its framework's encoder (module docstring).

    Returns: ``{"fresh": [...]}``, the classifier's keys left at their initialisation.

    Raises:
        ValueError: the two differ in anything but the head (another size): the message lists the keys.
    """
    source, target = backbone.state_dict(), classifier.state_dict()
    fresh = sorted(k for k in target if k.startswith("head.") and k not in source)
    bad = sorted(set(source) ^ (set(target) - set(fresh)))
    shapes = sorted(k for k in source if k in target and source[k].shape != target[k].shape)
    if bad or shapes:
        raise ValueError(f"the framework's backbone does not fit this classifier: keys only on one side {bad}, "
                         f"shapes that differ {shapes}; build both from the same multitask configuration")
    classifier.load_state_dict(source, strict=False)
    return {"fresh": fresh}


def _framework_overrides(cfg) -> dict:
    study = cfg["study"]
    return multitask_overrides(**{"label_fraction": study["label_fraction"], "k": study["k"], **(cfg["pretrain"] or {})})


def _pretrain(cfg, data: RecipeData, ctx: RunContext) -> None:
    if cfg["init"] not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {cfg['init']!r}")
    if cfg["init"] == "scratch":
        return
    run = MULTITASK.run(ctx.profile, seed=ctx.seed, overrides=_framework_overrides(cfg), progress=ctx.progress,
                        desc=f"framework {cfg['study']['label_fraction']:.0%} [{ctx.profile}, seed {ctx.seed}]")
    data.extras.update(framework=run.model, framework_seconds=run.seconds, framework_test_acc=run.metrics["test_acc"],
                       framework_cache=run.extras.get("cache"))


def _build(cfg, data: RecipeData) -> VisionTransformer:
    model = VisionTransformer(**cfg["vit"], num_classes=10)
    if cfg["init"] == "framework":
        load_framework_encoder(model, data.extras["framework"].student.backbone)
    return model


def _metrics(model, data, cfg, history) -> Dict[str, float]:
    out = dict(_baseline_metrics(model, data, cfg, history))
    if cfg["init"] == "framework":
        test_acc = data.extras["framework_test_acc"]
        out.update(framework_seconds=float(data.extras["framework_seconds"]),
                   framework_test_acc=float("nan") if test_acc is None else float(test_acc))
    return out


FINETUNE_RECIPE = register(Recipe(
    name="multitask_finetune",
    summary="the multitask framework's encoder fine-tuned with the baseline's recipe (or from scratch); test accuracy",
    configs=FINETUNE_CONFIGS,
    data=_baseline_data,
    prepare=_pretrain,
    build=_build,
    evaluate=_metrics,
))


def train_multitask_finetune(profile: str = "cpu", seed: int = 0, label_fraction: float = 0.1, init: str = "framework",
                             epochs: Optional[int] = None, k: int = 20, pretrain: Optional[dict] = None,
                             progress: Optional[bool] = None, desc: Optional[str] = None) -> RecipeResult:
    """``survey train multitask_finetune``: fine-tune (``init="framework"``) or train from scratch
    (``init="scratch"``) on ``label_fraction`` of the labels for ``epochs`` (None: the baseline's).

    ``pretrain``: the framework run's switches (:func:`~survey_lib.recipes.multitask.multitask_overrides`;
    None: the study's defaults at this fraction). The framework run comes from the model cache when
    notebook 10 or ``benchmarks/small_data_study.py`` trained it.

    Raises:
        ValueError: an unknown ``init``, a fraction outside (0, 1], or bad framework switches.
    """
    overrides: dict = {"init": init, "pretrain": pretrain, "study": {"label_fraction": label_fraction, "k": k}}
    if epochs is not None:
        overrides["train"] = {"epochs": int(epochs)}
    return FINETUNE_RECIPE.run(profile, seed, overrides=overrides, progress=progress, desc=desc)
