"""The MAE recipes: ``survey train mae`` (masked-autoencoder pre-training, then probes of the
encoder) and ``survey train mae_finetune`` (the pre-trained encoder fine-tuned as a classifier on a
fraction of the labels, or the same ViT trained from scratch: ``init="scratch"``).

He et al. 2022, arXiv:2111.06377. AdamW with betas (0.9, 0.95) and weight decay 0.05 as in MAE's
pre-training (Table 8), with a higher learning rate for the tiny model. The final metrics are a
linear probe (``test_acc``; logistic regression) and the weighted k-NN (k = 20) on the frozen
encoder's mean-pooled features of the full, unmasked images.

``mae``'s ``data`` section names the images it pre-trains on (default: the 32 px digits with
random shifts; :data:`MNIST_PRETRAIN` switches it to MNIST-5k's training split at 28 px, labels
unused).

``mae_finetune`` follows the paper's main protocol (Sec. 4 and Appendix A.2: end-to-end fine-tuning
of the whole encoder with a new linear head on the mean-pooled tokens; ``global_pool``: the
pre-trained final norm is dropped and ``fc_norm`` starts fresh, as MAE's fine-tuning code does). Its
``pretrain`` section is the overrides of the ``mae`` recipe it starts from (trained, or read from the
model cache, for the same profile and seed); the classifier is the MNIST-5k ViT of
:mod:`survey_lib.recipes.vit`, the same for both inits, trained on ``data.label_fraction`` of the
training split with the same budget.

Deviations from the paper: 32 px digits or 28 px MNIST-5k with random shifts instead of ImageNet
with random resized crops; 40 (digits) or 100 (MNIST-5k) pre-training epochs instead of 800-1600,
batch 64 instead of 4096, a fixed learning rate instead of the paper's ``base_lr * batch / 256``
rule; fine-tuning without layer-wise learning-rate decay, mixup or cutmix (label smoothing 0.1 and
drop path 0.1 as the paper).

The ``cpu`` budgets of ``mae_finetune`` (100 pre-training epochs, 200 fine-tuning epochs at batch 32
for both inits; 20 with all the labels, :data:`FINETUNE_EPOCHS`) were set once and not tuned; on the validation split (3 seeds) they gave MAE
95.5% vs scratch 91.5% at 10% of the labels, 52.9% vs 33.6% at 1%. Per run on one thread: about
220-370 s of pre-training (once per seed), 60-90 s of fine-tuning at 10%, 20-30 s at 1%.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

from torch import nn

from ..data import DigitsDataset, classification_dataset
from ..evaluate import extract_features, knn_classify, linear_probe
from ..models.mae import MaskedAutoencoderViT
from ..models.vit import VisionTransformer
from ..objectives.mae import mae_step
from ..train import TrainConfig
from .base import Recipe, RecipeData, RunContext, SeedsResult, profile_config, register, run_seeds
from .common import classification_data, classifier_metrics, fraction_tag
from .vit import CONFIGS as VIT_CONFIGS
from .vit import MNIST_MODEL, VIT_MODELS

__all__ = ["MAE_MODELS", "MAE_TRAIN", "MAE_DATA", "MNIST_PRETRAIN", "CONFIGS", "RECIPE", "mae_for_profile",
           "mae_train_config", "FINETUNE_TRAIN", "FINETUNE_CONFIGS", "FINETUNE_RECIPE", "load_mae_encoder",
           "FINETUNE_ROWS", "FINETUNE_EPOCHS", "fraction_tag", "finetune_study", "mask_ratio_study"]

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

#: The images MAE pre-trains on, by profile: the 32 px digits with random shifts (the ``mae`` recipe's
#: default, that of notebook 06 today). Other datasets of the catalog are served at ``img_size``.
MAE_DATA: Dict[str, dict] = {p: {"dataset": "digits", "img_size": 32, "in_chans": 1, "augment": True, "max_shift": None}
                             for p in MAE_MODELS}

CONFIGS: Dict[str, dict] = {p: {"data": MAE_DATA[p], "model": MAE_MODELS[p], "train": MAE_TRAIN[p]} for p in MAE_MODELS}

#: Overrides of the ``mae`` recipe that pre-train on MNIST-5k at 28 px (labels unused) with the
#: encoder of the ``cpu`` MNIST-5k ViT (patch 7: 16 tokens, 4 visible at 75% masking; 64 wide,
#: 4 blocks), a 2-block decoder, normalised-pixel targets and 100 epochs.
MNIST_PRETRAIN: Dict[str, Any] = {
    "data": {"dataset": "mnist5k", "img_size": 28, "in_chans": 1, "augment": True, "max_shift": 2},
    "model": {**{k: v for k, v in MNIST_MODEL.items() if k not in ("num_classes", "global_pool", "drop_path_rate")},
              "decoder_embed_dim": 64, "decoder_depth": 2, "decoder_num_heads": 4, "mask_ratio": 0.75,
              "norm_pix_loss": True},
    "train": {"epochs": 100},
}


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
    d = cfg["data"]
    if d["dataset"] == "digits" and d["img_size"] == 32 and d.get("max_shift") is None:  # notebook 06's images
        return RecipeData(train=DigitsDataset(split="train", augment=d["augment"]), test=DigitsDataset(split="test"),
                          extras={"probe_train": DigitsDataset(split="train"), "val": DigitsDataset(split="val")})
    common = dict(img_size=d["img_size"], in_chans=d["in_chans"])
    return RecipeData(train=classification_dataset(d["dataset"], "train", augment=d["augment"], max_shift=d.get("max_shift"), **common),
                      test=classification_dataset(d["dataset"], "test", **common),
                      extras={"probe_train": classification_dataset(d["dataset"], "train", **common),
                              "val": classification_dataset(d["dataset"], "val", **common)})


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


# ---------------------------------------------------------------------------------------------
# mae_finetune: the pre-trained encoder as a classifier, against the same ViT from scratch
# ---------------------------------------------------------------------------------------------
#: Fine-tuning budgets by profile (the same for ``init="mae"`` and ``init="scratch"``).
FINETUNE_TRAIN: Dict[str, dict] = {
    "smoke": dict(epochs=2, batch_size=64, lr=1e-3, warmup_epochs=0.5, weight_decay=0.05, label_smoothing=0.1),
    "cpu": dict(epochs=200, batch_size=32, lr=1e-3, warmup_epochs=5, weight_decay=0.05, label_smoothing=0.1),
    "full": dict(epochs=100, batch_size=128, lr=1e-3, warmup_epochs=5, weight_decay=0.05, label_smoothing=0.1),
}

#: ``init``: ``"mae"`` (the encoder of the ``pretrain`` run) or ``"scratch"``; ``data.label_fraction``:
#: the stratified fraction of the training split whose labels the classifier sees. ``pretrain`` names
#: the mask ratio and the loss target explicitly, so a study can override them (:func:`mask_ratio_study`).
FINETUNE_CONFIGS: Dict[str, dict] = {
    "smoke": {"pretrain": {"model": {"mask_ratio": 0.75, "norm_pix_loss": True}}, "init": "mae", "data": {**VIT_CONFIGS["smoke"]["data"], "label_fraction": 0.1},
              "model": {**VIT_MODELS["smoke"], "global_pool": "avg"}, "train": FINETUNE_TRAIN["smoke"]},
    "cpu": {"pretrain": MNIST_PRETRAIN, "init": "mae", "data": {**VIT_CONFIGS["cpu"]["data"], "label_fraction": 0.1},
            "model": dict(MNIST_MODEL), "train": FINETUNE_TRAIN["cpu"]},
    "full": {"pretrain": MNIST_PRETRAIN, "init": "mae", "data": {**VIT_CONFIGS["full"]["data"], "label_fraction": 0.1},
             "model": dict(VIT_CONFIGS["full"]["model"]), "train": FINETUNE_TRAIN["full"]},
}


def load_mae_encoder(classifier: VisionTransformer, mae: MaskedAutoencoderViT) -> Dict[str, list]:
    """Copy a pre-trained MAE encoder into a ViT classifier of the same size, for fine-tuning.

    Everything but the head is copied; with a mean-pooled classifier (``global_pool="avg"``) the
    encoder's final ``norm`` is dropped and the classifier's ``fc_norm`` keeps its fresh
    initialisation, as MAE's fine-tuning code does with ``global_pool``.

    Returns: ``{"missing": [...], "dropped": [...]}`` (keys left at their initialisation, keys not copied).

    Raises:
        ValueError: the two do not match (another architecture): the message lists the keys.
    """
    source = {k: v for k, v in mae.encoder.state_dict().items()}
    target = classifier.state_dict()
    fresh = {k for k in target if k.startswith(("head.", "fc_norm."))}
    dropped = sorted(k for k in source if k.startswith("norm.") and isinstance(classifier.norm, nn.Identity))
    wanted = {k: v for k, v in source.items() if k not in dropped}
    bad = sorted(set(wanted) ^ (set(target) - fresh))
    shapes = sorted(k for k in wanted if k in target and wanted[k].shape != target[k].shape)
    if bad or shapes:
        raise ValueError(f"the MAE encoder does not fit this classifier: keys only on one side {bad}, "
                         f"shapes that differ {shapes}; build both from the same embed_dim, depth, patch_size, img_size")
    classifier.load_state_dict(wanted, strict=False)
    return {"missing": sorted(fresh), "dropped": dropped}


def _pretrain(cfg, data: RecipeData, ctx: RunContext) -> None:
    if cfg["init"] not in ("mae", "scratch"):
        raise ValueError(f"init must be 'mae' (fine-tune the pre-trained encoder) or 'scratch', got {cfg['init']!r}")
    if cfg["init"] == "scratch":
        return
    run = RECIPE.run(ctx.profile, seed=ctx.seed, overrides=cfg["pretrain"] or None, progress=ctx.progress,
                     desc=f"MAE pre-training [{ctx.profile}, seed {ctx.seed}]")
    data.extras.update(mae_model=run.model, pretrain_seconds=run.seconds, pretrain_cache=run.extras.get("cache"),
                       pretrain_knn_acc=run.metrics["knn_acc"], pretrain_linear_acc=run.metrics["test_acc"])


def _build_classifier(cfg, data: RecipeData) -> VisionTransformer:
    model = VisionTransformer(**cfg["model"])
    if cfg["init"] == "mae":
        load_mae_encoder(model, data.extras["mae_model"])
    return model


def _finetune_metrics(model, data, cfg, history) -> Dict[str, float]:
    out = dict(classifier_metrics(model, data, cfg, history))
    out["train_images"] = float(len(data.train))
    if cfg["init"] == "mae":
        out.update(pretrain_seconds=float(data.extras["pretrain_seconds"]))
    return out


FINETUNE_RECIPE = register(Recipe(
    name="mae_finetune",
    summary="MAE's encoder fine-tuned on a fraction of the labels (or the same ViT from scratch: init=scratch); test accuracy",
    configs=FINETUNE_CONFIGS,
    data=classification_data,
    prepare=_pretrain,
    build=_build_classifier,
    evaluate=_finetune_metrics,
))


#: ``summary.csv`` method names of the two inits (``<name>_<fraction_tag>``, e.g. ``mae_finetune_f010``).
FINETUNE_ROWS: Dict[str, str] = {"mae": "mae_finetune", "scratch": "scratch"}

#: Fine-tuning epochs by label fraction where they differ from the profile's ``train.epochs`` (both
#: inits alike). Under ``cpu`` all the labels get 20 epochs: 2,200 steps of 32, the steps the 10% runs
#: get from 200 epochs (200 epochs of 3,500 images would take ten times as long).
FINETUNE_EPOCHS: Dict[str, Dict[float, int]] = {"smoke": {}, "cpu": {1.0: 20}, "full": {}}


def finetune_study(profile: str = "cpu", seeds: Sequence[int] = (0, 1, 2), fractions: Sequence[float] = (0.01, 0.1),
                   overrides: Optional[dict] = None, progress: Optional[bool] = None,
                   inits: Sequence[str] = tuple(FINETUNE_ROWS)) -> Dict[Tuple[str, float], SeedsResult]:
    """MAE fine-tuning against the same ViT from scratch, at each label fraction, for every seed
    (each pre-training run once per seed, from the model cache after the first use). The fine-tuning
    epochs of a fraction are :data:`FINETUNE_EPOCHS` where it names one, else the profile's.

    Returns: ``{(init, fraction): SeedsResult}`` with ``init`` in ``inits`` (default both of
    :data:`FINETUNE_ROWS`); each run's metrics hold ``test_acc`` and its history the per-epoch ``val_acc``.

    Raises:
        ValueError: no seeds, a fraction outside (0, 1], or an unknown init.
    """
    for f in fractions:
        fraction_tag(f)
    bad = [i for i in inits if i not in FINETUNE_ROWS]
    if bad:
        raise ValueError(f"unknown init(s) {bad}; choose from {sorted(FINETUNE_ROWS)}")
    epochs = FINETUNE_EPOCHS.get(profile, {})
    out: Dict[Tuple[str, float], SeedsResult] = {}
    for f in fractions:
        for init in inits:
            base = dict(overrides or {})
            ov = {**base, "init": init, "data": {**base.get("data", {}), "label_fraction": float(f)}}
            if float(f) in epochs:
                ov["train"] = {**base.get("train", {}), "epochs": epochs[float(f)]}
            out[(init, float(f))] = run_seeds(FINETUNE_RECIPE, profile, seeds, overrides=ov, progress=progress,
                                              desc=f"{FINETUNE_ROWS[init]}_{fraction_tag(f)} [{profile}]")
    return out


def mask_ratio_study(profile: str = "cpu", seeds: Sequence[int] = (0, 1, 2), ratios: Sequence[float] = (0.25, 0.5, 0.75, 0.9),
                     fraction: float = 0.1, progress: Optional[bool] = None) -> Dict[float, Dict[str, SeedsResult]]:
    """MAE's mask-ratio sweep (He et al. 2022, arXiv:2111.06377, Fig. 5): for each ratio and seed, pre-train the MAE of the
    fine-tuning recipe's ``pretrain`` section at that ratio (its metrics: the linear probe ``test_acc``
    and ``knn_acc`` of the frozen encoder), and fine-tune it on ``fraction`` of the labels.

    Returns: ``{ratio: {"pretrain": SeedsResult, "finetune": SeedsResult}}``; the scratch baseline does
    not depend on the ratio (:func:`finetune_study` with ``inits=("scratch",)``).

    Raises:
        ValueError: no seeds, a ratio outside (0, 1), or a fraction outside (0, 1].
    """
    fraction_tag(fraction)
    bad = [r for r in ratios if not 0.0 < float(r) < 1.0]
    if bad:
        raise ValueError(f"mask ratios must be in (0, 1), got {bad}")
    pretrain = FINETUNE_RECIPE.config(profile)["pretrain"]
    out: Dict[float, Dict[str, SeedsResult]] = {}
    for r in ratios:
        ov = {**pretrain, "model": {**pretrain.get("model", {}), "mask_ratio": float(r)}}
        pre = run_seeds(RECIPE, profile, seeds, overrides=ov, progress=progress, desc=f"MAE mask {r:.0%} [{profile}]")
        ft = finetune_study(profile, seeds, (fraction,), overrides={"pretrain": ov}, progress=progress, inits=("mae",))
        out[float(r)] = {"pretrain": pre, "finetune": ft[("mae", float(fraction))]}
    return out
