"""ViT, Swin, NAT and a ResNet on equal terms (``survey_lib.recipes.compare``): the inductive-bias
comparison.

The same data (MNIST-5k at 28 px with random 2-pixel shifts), the same training recipe
(:data:`survey_lib.recipes.vit.MNIST_TRAIN`: AdamW, 150 epochs at batch 32, lr 2e-3, warm-up and
cosine, label smoothing 0.1) and the same seeds for every architecture, each at a token grid where
its mechanism does something:

* ``vit``: global attention over 4 x 4 patches of 7 px (:data:`survey_lib.recipes.vit.MNIST_MODEL`).
* ``swin``: patch 2 -> a 14 x 14 grid in 7 x 7 windows (4 per image, shifted in every second block),
  then a 7 x 7 stage (:data:`survey_lib.recipes.swin.MNIST_MODEL`).
* ``nat``: the paper's convolutional tokenizer -> 7 x 7 tokens, 3 x 3 neighbourhoods, dilated in every
  second block (:data:`survey_lib.recipes.nat.MNIST_MODEL`).
* ``resnet``: timm's ``resnet10t`` with narrow channels (DeiT's teacher, :mod:`survey_lib.recipes.teacher`).

Papers: ViT (Dosovitskiy et al. 2021, arXiv:2010.11929, Sec. 3.1 "Inductive bias": only the MLPs are
local, so a ViT needs more data than a CNN); Swin (Liu et al. 2021, arXiv:2103.14030); NAT (Hassani
et al. 2023, arXiv:2204.07143); ResNet (He et al. 2016, arXiv:1512.03385).

**Learning curves over training-set size** (:func:`equal_terms_study` with ``fractions``): a stratified
fraction of the training split (the same images for every seed and model; the validation and test
splits stay whole), trained for :func:`epochs_for_fraction` epochs: equal epochs would give the 5%
run a twentieth of the optimiser steps (too few to converge), equal steps would cost twenty times as
many passes per image; ``epochs / sqrt(fraction)`` is a compromise, set once and not tuned. The
validation split is evaluated about as often as on all the data (every ``ceil(E_f / E)`` epochs), so
the short epochs of a small fraction do not spend their time on evaluation.

Under ``smoke`` every model trains with its recipe's ``smoke`` configuration (the 32 px digits, for
seconds: a check of the pipeline). Under ``full`` the same models train on the full MNIST from a
local folder (:class:`survey_lib.data.MNISTDisk`).
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Dict, Optional, Sequence, Tuple

from ..cost import count_flops, count_parameters
from .base import Recipe, SeedsResult, get_recipe, run_seeds
from .common import fraction_tag
from .nat import MNIST_CONFIG as NAT_MNIST
from .swin import MNIST_CONFIG as SWIN_MNIST
from .teacher import MNIST_CONFIG as RESNET_MNIST
from .vit import CONFIGS as VIT_CONFIGS

__all__ = ["COMPARED", "compared_recipe", "compared_overrides", "epochs_for_fraction", "row_name", "model_costs",
           "seconds_per_epoch", "equal_terms_study"]

#: The compared models: summary-row name -> (registered recipe, its configuration on MNIST-5k: the
#: overrides under ``cpu`` and ``full``, the ViT's being its recipe's own ``cpu`` configuration,
#: changes made on top under every profile). ``nat_eqflops`` is the NAT widened from 48 to 60 channels,
#: which brings its FLOPs per image to Swin's (17.8 against 17.4 MFLOPs under ``cpu``), for the claim
#: "NAT beats Swin" at equal FLOPs (the NAT paper's comparisons are at similar FLOPs, its Table 1).
#: ``swin_no_shift`` is Swin without shifted windows
#: (Swin's "w/o shifting" ablation, Sec. 4.3, Table 4).
COMPARED: Dict[str, Tuple[str, dict, Optional[dict]]] = {
    "vit": ("vit", VIT_CONFIGS["cpu"], None),
    "swin": ("swin", SWIN_MNIST, None),
    "swin_no_shift": ("swin", SWIN_MNIST, {"model": {"shifted_windows": False}}),
    "nat": ("nat", NAT_MNIST, None),
    "nat_eqflops": ("nat", NAT_MNIST, {"model": {"embed_dim": 60}}),
    "resnet": ("cnn_teacher", RESNET_MNIST, None),
}


def _check_name(name: str) -> None:
    if name not in COMPARED:
        raise ValueError(f"unknown model {name!r}; the comparison has {sorted(COMPARED)}")


def compared_recipe(name: str) -> Recipe:
    """The registered recipe that trains model ``name`` (a key of :data:`COMPARED`).

    Raises:
        ValueError: unknown name.
    """
    _check_name(name)
    return get_recipe(COMPARED[name][0])


def epochs_for_fraction(epochs: int, fraction: float) -> int:
    """``ceil(epochs / sqrt(fraction))``: 150 epochs on all the data, 671 on 5% (a fifth of the steps).

    Raises:
        ValueError: a fraction outside (0, 1], or epochs below 1.
    """
    fraction_tag(fraction)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    return int(math.ceil(epochs / math.sqrt(fraction) - 1e-9))


def compared_overrides(name: str, profile: str, fraction: float = 1.0) -> Optional[dict]:
    """The overrides that train model ``name`` in the comparison under ``profile`` on ``fraction`` of
    the training split (None: the recipe's configuration unchanged).

    Raises:
        ValueError: unknown name or a fraction outside (0, 1].
    """
    _check_name(name)
    fraction_tag(fraction)
    _, config, changes = COMPARED[name]
    out = {} if profile == "smoke" else {key: dict(section) for key, section in config.items()}
    if profile == "full":
        out["data"]["dataset"] = "mnist"
    for key, section in (changes or {}).items():
        out.setdefault(key, {}).update(section)
    base = {key: dict(section) for key, section in out.items()} or None
    if fraction != 1.0:
        epochs = compared_recipe(name).config(profile, base)["train"]["epochs"]
        out.setdefault("data", {})["label_fraction"] = float(fraction)
        out.setdefault("train", {})["epochs"] = epochs_for_fraction(epochs, fraction)
        # about as many evaluations of the validation split as on all the data (not one per short epoch)
        out["train"]["eval_every"] = math.ceil(out["train"]["epochs"] / epochs)
    return out or None


def row_name(name: str, fraction: float = 1.0) -> str:
    """The ``summary.csv`` method of a run: ``"swin"`` on all the data, ``"swin_f010"`` on 10%."""
    _check_name(name)
    return name if fraction == 1.0 else f"{name}_{fraction_tag(fraction)}"


def model_costs(profile: str = "cpu", models: Sequence[str] = tuple(COMPARED)) -> Dict[str, Dict[str, int]]:
    """Parameters and FLOPs (``torch.utils.flop_counter``, one image, multiply-add = 2 FLOPs) of each
    compared model as it is built under ``profile``.

    Returns: ``{name: {"params": int, "flops": int}}``.
    """
    out: Dict[str, Dict[str, int]] = {}
    for name in models:
        recipe = compared_recipe(name)
        cfg = recipe.config(profile, compared_overrides(name, profile))
        model = recipe.build(cfg, None)
        size = cfg["data"]["img_size"]
        out[name] = {"params": count_parameters(model), "flops": count_flops(model, (1, cfg["data"]["in_chans"], size, size))}
    return out


def seconds_per_epoch(profile: str = "cpu", models: Sequence[str] = tuple(COMPARED), steps: int = 10, rounds: int = 3,
                      seed: int = 0) -> Dict[str, float]:
    """Training seconds per epoch of each compared model on this machine, measured by interleaved
    timing: in each of ``rounds`` rounds every model trains ``steps`` steps (forward, label-smoothed
    cross-entropy, backward, AdamW) on real batches of its training split, the models taking turns,
    so that a slower machine or another job slows every model alike. The median step time times the
    steps per epoch (``ceil(train images / batch)``) is the epoch time; evaluation is not counted.

    The runs of :func:`equal_terms_study` keep their own per-epoch clock, but it ran beside whatever
    else the machine was doing; the equal-wall-time comparison uses this measurement instead.

    Returns: ``{name: seconds per epoch}`` (one thread if the caller set one).

    Raises:
        ValueError: an unknown model, or steps / rounds below 1.
    """
    import torch
    import torch.nn.functional as F

    from ..train import param_groups, seed_everything

    if steps < 1 or rounds < 1:
        raise ValueError(f"steps and rounds must be >= 1, got {steps} and {rounds}")
    for name in models:
        _check_name(name)
    setups = {}
    for name in models:
        recipe = compared_recipe(name)
        cfg = recipe.config(profile, compared_overrides(name, profile))
        data = recipe.data(cfg, seed)
        seed_everything(seed)
        model = recipe.build(cfg, data).train()
        train = cfg["train"]
        loader = torch.utils.data.DataLoader(data.train, batch_size=train["batch_size"], shuffle=True,
                                             generator=torch.Generator().manual_seed(seed))
        opt = torch.optim.AdamW(param_groups(model, train.get("weight_decay", 0.0)), lr=train["lr"], fused=True)
        setups[name] = (model, opt, loader, iter(loader), float(train.get("label_smoothing", 0.0)), [])

    def step(name: str) -> float:
        model, opt, loader, it, smoothing, _ = setups[name]
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            setups[name] = setups[name][:3] + (it,) + setups[name][4:]
            x, y = next(it)
        t = time.perf_counter()
        loss = F.cross_entropy(model(x), y, label_smoothing=smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - t

    for name in models:  # warm-up: first calls allocate and pick kernels
        step(name)
    for _ in range(rounds):
        for name in models:
            setups[name][5].extend(step(name) for _ in range(steps))
    return {name: statistics.median(times) * len(setups[name][2]) for name, (_, _, _, _, _, times) in setups.items()}


def equal_terms_study(profile: str = "cpu", seeds: Sequence[int] = (0, 1, 2), fractions: Sequence[float] = (1.0,),
                      models: Sequence[str] = tuple(COMPARED), progress: Optional[bool] = None
                      ) -> Dict[Tuple[str, float], SeedsResult]:
    """Train every model at every fraction of the training split for every seed (from the model
    cache when it holds the run).

    Returns: ``{(name, fraction): SeedsResult}``; each run's metrics hold ``test_acc`` (read once, at
    the end) and its history the per-epoch ``val_acc`` and ``seconds``.

    Raises:
        ValueError: no seeds, an unknown model or a fraction outside (0, 1].
    """
    for name in models:
        _check_name(name)
    for f in fractions:
        fraction_tag(f)
    out: Dict[Tuple[str, float], SeedsResult] = {}
    for f in fractions:
        for name in models:
            out[(name, float(f))] = run_seeds(compared_recipe(name), profile, seeds,
                                              overrides=compared_overrides(name, profile, f), progress=progress,
                                              desc=f"{row_name(name, f)} [{profile}]")
    return out
