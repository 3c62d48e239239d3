"""The CLIP recipes (``survey train clip``, ``survey train open_clip_clip``): image-caption pairs, zero-shot.

Radford et al. 2021, arXiv:2103.00020. Captions come from class names through the training
templates (``survey_lib.data.captions``); the zero-shot protocol uses the held-out templates (no
training caption is built from them), with prompt ensembling (Sec. 3.1.4), and image / text
retrieval recall@1/5 (a hit: the retrieved item shows or describes the same digit).

* ``smoke``: the 8 x 8 digits upsampled to 32 px, one-block towers (the pipeline, in seconds).
* ``cpu``: MNIST-5k at its own 28 px (3,500 / 500 / 1,000), :data:`MNIST_CLIP_MODEL`, :data:`MNIST_CLIP_TRAIN`.
* ``full``: the full MNIST from a local folder.

The protocol: the recipe's metrics (``val_acc``, ``val_i2t_R@1``, ...) and its per-epoch curve
(``val_acc``, zero-shot on the validation split) read the **validation** split, on which every
choice is made (the ablation of open_clip's choices, :func:`run_ablation`). The test split is read
once, at the end, by :func:`test_metrics` on the final models only.

``clip`` trains our :class:`~survey_lib.models.clip.CLIP`; ``open_clip_clip`` trains open_clip's own
``CLIP`` class (:func:`~survey_lib.models.clip.build_open_clip`, 3 input channels: the grey digit
repeated) through the same data, step (``clip_step``), schedule and evaluation. :data:`OPEN_CLIP_CHOICES`
are open_clip's choices as overrides of the ``clip`` configuration, one at a time; all the model
choices together give open_clip's model (``tests/test_clip.py`` checks that the configuration is
open_clip's).
"""
from __future__ import annotations

import copy
import functools
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
from torch import nn

from ..data import HELDOUT_TEMPLATES, CaptionedDigits, CaptionTokenizer, classification_dataset, fill_template
from ..evaluate import (clip_eval_fn, compare_seeds, encode_captions, encode_images, mean_std, retrieval_recall,
                        zero_shot_accuracy)
from ..models.clip import CLIP, MAX_LOGIT_SCALE, build_open_clip
from ..objectives.infonce import clip_step
from ..train import TrainConfig, param_groups
from .base import Recipe, RecipeData, merge_config, profile_config, register
from .vit import VIT_MODELS

__all__ = ["CLIP_MODELS", "OPEN_CLIP_MODELS", "CLIP_TRAIN", "CLIP_DATA", "MNIST_CLIP_MODEL", "MNIST_OPEN_CLIP_MODEL",
           "MNIST_CLIP_TRAIN", "ABLATION_TRAIN", "ablation_budget", "OURS_SWITCHES", "CONFIGS", "OPEN_CLIP_CONFIGS", "RECIPE", "OPEN_CLIP_RECIPE",
           "OPEN_CLIP_CHOICES", "MODEL_CHOICES", "TRAINING_CHOICES", "UNCHANGED_BY_CONSTRUCTION",
           "ORIGINAL_CONFIGS", "ADOPTED_CHOICES", "clip_for_profile", "open_clip_for_profile", "clip_train_config", "open_clip_param_groups",
           "clip_optimizer", "test_metrics", "ablation_baseline", "ablation_overrides", "run_ablation",
           "OURS", "ALL_MODEL", "OPEN_CLIP"]

#: The 32 px digits presets, by profile: the image towers are the digits ViT presets of
#: :mod:`survey_lib.recipes.vit` without their classifier, mean-pooled (also SimCLR's encoder).
CLIP_MODELS: Dict[str, dict] = {
    "smoke": dict(embed_dim=32, vision_cfg={**VIT_MODELS["smoke"], "global_pool": "avg"},
                  text_cfg=dict(context_length=16, width=32, depth=1, num_heads=2, mlp_ratio=2.0)),
    "cpu": dict(embed_dim=64, vision_cfg={**VIT_MODELS["cpu"], "global_pool": "avg"},
                text_cfg=dict(context_length=16, width=64, depth=2, num_heads=4, mlp_ratio=2.0)),
    "full": dict(embed_dim=128, vision_cfg={**VIT_MODELS["full"], "global_pool": "avg"},
                 text_cfg=dict(context_length=16, width=192, depth=4, num_heads=3, mlp_ratio=4.0)),
}

#: Every option of our CLIP where open_clip chooses differently, at our default, so that each can be
#: switched by a recipe override (``{"model": {"vision_cfg": {"pre_norm": True}}}``); the values that
#: switch them are :data:`OPEN_CLIP_CHOICES`.
OURS_SWITCHES: Dict[str, dict] = {
    "vision_cfg": dict(in_chans=1, global_pool="avg", pre_norm=False, patch_bias=True, norm_eps=1e-6,
                       cls_token_init="timm", pos_embed_init="timm", block_init="timm"),
    "text_cfg": dict(norm_eps=1e-6, mlp_bias_init="zeros", pool_type="eot"),
    "top": dict(max_logit_scale=MAX_LOGIT_SCALE),
}


def _with_switches(model: dict) -> dict:
    v = {**OURS_SWITCHES["vision_cfg"], **model["vision_cfg"]}
    v.pop("num_classes", None)
    return {**OURS_SWITCHES["top"], **model, "vision_cfg": v, "text_cfg": {**OURS_SWITCHES["text_cfg"], **model["text_cfg"]}}


#: The ``cpu`` CLIP for 28 px MNIST-5k: a 64-wide, 4-block image tower with patch 7 (4 x 4 tokens, as
#: the MNIST-5k ViT of :mod:`survey_lib.recipes.vit`, chosen on validation there; about 1.6x faster
#: per step than patch 4 here), a 64-wide, 2-block text tower, a 64-dimensional joint space.
MNIST_CLIP_MODEL: Dict[str, Any] = dict(
    embed_dim=64,
    vision_cfg=dict(img_size=28, patch_size=7, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0),
    text_cfg=dict(context_length=16, width=64, depth=2, num_heads=4, mlp_ratio=2.0))

#: open_clip ``CLIP`` configurations of the same sizes as the recipe's models (open_clip's vision tower
#: needs 3 channels). ``head_width`` is the width per attention head.
OPEN_CLIP_MODELS: Dict[str, dict] = {
    "smoke": dict(embed_dim=32,
                  vision_cfg=dict(image_size=32, patch_size=8, width=32, layers=1, head_width=16, mlp_ratio=2.0),
                  text_cfg=dict(context_length=16, width=32, heads=2, layers=1, mlp_ratio=2.0)),
    "cpu": dict(embed_dim=64,
                vision_cfg=dict(image_size=28, patch_size=7, width=64, layers=4, head_width=16, mlp_ratio=2.0),
                text_cfg=dict(context_length=16, width=64, heads=4, layers=2, mlp_ratio=2.0)),
    "full": dict(embed_dim=128,
                 vision_cfg=dict(image_size=28, patch_size=7, width=192, layers=12, head_width=64, mlp_ratio=4.0),
                 text_cfg=dict(context_length=16, width=192, heads=3, layers=4, mlp_ratio=4.0)),
}
MNIST_OPEN_CLIP_MODEL: Dict[str, Any] = OPEN_CLIP_MODELS["cpu"]

#: Training recipes of the digits CLIP by profile (:class:`survey_lib.train.TrainConfig` fields).
CLIP_TRAIN: Dict[str, dict] = {
    "smoke": dict(epochs=2, batch_size=128, lr=1e-3, warmup_epochs=0.5),
    "cpu": dict(epochs=30, batch_size=64, lr=1e-3, warmup_epochs=2, weight_decay=0.1),
    "full": dict(epochs=100, batch_size=128, lr=5e-4, warmup_epochs=5, weight_decay=0.1),
}
#: The ``cpu`` training recipe on MNIST-5k. ``betas`` and ``clip_grad`` are written out because
#: open_clip_train chooses them differently (:data:`OPEN_CLIP_CHOICES`). 60 epochs, chosen on the
#: validation split after the ablation (which runs at :data:`ABLATION_TRAIN`'s 30): the adopted CLIP
#: and open_clip's both gained from the longer schedule (notebook 05 prints both budgets).
MNIST_CLIP_TRAIN: Dict[str, Any] = dict(epochs=60, batch_size=64, lr=1e-3, warmup_epochs=2, weight_decay=0.1,
                                        betas=(0.9, 0.999), clip_grad=1.0)
#: The ablation's training budget by profile, as overrides of the recipes' ``train`` section (both
#: ``clip`` and ``open_clip_clip`` rows): under ``cpu`` 30 epochs, 39 runs of about two minutes each
#: on one thread; the final models train the recipe's own budget.
ABLATION_TRAIN: Dict[str, Dict[str, Any]] = {"smoke": {}, "cpu": {"epochs": 30}, "full": {}}

#: The ``data`` section: which captioned dataset, at what size, how many channels, random shifts.
CLIP_DATA: Dict[str, dict] = {
    "smoke": dict(dataset="digits", img_size=32, in_chans=1, augment=True, max_shift=None),
    "cpu": dict(dataset="mnist5k", img_size=28, in_chans=1, augment=True, max_shift=2),
    "full": dict(dataset="mnist", img_size=28, in_chans=1, augment=True, max_shift=2),
}
#: The ``optim`` section: AdamW's parameter groups (``"fit"``: :func:`survey_lib.train.param_groups`,
#: no decay on position embeddings; ``"open_clip"``: :func:`open_clip_param_groups`) and its ``eps``.
CLIP_OPTIM: Dict[str, Any] = dict(param_groups="fit", eps=1e-8)

_OURS_MODEL = {"smoke": CLIP_MODELS["smoke"], "cpu": MNIST_CLIP_MODEL,
               "full": {**MNIST_CLIP_MODEL, "embed_dim": 128,
                        "vision_cfg": {**MNIST_CLIP_MODEL["vision_cfg"], "embed_dim": 192, "depth": 12, "num_heads": 3,
                                       "mlp_ratio": 4.0},
                        "text_cfg": CLIP_MODELS["full"]["text_cfg"]}}
_TRAIN = {"smoke": CLIP_TRAIN["smoke"], "cpu": MNIST_CLIP_TRAIN, "full": CLIP_TRAIN["full"]}

#: open_clip's choices as overrides of the ``clip`` recipe, one entry per choice; choices that only
#: make sense together are one entry (the class embedding's and the position embedding's init: both
#: set the scale of the tokens entering the first block; AdamW's betas, eps and gradient clipping: the
#: optimizer settings of open_clip_train).
OPEN_CLIP_CHOICES: Dict[str, dict] = {
    "3 input channels": {"data": {"in_chans": 3}, "model": {"vision_cfg": {"in_chans": 3}}},
    "CLS-token pooling": {"model": {"vision_cfg": {"global_pool": "token"}}},
    "ln_pre": {"model": {"vision_cfg": {"pre_norm": True}}},
    "no patch bias": {"model": {"vision_cfg": {"patch_bias": False}}},
    "LayerNorm eps 1e-5": {"model": {"vision_cfg": {"norm_eps": 1e-5}, "text_cfg": {"norm_eps": 1e-5}}},
    "pos/cls embedding init N(0, 1/D)": {"model": {"vision_cfg": {"cls_token_init": "open_clip",
                                                                    "pos_embed_init": "open_clip"}}},
    "image block init (PyTorch's)": {"model": {"vision_cfg": {"block_init": "open_clip"}}},
    "text MLP bias init": {"model": {"text_cfg": {"mlp_bias_init": "open_clip"}}},
    "weight decay on position embeddings": {"optim": {"param_groups": "open_clip"}},
    "AdamW betas (0.9, 0.98), eps 1e-6, no clipping": {"optim": {"eps": 1e-6},
                                                       "train": {"betas": (0.9, 0.98), "clip_grad": None}},
}
#: The entries of :data:`OPEN_CLIP_CHOICES` that are choices of open_clip's *model* (together with
#: :data:`UNCHANGED_BY_CONSTRUCTION`, they make our CLIP open_clip's ``CLIP``, trained by our loop).
MODEL_CHOICES: List[str] = ["3 input channels", "CLS-token pooling", "ln_pre", "no patch bias", "LayerNorm eps 1e-5",
                            "pos/cls embedding init N(0, 1/D)", "image block init (PyTorch's)", "text MLP bias init"]
#: The entries that are choices of open_clip's training script (``open_clip_train``), not of its model.
TRAINING_CHOICES: List[str] = ["weight decay on position embeddings", "AdamW betas (0.9, 0.98), eps 1e-6, no clipping"]
#: open_clip's choices that give the same training run as ours by construction, so they are switched
#: on in "all" (to make the model open_clip's) but need no run of their own: the text tower pools the
#: largest token id (the EOT token is the last id of CLIP's vocabulary, so the same position), and
#: ``forward`` returns exp(logit_scale) unclamped (``clip_step`` clamps the stored value to [0, ln 100]
#: before every step, so the clamp in our forward never acts).
UNCHANGED_BY_CONSTRUCTION: Dict[str, dict] = {
    "text pooling by argmax": {"model": {"text_cfg": {"pool_type": "argmax"}}},
    "unclamped logit scale in forward": {"model": {"max_logit_scale": None}},
}

#: The name of the rows of :func:`run_ablation` that are not single choices.
OURS, ALL_MODEL, OPEN_CLIP = "ours (default)", "all of open_clip's model choices", "open_clip's CLIP"


def _merge_overrides(*parts: Mapping[str, Any]) -> Dict[str, Any]:
    """Overrides merged into one (later parts win, nested dicts key by key). Unlike
    :func:`~survey_lib.recipes.base.merge_config` it merges partial overrides with each other, so it
    cannot check keys against a configuration; the recipe does that when it applies the result."""
    out: Dict[str, Any] = {}
    for part in parts:
        for k, v in part.items():
            out[k] = _merge_overrides(out.get(k, {}), v) if isinstance(v, Mapping) else copy.deepcopy(v)
    return out

#: Our original CLIP recipe, by profile: every switch at our first choice (:data:`OURS_SWITCHES`), the
#: reference row of the ablation (:func:`ablation_baseline`).
ORIGINAL_CONFIGS: Dict[str, dict] = {
    p: {"data": dict(CLIP_DATA[p]), "model": _with_switches(_OURS_MODEL[p]), "optim": dict(CLIP_OPTIM),
        "train": {"betas": (0.9, 0.999), "clip_grad": 1.0, **_TRAIN[p]}, "eval_every": 1}
    for p in CLIP_MODELS
}
#: The choices of open_clip (keys of :data:`OPEN_CLIP_CHOICES`) that the ``clip`` recipe follows,
#: adopted from the ablation on MNIST-5k's validation split (``benchmarks/clip_ablation.py``,
#: notebook 05 section 4, 3 seeds): every *model* choice whose paired mean effect alone was positive
#: (the image blocks' PyTorch init, +1.5 points, the only one the paired t-test resolves; the class and
#: position embeddings' N(0, 1/D) init, +1.0; ``ln_pre``, +0.6; the text MLP biases' init, +0.5).
#: Not adopted: those that were zero or negative alone (3 channels, CLS pooling, no patch bias,
#: LayerNorm eps 1e-5) and open_clip_train's optimizer settings (betas / eps / no clipping: -2.4,
#: worse; weight decay on position embeddings: -0.4). The combination is checked on the same
#: validation split by notebook 05 before the test split is read.
ADOPTED_CHOICES: List[str] = ["image block init (PyTorch's)", "pos/cls embedding init N(0, 1/D)", "ln_pre",
                              "text MLP bias init"]
#: The ``clip`` recipe: our original one with :data:`ADOPTED_CHOICES` switched on (every profile).
CONFIGS: Dict[str, dict] = {
    p: functools.reduce(merge_config, (OPEN_CLIP_CHOICES[k] for k in ADOPTED_CHOICES), ORIGINAL_CONFIGS[p])
    for p in CLIP_MODELS
}
#: The ``open_clip_clip`` recipe: our original recipe's data, step, schedule and optimizer, open_clip's
#: model, 3-channel images (so its runs do not change when the ``clip`` recipe adopts a choice).
OPEN_CLIP_CONFIGS: Dict[str, dict] = {
    p: {**copy.deepcopy(ORIGINAL_CONFIGS[p]), "data": {**CLIP_DATA[p], "in_chans": 3},
        "model": copy.deepcopy(OPEN_CLIP_MODELS[p])}
    for p in CLIP_MODELS
}


def clip_for_profile(profile: str, **overrides) -> CLIP:
    """Our CLIP of the ``clip`` recipe's ``profile`` (``cpu``: 28 px MNIST-5k), with overrides of its
    top-level arguments.

    Raises:
        ValueError: unknown profile.
    """
    return CLIP(**{**profile_config(CONFIGS, profile, "CLIP")["model"], **overrides})


def open_clip_for_profile(profile: str, **overrides) -> nn.Module:
    """open_clip's ``CLIP`` of the same size as :func:`clip_for_profile` (``cpu``: 28 px, 3 channels),
    randomly initialised (:func:`survey_lib.models.clip.build_open_clip`); ``overrides`` replace top-level keys.

    Raises:
        ValueError: unknown profile.
    """
    return build_open_clip(**{**profile_config(OPEN_CLIP_MODELS, profile, "open_clip's CLIP"), **overrides})


def clip_train_config(profile: str, **overrides) -> TrainConfig:
    """The :class:`~survey_lib.train.TrainConfig` of the ``clip`` recipe for ``profile``, with overrides.

    Raises:
        ValueError: unknown profile.
    """
    return TrainConfig(**{**profile_config(CONFIGS, profile, "CLIP")["train"], **overrides})


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


def clip_optimizer(cfg: Mapping[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    """AdamW of a CLIP recipe's configuration: ``cfg["optim"]["param_groups"]`` (``"fit"``:
    :func:`survey_lib.train.param_groups`; ``"open_clip"``: :func:`open_clip_param_groups`),
    ``cfg["optim"]["eps"]``, and ``lr``, ``betas``, ``weight_decay`` of ``cfg["train"]``.

    Raises:
        ValueError: an unknown ``param_groups``.
    """
    tc = TrainConfig(**cfg["train"])
    optim = {**CLIP_OPTIM, **cfg.get("optim", {})}
    rule = optim["param_groups"]
    if rule not in ("fit", "open_clip"):
        raise ValueError(f"optim.param_groups must be 'fit' or 'open_clip', got {rule!r}")
    groups = (open_clip_param_groups if rule == "open_clip" else param_groups)(model, tc.weight_decay)
    return torch.optim.AdamW(groups, lr=tc.lr, betas=tuple(tc.betas), eps=float(optim["eps"]))


def _data(cfg, seed) -> RecipeData:
    d = cfg["data"]
    tokenizer = CaptionTokenizer(16)
    common = dict(img_size=d["img_size"], in_chans=d["in_chans"])
    train = CaptionedDigits(dataset=d["dataset"], split="train", tokenizer=tokenizer, augment=d["augment"],
                            max_shift=d.get("max_shift"), **common)
    return RecipeData(train=train, val=classification_dataset(d["dataset"], "val", **common),
                      test=classification_dataset(d["dataset"], "test", **common), extras={"tokenizer": tokenizer})


def _zero_shot_and_recall(model, tokenizer, dataset, prefix: str) -> Dict[str, float]:
    acc = zero_shot_accuracy(model, tokenizer, dataset, HELDOUT_TEMPLATES)
    img, img_y = encode_images(model, dataset)
    txt = encode_captions(model, tokenizer, [fill_template(t, k) for k in range(10) for t in HELDOUT_TEMPLATES])
    txt_y = torch.arange(10).repeat_interleave(len(HELDOUT_TEMPLATES))
    recall = retrieval_recall(img, txt, img_y, txt_y, ks=(1, 5))
    return {f"{prefix}acc": acc, **{f"{prefix}{k}": v for k, v in recall.items()}}


def _metrics(model, data, cfg, history) -> Dict[str, float]:
    """Validation numbers only (the split choices are made on): ``val_acc`` (zero-shot, held-out
    templates), ``val_i2t_R@1`` / ``@5``, ``val_t2i_R@1`` / ``@5``."""
    return _zero_shot_and_recall(model, data.extras["tokenizer"], data.val, "val_")


def test_metrics(result) -> Dict[str, float]:
    """The final numbers of a trained CLIP recipe run (a :class:`~survey_lib.recipes.base.RecipeResult`)
    on the TEST split, read once at the end of a study: ``test_acc`` (zero-shot with the held-out
    prompt ensemble) and ``test_i2t_R@1`` / ``@5``, ``test_t2i_R@1`` / ``@5`` (50 held-out captions,
    a hit when the retrieved item has the query's digit). Fractions in [0, 1].

    Raises:
        ValueError: a result of another recipe.
    """
    if result.recipe not in ("clip", "open_clip_clip"):
        raise ValueError(f"test_metrics reads the results of the clip and open_clip_clip recipes, got {result.recipe!r}")
    d = result.config["data"]
    test = classification_dataset(d["dataset"], "test", img_size=d["img_size"], in_chans=d["in_chans"])
    return _zero_shot_and_recall(result.model, CaptionTokenizer(16), test, "test_")


def _eval_fn(cfg, data):
    return clip_eval_fn(data.extras["tokenizer"], data.val, HELDOUT_TEMPLATES)


def _build_open_clip(cfg, data) -> nn.Module:
    if cfg["data"]["in_chans"] != 3:
        raise ValueError("open_clip's vision tower takes 3 channels: keep data.in_chans=3 in the open_clip_clip recipe")
    return build_open_clip(**cfg["model"])


RECIPE = register(Recipe(
    name="clip",
    summary="our CLIP on captioned digits (cpu: MNIST-5k); zero-shot with held-out templates, recall@1/5 (validation)",
    configs=CONFIGS,
    data=_data,
    build=lambda cfg, data: CLIP(**cfg["model"]),
    step=lambda cfg, data, model: clip_step(),
    eval_fn=_eval_fn,
    evaluate=_metrics,
    optimizer=clip_optimizer,
    version="2",
))

OPEN_CLIP_RECIPE = register(Recipe(
    name="open_clip_clip",
    summary="open_clip's CLIP class through the same loop (3-channel images); zero-shot, recall@1/5 (validation)",
    configs=OPEN_CLIP_CONFIGS,
    data=_data,
    build=_build_open_clip,
    step=lambda cfg, data, model: clip_step(),
    eval_fn=_eval_fn,
    evaluate=_metrics,
    optimizer=clip_optimizer,
    version="2",
))


# ---------------------------------------------------------------------------------------------
# the ablation: open_clip's choices one at a time, on the validation split (the choices are above)
# ---------------------------------------------------------------------------------------------
def ablation_baseline() -> Dict[str, Any]:
    """Overrides that set every switch of :data:`OPEN_CLIP_CHOICES` and :data:`UNCHANGED_BY_CONSTRUCTION`
    to our original choice (:data:`OURS_SWITCHES`, ``fit``'s parameter groups, AdamW eps 1e-8, betas
    (0.9, 0.999), gradient clipping at 1.0): the reference row of the ablation, the same run whatever
    the recipe's defaults adopt."""
    return {"data": {"in_chans": 1},
            "model": {"vision_cfg": dict(OURS_SWITCHES["vision_cfg"]), "text_cfg": dict(OURS_SWITCHES["text_cfg"]),
                      **OURS_SWITCHES["top"]},
            "optim": dict(CLIP_OPTIM), "train": {"betas": (0.9, 0.999), "clip_grad": 1.0}}


def ablation_overrides(names: Optional[Sequence[str]] = None) -> Dict[str, Optional[Dict[str, Any]]]:
    """The runs of the ablation: ``{row name: overrides of the clip recipe}``, ours first
    (:func:`ablation_baseline`), each of :data:`OPEN_CLIP_CHOICES` on top of it, then all of open_clip's model choices together (with
    :data:`UNCHANGED_BY_CONSTRUCTION`), and open_clip's own ``CLIP`` (value None: the
    ``open_clip_clip`` recipe). ``names`` keeps only those rows, in the order given.

    Raises:
        ValueError: an unknown row name.
    """
    base = ablation_baseline()
    rows: Dict[str, Optional[Dict[str, Any]]] = {OURS: base}
    rows.update({k: _merge_overrides(base, v) for k, v in OPEN_CLIP_CHOICES.items()})
    rows[ALL_MODEL] = _merge_overrides(base, *(OPEN_CLIP_CHOICES[k] for k in MODEL_CHOICES),
                                       *UNCHANGED_BY_CONSTRUCTION.values())
    rows[OPEN_CLIP] = None
    if names is None:
        return rows
    unknown = [n for n in names if n not in rows]
    if unknown:
        raise ValueError(f"unknown ablation rows {unknown}; choose among {list(rows)}")
    return {k: rows[k] for k in dict.fromkeys(names)}


def ablation_budget(profile: str) -> Dict[str, Any]:
    """The overrides that give a recipe the ablation's training budget under ``profile``
    (:data:`ABLATION_TRAIN`; empty when the ablation trains the recipe's own budget).

    Raises:
        ValueError: unknown profile.
    """
    budget = profile_config(ABLATION_TRAIN, profile, "CLIP ablation")
    return {"train": dict(budget)} if budget else {}


def _run_row(profile: str, overrides: Optional[Dict[str, Any]], seed: int, **kwargs):
    budget = ablation_budget(profile)
    if overrides is None:
        return OPEN_CLIP_RECIPE.run(profile, seed=seed, overrides=budget or None, **kwargs)
    return RECIPE.run(profile, seed=seed, overrides=_merge_overrides(overrides, budget), **kwargs)


def run_ablation(profile: str = "cpu", seeds: Sequence[int] = (0, 1, 2), names: Optional[Sequence[str]] = None,
                 metric: str = "val_acc", alpha: float = 0.05, progress: Optional[bool] = None) -> List[Dict[str, Any]]:
    """Train (or read from the model cache) every row of :func:`ablation_overrides` with every seed,
    at the ablation's budget (:func:`ablation_budget`), and compare each with ours on the VALIDATION split.

    Args:
        profile: the recipes' profile.  seeds: at least 3 for a verdict under ``cpu``.
        names: a subset of the rows, trained in that order (default: all, ours first); the
            comparison fields are filled only when ours is among them (it is the reference).
        metric: the recipes' metric compared (``val_acc``: zero-shot accuracy on the validation
            split with the held-out templates).
        alpha: level of the paired t-test.

    Returns:
        One dict per row: ``name``, ``kind`` (``reference``, ``model``, ``training``, ``all``,
        ``open_clip``), ``values`` (one per seed), ``mean``, ``std``, ``seconds`` (training, summed
        over seeds), and against ours (:func:`survey_lib.evaluate.compare_seeds`, paired by seed, the
        claim "this row is better than ours"): ``diff``, ``diff_std``, ``p_value``, ``verdict``;
        plus ``results`` (the :class:`~survey_lib.recipes.base.RecipeResult` of every seed).
    """
    seeds = [int(s) for s in seeds]
    rows = ablation_overrides(names)
    kinds = {OURS: "reference", ALL_MODEL: "all", OPEN_CLIP: "open_clip",
             **{k: "model" for k in MODEL_CHOICES}, **{k: "training" for k in TRAINING_CHOICES}}
    out = []
    for name, overrides in rows.items():
        results = [_run_row(profile, overrides, s, progress=progress, desc=f"{name} [{profile}, seed {s}]") for s in seeds]
        values = [float(r.metrics[metric]) for r in results]
        mean, std, n = mean_std(values)
        row = dict(name=name, kind=kinds[name], values=values, mean=mean, std=std, n_seeds=n,
                   seconds=sum(r.seconds for r in results), results=results)
        out.append(row)
    ours = next((r for r in out if r["name"] == OURS), None)
    for row in out:
        if ours is not None and row is not ours:
            cmp = compare_seeds(row["values"], ours["values"], alpha=alpha, paired=True)
            row.update(diff=cmp["diff"], diff_std=cmp["diff_std"], p_value=cmp["p_value"], verdict=cmp["verdict"])
    return out
