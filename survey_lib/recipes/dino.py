"""The DINO recipes (``survey train dino`` / ``dino_nat``): self-distillation on the digits, no labels.

Caron et al. 2021, arXiv:2104.14294; DinoNAT (the Russian conference paper) is the same objective
with a NAT backbone. The final metrics probe the *teacher's* feature: weighted k-NN (``test_acc``,
``knn_acc``) and a linear probe (``linear_acc``).

Deviations from the paper, for 32 px digits on a CPU (see ``survey_lib.objectives.dino``): a head of
K = 512 prototypes with BatchNorm, teacher momentum 0.96 -> 1, global 32 px and local 16 px crops,
no flips, and no photometric augmentation (:data:`DIGITS_PHOTOMETRIC`). The schedule is part of the
recipe: the lr and teacher-momentum schedules span the run, so a 30-epoch schedule is not the first
30 epochs of a 50-epoch one.
"""
from __future__ import annotations

from typing import Any, Dict

import torch
from torch.utils.data import DataLoader, Dataset

from ..data import DIGITS_MEAN, DIGITS_STD, BatchMultiCrop, DigitsDataset, MultiCropTransform
from ..evaluate import probe_accuracies, probe_eval_fn
from ..models.nat import NAT
from ..models.vit import VisionTransformer
from ..objectives.dino import build_dino, dino_step
from .base import Recipe, RecipeData, register
from .nat import NAT_MODELS

__all__ = ["DIGITS_PHOTOMETRIC", "DINO_CONFIGS", "CONFIGS", "RECIPE", "RECIPE_NAT", "digits_multicrop", "digits_loader"]

#: The digits recipe's photometric augmentation: none. Crops are the only augmentation. With DINO's
#: colour jitter (brightness / contrast on grey images), blur and solarisation on the 32 px
#: upsampled digits, a 30-epoch run of the cpu recipe collapsed its teacher to uniform (entropy 6.02
#: of log K = 6.24) where crops alone learnt (notebook 07 shows both).
DIGITS_PHOTOMETRIC: Dict[str, Any] = dict(color_jitter=0.0, blur_sigma=None, solarize_prob=0.0)

#: DINO on the 32 px digits, by profile: backbone, crops, head, loss and optimisation.
DINO_CONFIGS: Dict[str, dict] = {
    "smoke": dict(
        vit=dict(img_size=32, patch_size=8, in_chans=1, num_classes=0, embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0),
        crops=dict(global_size=32, local_size=16, n_local_crops=2, **DIGITS_PHOTOMETRIC),
        head=dict(out_dim=128, use_bn=True, hidden_dim=64, bottleneck_dim=32),
        loss=dict(warmup_teacher_temp=0.04, teacher_temp=0.04, warmup_teacher_temp_epochs=0),
        momentum_teacher=0.96,
        train=dict(epochs=1, batch_size=64, lr=3e-3, warmup_epochs=0.5, weight_decay=0.04, clip_grad=3.0),
        train_subset=256,
    ),
    # cpu: 1,437 images x 6 views per epoch (the teacher on 2 x 65 tokens, the student on 2 x 65 +
    # 4 x 17 tokens, forward and backward); notebook 07 reports the measured seconds.
    "cpu": dict(
        vit=dict(img_size=32, patch_size=4, in_chans=1, num_classes=0, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0),
        crops=dict(global_size=32, local_size=16, n_local_crops=4, **DIGITS_PHOTOMETRIC),
        head=dict(out_dim=512, use_bn=True, hidden_dim=256, bottleneck_dim=64),
        loss=dict(warmup_teacher_temp=0.04, teacher_temp=0.04, warmup_teacher_temp_epochs=0),
        momentum_teacher=0.96,
        train=dict(epochs=50, batch_size=64, lr=3e-3, warmup_epochs=3, weight_decay=0.04, clip_grad=3.0),
        train_subset=None,
    ),
    "full": dict(
        vit=dict(img_size=32, patch_size=4, in_chans=1, num_classes=0, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0),
        crops=dict(global_size=32, local_size=16, n_local_crops=6, **DIGITS_PHOTOMETRIC),
        head=dict(out_dim=4096, use_bn=True, hidden_dim=1024, bottleneck_dim=128),
        loss=dict(warmup_teacher_temp=0.04, teacher_temp=0.05, warmup_teacher_temp_epochs=10),
        momentum_teacher=0.99,
        train=dict(epochs=100, batch_size=64, lr=1e-3, warmup_epochs=10, weight_decay=0.04, clip_grad=3.0),
        train_subset=None,
    ),
}

#: The recipe's configurations: :data:`DINO_CONFIGS` plus the backbone, the NAT preset for
#: ``backbone="nat"`` and when to probe (``eval_every``: ``"end"`` or every N epochs).
CONFIGS: Dict[str, dict] = {p: {**c, "backbone": "vit", "nat": {**NAT_MODELS[p], "num_classes": 0}, "eval_every": "end"}
                            for p, c in DINO_CONFIGS.items()}


def digits_multicrop(crops: dict, batched: bool = False) -> MultiCropTransform:
    """The digits' multi-crop transform (per image, or :class:`~survey_lib.data.BatchMultiCrop`); inputs
    are :class:`~survey_lib.data.DigitsDataset` items (normalised), outputs normalised the same way."""
    cls = BatchMultiCrop if batched else MultiCropTransform
    return cls(mean=[DIGITS_MEAN], std=[DIGITS_STD], inputs_normalized=True, **crops)


def digits_loader(base: Dataset, crops: dict, batch_size: int, seed: int = 0) -> DataLoader:
    """Shuffled DataLoader of multi-crop batches ``[crops, labels]`` built with :class:`BatchMultiCrop`."""
    aug = digits_multicrop(crops, batched=True)
    return DataLoader(base, batch_size=batch_size, shuffle=True, collate_fn=aug.collate,
                      generator=torch.Generator().manual_seed(seed))


def _data(cfg, seed) -> RecipeData:
    size = cfg["vit"]["img_size"]
    base = DigitsDataset(split="train", img_size=size)
    if cfg.get("train_subset"):
        base = torch.utils.data.Subset(base, range(cfg["train_subset"]))
    return RecipeData(train=digits_loader(base, cfg["crops"], cfg["train"]["batch_size"], seed),
                      val=DigitsDataset(split="val", img_size=size), test=DigitsDataset(split="test", img_size=size),
                      extras={"probe_train": DigitsDataset(split="train", img_size=size)})


def _build(cfg, data):
    if cfg["backbone"] == "vit":
        net, width = VisionTransformer(**cfg["vit"]), cfg["vit"]["embed_dim"]
    elif cfg["backbone"] == "nat":
        net = NAT(**cfg["nat"])
        width = net.num_features
    else:
        raise ValueError(f"backbone must be 'vit' or 'nat', got {cfg['backbone']!r}")
    return build_dino(net, width, cfg["train"]["epochs"], n_local_crops=cfg["crops"]["n_local_crops"],
                      momentum_teacher=cfg["momentum_teacher"], **cfg["head"], **cfg["loss"])


def _metrics(model, data, cfg, history) -> Dict[str, float]:
    test = probe_accuracies(model.teacher_embed, data.extras["probe_train"], data.test)
    return {"test_acc": test["knn_acc"], **test}


def _recipe(name: str, backbone: str, summary: str) -> Recipe:
    return Recipe(
        name=name,
        summary=summary,
        configs={p: {**c, "backbone": backbone} for p, c in CONFIGS.items()},
        data=_data,
        build=_build,
        step=lambda cfg, data, model: dino_step,
        eval_fn=lambda cfg, data: probe_eval_fn(lambda m: m.teacher_embed, data.extras["probe_train"], data.val),
        evaluate=_metrics,
    )


RECIPE = register(_recipe("dino", "vit", "DINO self-distillation on the digits (ViT); k-NN / linear probe of the teacher"))
RECIPE_NAT = register(_recipe("dino_nat", "nat", "DinoNAT: DINO with a NAT backbone; k-NN / linear probe of the teacher"))
