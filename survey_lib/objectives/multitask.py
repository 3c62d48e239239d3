"""Multi-task self-distillation for small datasets: the "Tort" framework of the ITMO thesis (S4).

Source: the ITMO MSc thesis "Bringing Vision Transformers Closer to Individuals" (2022; SOURCES.md
S4), framework "Tort" (code once published as ``detkov/tort``). It trains a ViT *from scratch* on a
small dataset with three objectives at once, on top of DINO's student / EMA-teacher machinery:

    self-distillation   DINO's loss (Caron et al. 2021, arXiv:2104.14294, Eq. 3), the teacher sees
                        the 2 global views *and* the masked view:
                        sum_{x in {g1, g2, m}} sum_{x' in V, x' != x} H(P_t(x), P_s(x'))
                                                     -> ``survey_lib.objectives.dino.DINOLoss``
                                                        with ``n_global_crops=3`` (reused, not copied)
    supervised          cross-entropy of a linear head on the student's feature of the global views
                                                     -> ``MultiTaskDINO.extra_losses`` ("supervised")
    rotation            4-way cross-entropy of a linear head predicting the quarter turn applied to
                        each global view (Gidaris et al. 2018, "Unsupervised Representation Learning
                        by Predicting Image Rotations", arXiv:1803.07728; SiT, Atito et al. 2021,
                        arXiv:2104.03602, combines it with a contrastive loss as the thesis does)
                                                     -> ``MultiTaskDINO.extra_losses`` ("rotation")
    total               L = 1.0 L_dino + 2.5 L_sup + 1.0 L_rot (the thesis's weights), each term
                        switchable for the ablations (``use_dino``, ``use_supervised``, ``use_rotation``)

    views               2 global views, 1 masked global view (a rectangle covering 40-60% of it is
                        replaced by a constant), L local views; the global-sized views are rotated
                        by 0/90/180/270 degrees with the quarter turn kept as a label
                                                     -> ``MultiTaskViews`` (reuses ``BatchMultiCrop``),
                                                        ``mask_rectangle``, ``random_rotation``
    teacher             EMA of the student, cosine momentum schedule to 1 -> ``DINO.on_train_step_end``

Which images feed which loss: in the thesis every image of the small dataset is labelled, and all
three losses see the same images (the "small data" setting). In the *semi-supervised* setting
(:class:`PartiallyLabelled`), every training image feeds the self-supervised losses (distillation and
rotation) while only the labelled ones feed the supervised loss: unlabelled images carry the label
``UNLABELLED = -1`` and are skipped by the supervised term.

Deviations from the thesis (CPU-sized for 16 px digits; the objective is the thesis's):
    * backbone: the project's tiny digits ViT (d 64, depth 4) instead of ViT-B/16; head:
      hidden 256, bottleneck 64, K = 512 (DINO's 2048 / 256 / 65,536), with BatchNorm in the head
      (DINO's ``use_bn_in_head``): without it a tiny ViT's teacher collapsed to uniform (DESIGN.md).
    * teacher momentum 0.96 -> 1 (thesis 0.9998 -> 1): 0.9998 suits ~100 epochs of a large dataset;
      with a few hundred steps it would leave the teacher at its random initialisation.
    * optimiser and schedule: AdamW lr 3e-3, batch 64, a few hundred steps with a one-epoch warm-up
      (thesis: AdamW + Lookahead, lr 5e-4, batch 32, 100 epochs with 10 warm-up epochs); the weight
      decay 0.04 and clip 3.0 are the thesis's. In so short a run the distillation term's teacher
      ends uniform (entropy 6.235 of log K = 6.238 in every run of notebook 10's label-fraction study,
      2026-12-01, with or without photometric noise), so distillation adds no signal there: DINO alone
      on these digits needed a 50-epoch schedule (1,150 steps, 32 px) to learn (notebook 07).
    * data: the 8 x 8 digits upsampled to 16 px with 4 px patches (16 tokens; notebook 07 uses 32 px):
      four times fewer tokens, so the label-fraction study and the ablation fit a CPU budget.
    * crops: global 16 px (scale 0.4-1), local 8 px (scale 0.1-0.4), no flips (a mirrored digit is
      not a digit), no photometric noise (``dino.DIGITS_PHOTOMETRIC``: with DINO's jitter, blur and
      solarisation the digits teacher collapses to uniform, notebook 07), 2 local views in the
      ``cpu`` recipe (thesis: 224 / 96 px, 6 local views; ``full``: 6).
    * supervised loss on *upright* global views only (``supervised_views="upright"``, the default
      for digits). The thesis applies it to every global view, rotated or not; on digits a 6 turned
      by 180 degrees is a 9, so a class label on rotated views contradicts itself.
      ``supervised_views="all"`` restores the thesis's choice.
    * the masked rectangle is filled with 0 in normalised units (the mean intensity), as torchvision's
      ``RandomErasing`` does by default; its aspect ratio is in (3/4, 4/3) and its area fraction is
      guaranteed to lie in ``mask_scale`` (``RandomErasing`` may give up after 10 tries and mask nothing).
    * rotations: each global view of each image gets its own quarter turn (uniform over four with
      ``rotate_prob=0.75``); no label smoothing on the rotation loss.
    * evaluation: weighted k-NN (k = 20, DINO's cosine / temperature 0.07 voting) of the frozen
      backbone's CLS feature with the *labelled training images* as the memory bank and the test split
      as queries, and the supervised head's test accuracy.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from ..train import StepOutput
from .dino import DIGITS_PHOTOMETRIC, DINO, BatchMultiCrop, DINOForward, DINOHead, DINOLoss

__all__ = [
    "UNLABELLED",
    "LOSS_NAMES",
    "THESIS_WEIGHTS",
    "rotate_quarter_turns",
    "random_rotation",
    "sample_mask_boxes",
    "mask_rectangle",
    "MultiTaskViews",
    "MultiTaskDINO",
    "multitask_step",
    "build_multitask",
    "labelled_indices",
    "PartiallyLabelled",
    "fixed_steps_loader",
    "MULTITASK_CONFIGS",
    "digits_views",
    "train_multitask",
    "train_supervised_baseline",
    "plot_framework",
    "plot_views",
]

#: Label of an image whose class is unknown (semi-supervised setting): skipped by the supervised loss.
UNLABELLED = -1
#: The three losses, by the names used in ``losses``, ``loss_weights`` and the history.
LOSS_NAMES = ("dino", "supervised", "rotation")
#: The thesis's weights: self-distillation 1.0, supervised 2.5, rotation 1.0.
THESIS_WEIGHTS: Dict[str, float] = {"dino": 1.0, "supervised": 2.5, "rotation": 1.0}


# ---------------------------------------------------------------------------------------------
# Rotation labels (Gidaris et al. 2018)
# ---------------------------------------------------------------------------------------------
def rotate_quarter_turns(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate each image by its own number of quarter turns, counter-clockwise.

    Image i is ``torch.rot90(x[i], k[i], dims=(-2, -1))``: label 0 = upright, 1 = 90, 2 = 180,
    3 = 270 degrees counter-clockwise.

    Shapes: x (B, C, H, W) with H == W, k (B,) integers -> (B, C, H, W).

    Raises:
        ValueError: non-square images, or ``k`` not of length B.
    """
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"quarter turns need square (B, C, H, W) images, got shape {tuple(x.shape)}")
    k = torch.as_tensor(k).long().reshape(-1) % 4
    if k.numel() != x.shape[0]:
        raise ValueError(f"got {k.numel()} rotation labels for {x.shape[0]} images")
    out = x.clone()
    for q in range(1, 4):
        idx = (k == q).nonzero(as_tuple=True)[0]
        if idx.numel():
            out[idx] = torch.rot90(x[idx], q, dims=(-2, -1))  # (n_q, C, H, W)
    return out


def random_rotation(x: torch.Tensor, prob: float = 0.75,
                    generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rotate each image, with probability ``prob``, by a uniformly drawn 90, 180 or 270 degrees.

    ``prob = 0.75`` makes the label uniform over {0, 1, 2, 3} (the 4-way task of Gidaris et al.
    2018); ``prob = 0`` leaves every image upright (label 0).

    Shapes: x (B, C, H, W), H == W -> (rotated (B, C, H, W), labels (B,) int64 in 0..3).

    Raises:
        ValueError: ``prob`` outside [0, 1], or non-square images.

    Source: Gidaris et al. 2018, arXiv:1803.07728, Sec. 2.2; the thesis (S4) rotates its global
    views the same way and keeps the rotation as the label of its rotation head.
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"rotate_prob must be in [0, 1], got {prob}")
    B = x.shape[0]
    turned = torch.rand(B, generator=generator) < prob  # (B,)
    k = torch.randint(1, 4, (B,), generator=generator)  # (B,) in {1, 2, 3}
    labels = torch.where(turned, k, torch.zeros_like(k))
    return rotate_quarter_turns(x, labels), labels


# ---------------------------------------------------------------------------------------------
# The masked view
# ---------------------------------------------------------------------------------------------
def _check_scale(scale: Union[float, Sequence[float]]) -> Tuple[float, float]:
    lo, hi = (float(scale), float(scale)) if isinstance(scale, (int, float)) else (float(scale[0]), float(scale[1]))
    if not 0.0 < lo <= hi < 1.0:
        raise ValueError(f"mask_scale must satisfy 0 < min <= max < 1 (a fraction of the view's area), got "
                         f"{scale}; the thesis uses (0.4, 0.6)")
    return lo, hi


def sample_mask_boxes(B: int, H: int, W: int, scale: Union[float, Sequence[float]] = (0.4, 0.6),
                      ratio: Tuple[float, float] = (3 / 4, 4 / 3),
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Random rectangles covering a fraction of an H x W image drawn uniformly from ``scale``.

    For each box: a target area ``a ~ U(scale) * H * W`` and an aspect ratio ``r`` log-uniform in
    ``ratio``; the height ``h = round(sqrt(a / r))`` is clamped to ``[ceil(min_scale * H), H]`` (so a
    wide enough box fits), then the width ``round(a / h)`` is clamped so that ``h * w / (H * W)``
    lies in ``scale``. That is always possible when ``(max - min) * W >= 1`` (one pixel column of
    slack), e.g. for (0.4, 0.6) from W = 5 up; otherwise the closest achievable fraction is used.
    The position is uniform over the image.

    Shapes: returns (B, 4) int64 boxes ``(top, left, height, width)``.

    Raises:
        ValueError: a scale outside (0, 1), or an invalid ratio range.
    """
    lo, hi = _check_scale(scale)
    if not 0.0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
    area = H * W
    a = area * (lo + (hi - lo) * torch.rand(B, generator=generator, dtype=torch.float64))  # (B,)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(B, generator=generator, dtype=torch.float64)
    h = (a / log_r.exp()).sqrt().round().clamp(math.ceil(lo * H - 1e-9), H)  # (B,)
    w_min = (lo * area / h - 1e-9).ceil().clamp(1, W)
    w_max = (hi * area / h + 1e-9).floor().clamp(1, W)
    w = torch.minimum(torch.maximum((a / h).round(), w_min), w_max)  # (B,)
    top = (torch.rand(B, generator=generator, dtype=torch.float64) * (H - h + 1)).floor()
    left = (torch.rand(B, generator=generator, dtype=torch.float64) * (W - w + 1)).floor()
    return torch.stack([top, left, h, w], dim=1).long()  # (B, 4)


def mask_rectangle(x: torch.Tensor, scale: Union[float, Sequence[float]] = (0.4, 0.6),
                   ratio: Tuple[float, float] = (3 / 4, 4 / 3), fill: float = 0.0,
                   generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The thesis's masked view: one random rectangle per image replaced by ``fill``.

    The rectangle covers a fraction of the image drawn uniformly from ``scale`` (guaranteed; see
    :func:`sample_mask_boxes`). ``fill = 0`` in normalised units is the dataset's mean intensity,
    torchvision's ``RandomErasing(value=0)`` on a normalised tensor, as in the thesis's code.

    Shapes: x (B, C, H, W) -> (masked (B, C, H, W), mask (B, H, W) bool, True = masked).

    Raises:
        ValueError: a scale outside (0, 1) (e.g. ``(0.4, 1.2)``), or ``x`` not 4-D.

    Source: the thesis (S4), "1 masked global view (a rectangle of scale 0.4-0.6 masked)".
    """
    if x.ndim != 4:
        raise ValueError(f"mask_rectangle expects (B, C, H, W) images, got shape {tuple(x.shape)}")
    B, _, H, W = x.shape
    boxes = sample_mask_boxes(B, H, W, scale, ratio, generator)  # (B, 4)
    rows = torch.arange(H)[None, :, None]  # (1, H, 1)
    cols = torch.arange(W)[None, None, :]  # (1, 1, W)
    top, left, h, w = [boxes[:, j, None, None] for j in range(4)]  # 4 x (B, 1, 1)
    mask = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)  # (B, H, W)
    masked = torch.where(mask[:, None], torch.full_like(x, fill), x)  # (B, C, H, W)
    return masked, mask


# ---------------------------------------------------------------------------------------------
# All the views of a batch
# ---------------------------------------------------------------------------------------------
class MultiTaskViews:
    """The thesis's views for a batch: 2 global, 1 masked global, ``n_local_crops`` local, with
    rotation labels for the global-sized ones.

    1. :class:`~survey_lib.objectives.dino.BatchMultiCrop` (DINO's multi-crop, reused) draws
       ``2 + masked_view`` global views and the local views (random resized crops + photometric noise).
    2. The third global view is masked with :func:`mask_rectangle` (``mask_scale`` of its area).
    3. Every global-sized view (g1, g2 and the masked one) is rotated by :func:`random_rotation`; the
       quarter turns are the rotation head's labels. Local views stay upright (as in the thesis).

    Args:
        global_size, local_size, n_local_crops, global_scale, local_scale: as for ``BatchMultiCrop``.
        masked_view: add the masked global view (the thesis: yes; off for the mask ablation).
        mask_scale: (min, max) fraction of the masked view's area covered by the rectangle, in (0, 1).
        mask_fill: value of the masked pixels (in the views' normalised units).
        rotate_prob: probability that a global-sized view is turned (0.75: uniform over 4 labels).
        **crop_kwargs: photometric options and ``mean``/``std``/``inputs_normalized`` for
            ``BatchMultiCrop`` (flip, color_jitter, blur_sigma, blur_prob, solarize_prob, ...).

    Shapes:
        ``__call__(imgs (B, C, H, W))`` -> ``{"views": [n_global (B, C, G, G)..., n_local (B, C, L, L)...],
        "rotations": (n_global, B) int64, "mask": (B, G, G) bool or None}``, with
        ``n_global = 2 + masked_view``; the masked view is ``views[2]``.
        ``collate(items)`` adds ``"labels": (B,)`` (``UNLABELLED = -1`` allowed): a DataLoader
        ``collate_fn``.

    Raises:
        ValueError: a mask scale outside (0, 1), ``rotate_prob`` outside [0, 1], or a bad crop option.
    """

    def __init__(self, global_size: int = 32, local_size: int = 16, n_local_crops: int = 2,
                 global_scale: Tuple[float, float] = (0.4, 1.0), local_scale: Tuple[float, float] = (0.1, 0.4),
                 masked_view: bool = True, mask_scale: Union[float, Sequence[float]] = (0.4, 0.6),
                 mask_fill: float = 0.0, rotate_prob: float = 0.75, **crop_kwargs: Any) -> None:
        self.mask_scale = _check_scale(mask_scale)
        if not 0.0 <= rotate_prob <= 1.0:
            raise ValueError(f"rotate_prob must be in [0, 1], got {rotate_prob}")
        self.masked_view, self.mask_fill, self.rotate_prob = bool(masked_view), float(mask_fill), float(rotate_prob)
        self.n_global = 2 + int(self.masked_view)
        self.n_local = int(n_local_crops)
        self.crops = BatchMultiCrop(global_size=global_size, local_size=local_size, n_local_crops=n_local_crops,
                                    n_global_crops=self.n_global, global_scale=global_scale,
                                    local_scale=local_scale, **crop_kwargs)

    @property
    def ncrops(self) -> int:
        """Total number of views per image (what ``DINOLoss(ncrops=...)`` must be told)."""
        return self.n_global + self.n_local

    def __call__(self, imgs: torch.Tensor) -> Dict[str, Any]:
        views = self.crops(imgs)  # n_global x (B, C, G, G), then n_local x (B, C, L, L)
        mask = None
        if self.masked_view:
            views[2], mask = mask_rectangle(views[2], self.mask_scale, fill=self.mask_fill)
        rotations = []
        for j in range(self.n_global):
            views[j], r = random_rotation(views[j], self.rotate_prob)
            rotations.append(r)
        return {"views": views, "rotations": torch.stack(rotations), "mask": mask}  # rotations (n_global, B)

    def collate(self, items: Sequence[Tuple[torch.Tensor, int]]) -> Dict[str, Any]:
        """DataLoader ``collate_fn``: stack ``(image, label)`` items and draw every view of the batch."""
        imgs = torch.stack([it[0] for it in items])  # (B, C, H, W)
        out = self(imgs)
        out["labels"] = torch.as_tensor([int(it[1]) for it in items])  # (B,)
        return out

    def __repr__(self) -> str:
        return (f"MultiTaskViews({self.n_global} global x {self.crops.global_size}px "
                f"(masked view: {self.masked_view}, scale {self.mask_scale}), {self.n_local} local x "
                f"{self.crops.local_size}px, rotate_prob={self.rotate_prob})")


# ---------------------------------------------------------------------------------------------
# The framework: DINO + a supervised head + a rotation head
# ---------------------------------------------------------------------------------------------
class MultiTaskDINO(DINO):
    """The thesis's framework: DINO's student / EMA teacher plus supervised and rotation heads.

    The student backbone feeds three heads: DINO's projection head (also on the teacher), a linear
    ``supervised`` head (``num_classes`` outputs) and a linear ``rotation`` head (4 outputs). The
    total loss is ``sum_name weights[name] * L_name`` over the switched-on losses:

    * ``dino``: :class:`~survey_lib.objectives.dino.DINOLoss` over all views, the teacher seeing the
      global-sized views (g1, g2 and the masked view: ``loss.n_global_crops`` of them) - computed by
      :meth:`DINO.compute`, reused as is.
    * ``supervised``: cross-entropy (optional label smoothing) of the supervised head on the
      student's backbone feature of the global-sized views whose image is labelled (label >= 0) and,
      with ``supervised_views="upright"``, whose rotation label is 0.
    * ``rotation``: 4-way cross-entropy of the rotation head on the same features, against the
      quarter turn applied to each view.

    With ``use_dino=False`` neither the teacher nor the local views are run (they would only feed the
    distillation loss); the student runs on the global-sized views only. The teacher is still an EMA
    of the student (``fit`` calls :meth:`DINO.on_train_step_end`), so its feature can be probed.

    Args:
        backbone: the student backbone (``embed(x) -> (B, D)``, e.g. ``VisionTransformer(num_classes=0)``).
        embed_dim: D.  num_classes: K of the supervised head.
        head: DINO's projection head (:class:`DINOHead`).  loss: a :class:`DINOLoss` whose
            ``n_global_crops`` counts the global-sized views (3 with the masked view) and ``ncrops``
            all views.
        use_dino, use_supervised, use_rotation: switch each loss on or off (ablations).
        weights: ``{"dino", "supervised", "rotation"} -> weight`` (default :data:`THESIS_WEIGHTS`).
        supervised_views: ``"upright"`` (default; see the module's deviations) or ``"all"`` (thesis).
        label_smoothing: of the supervised cross-entropy.
        momentum_teacher, final_momentum_teacher: the EMA schedule (cosine, see ``DINO``).

    Shapes:
        forward(views, labels, rotations): views a list of ``loss.ncrops`` tensors (B, C, s, s), the
        ``loss.n_global_crops`` global-sized ones first; labels (B,) with ``UNLABELLED`` = -1 allowed;
        rotations (n_global, B) in 0..3 -> :class:`~survey_lib.objectives.dino.DINOForward` whose
        ``losses`` hold the switched-on losses (``student_out``, ``teacher_feats`` and
        ``teacher_out`` are None when ``use_dino=False``).
        classify(x): (B, C, H, W) -> (B, num_classes).  predict_rotation(x): (B, C, H, W) -> (B, 4).

    Raises:
        ValueError: all losses switched off, a negative weight, an unknown loss name or
            ``supervised_views``, ``num_classes < 1`` with the supervised loss on, or, in ``forward``,
            wrongly shaped labels / rotations.

    Source: the thesis (S4), its framework figure and Sec. on losses; DINO arXiv:2104.14294;
    rotation prediction arXiv:1803.07728.
    """

    def __init__(
        self,
        backbone: nn.Module,
        embed_dim: int,
        num_classes: int,
        head: nn.Module,
        loss: DINOLoss,
        use_dino: bool = True,
        use_supervised: bool = True,
        use_rotation: bool = True,
        weights: Optional[Mapping[str, float]] = None,
        supervised_views: str = "upright",
        label_smoothing: float = 0.0,
        momentum_teacher: float = 0.96,
        final_momentum_teacher: float = 1.0,
    ) -> None:
        if not (use_dino or use_supervised or use_rotation):
            raise ValueError("all three losses are switched off (use_dino, use_supervised, use_rotation): "
                             "switch on at least one, e.g. use_supervised=True for the supervised baseline")
        w = dict(THESIS_WEIGHTS)
        for k, v in dict(weights or {}).items():
            if k not in LOSS_NAMES:
                raise ValueError(f"unknown loss {k!r} in weights; the losses are {LOSS_NAMES}")
            if float(v) < 0:
                raise ValueError(f"weight of {k} must be >= 0, got {v}")
            w[k] = float(v)
        if supervised_views not in ("upright", "all"):
            raise ValueError(f"supervised_views must be 'upright' or 'all', got {supervised_views!r}")
        if use_supervised and num_classes < 1:
            raise ValueError(f"the supervised loss needs num_classes >= 1, got {num_classes}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        extra: Dict[str, nn.Module] = {}
        if use_supervised:
            extra["supervised"] = nn.Linear(embed_dim, num_classes)
        if use_rotation:
            extra["rotation"] = nn.Linear(embed_dim, 4)
        for m in extra.values():  # timm's head init
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        on = {"dino": use_dino, "supervised": use_supervised, "rotation": use_rotation}
        super().__init__(backbone, head, loss, momentum_teacher=momentum_teacher,
                         final_momentum_teacher=final_momentum_teacher, extra_heads=extra,
                         loss_weights={k: w[k] for k in LOSS_NAMES if on[k]})
        self.use_dino, self.use_supervised, self.use_rotation = use_dino, use_supervised, use_rotation
        self.num_classes, self.supervised_views, self.label_smoothing = num_classes, supervised_views, label_smoothing

    @property
    def n_global(self) -> int:
        """Global-sized views (rotated, seen by the teacher, used by the supervised and rotation heads)."""
        return self.loss.n_global_crops

    @property
    def losses_on(self) -> Tuple[str, ...]:
        """Names of the switched-on losses, in :data:`LOSS_NAMES` order."""
        return tuple(k for k in LOSS_NAMES if getattr(self, f"use_{k}"))

    # -- heads on frozen inputs (evaluation) -----------------------------------------------------
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of the student. Shapes: (B, C, H, W) -> (B, num_classes)."""
        if not self.use_supervised:
            raise ValueError("this model has no supervised head (use_supervised=False); probe its features instead")
        return self.extra_heads["supervised"](self.student.embed(x))

    def predict_rotation(self, x: torch.Tensor) -> torch.Tensor:
        """Rotation logits of the student. Shapes: (B, C, H, W) -> (B, 4)."""
        if not self.use_rotation:
            raise ValueError("this model has no rotation head (use_rotation=False)")
        return self.extra_heads["rotation"](self.student.embed(x))

    # -- the forward pass ------------------------------------------------------------------------
    def forward(self, views: Sequence[torch.Tensor], labels: Optional[torch.Tensor] = None,  # type: ignore[override]
                rotations: Optional[torch.Tensor] = None) -> DINOForward:
        """The weighted sum of the switched-on losses (the thesis's L = 1.0 L_dino + 2.5 L_sup + 1.0 L_rot;
        DINO Eq. 3, arXiv:2104.14294, for the distillation term; see the module docstring).

        Shapes: views: ``n_global`` global-sized tensors (B, C, s, s) first (the masked view among
        them), then the local ones; labels (B,) int with ``UNLABELLED`` (-1) for unlabelled images
        (default: all unlabelled); rotations (n_global, B) quarter turns in 0..3 of the global-sized
        views (default: all upright) -> :class:`DINOForward` with ``loss`` and per-loss ``losses``.

        Raises:
            ValueError: labels or rotations of the wrong shape, a label >= ``num_classes``, or fewer
                views than ``n_global``.
        """
        B = views[0].shape[0]
        labels = torch.full((B,), UNLABELLED, dtype=torch.long) if labels is None else torch.as_tensor(labels).long()
        rotations = torch.zeros(self.n_global, B, dtype=torch.long) if rotations is None else torch.as_tensor(rotations).long()
        if labels.shape != (B,):
            raise ValueError(f"labels must have shape ({B},), got {tuple(labels.shape)}")
        if rotations.shape != (self.n_global, B):
            raise ValueError(f"rotations must have shape (n_global={self.n_global}, B={B}), got {tuple(rotations.shape)}")
        if self.use_supervised and bool((labels >= self.num_classes).any()):
            raise ValueError(f"labels must be < num_classes={self.num_classes} (or {UNLABELLED} for unlabelled)")
        labels, rotations = labels.to(views[0].device), rotations.to(views[0].device)
        if self.use_dino:
            out = self.compute(views, labels=labels, rotations=rotations)  # DINO's forward; calls extra_losses
            out.metrics.setdefault("loss_dino", float(out.losses["dino"].detach()))
            return out
        if len(views) < self.n_global:
            raise ValueError(f"got {len(views)} views; the first {self.n_global} must be the global-sized ones")
        feats = self.student.embed(torch.cat(list(views[: self.n_global])))  # (n_global * B, D)
        out = DINOForward(feats.new_zeros(()), {}, feats, None, None, None, {})  # type: ignore[arg-type]
        out.losses = self.extra_losses(out, views, labels=labels, rotations=rotations)
        out.loss = sum(self.loss_weights[k] * v for k, v in out.losses.items())
        out.metrics.update({f"loss_{k}": float(v.detach()) for k, v in out.losses.items()})
        out.metrics["momentum"] = self.last_momentum
        return out

    def extra_losses(self, out: DINOForward, crops: Sequence[torch.Tensor],  # type: ignore[override]
                     labels: Optional[torch.Tensor] = None, rotations: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """The supervised and rotation losses from the student's features of the global-sized views.

        Called by :meth:`DINO.compute` (the DINO hook) or by :meth:`forward` without distillation.
        Also writes ``sup_acc``, ``sup_views`` (labelled views used per image) and ``rot_acc`` to
        ``out.metrics``.
        """
        if labels is None or rotations is None:
            raise ValueError("extra_losses needs labels (B,) and rotations (n_global, B): call the model with "
                             "(views, labels, rotations)")
        B, ng = crops[0].shape[0], self.n_global
        feats = out.student_feats[: ng * B]  # (ng * B, D): views g1, g2, m, crop-major
        rot = rotations.reshape(-1)  # (ng * B,) same order
        losses: Dict[str, torch.Tensor] = {}
        if self.use_supervised:
            y = labels.repeat(ng)  # (ng * B,) the image's label for each of its views
            keep = y != UNLABELLED
            if self.supervised_views == "upright":
                keep = keep & (rot == 0)
            if bool(keep.any()):
                logits = self.extra_heads["supervised"](feats[keep])  # (n_keep, K)
                losses["supervised"] = F.cross_entropy(logits, y[keep], label_smoothing=self.label_smoothing)
                out.metrics["sup_acc"] = float((logits.detach().argmax(-1) == y[keep]).float().mean())
            else:  # no labelled upright view in this batch: a zero that keeps the graph
                losses["supervised"] = 0.0 * self.extra_heads["supervised"](feats[:1]).sum()
            out.metrics["sup_views"] = float(keep.sum()) / B
        if self.use_rotation:
            r_logits = self.extra_heads["rotation"](feats)  # (ng * B, 4)
            losses["rotation"] = F.cross_entropy(r_logits, rot)
            out.metrics["rot_acc"] = float((r_logits.detach().argmax(-1) == rot).float().mean())
        return losses


def multitask_step(model: MultiTaskDINO, batch: Mapping[str, Any]) -> StepOutput:
    """``step_fn`` for :func:`survey_lib.train.fit`: a :meth:`MultiTaskViews.collate` batch
    ``{"views", "labels", "rotations", ...}`` -> the total loss and the per-loss metrics."""
    out = model(batch["views"], batch["labels"], batch["rotations"])
    return StepOutput(loss=out.loss, metrics=out.metrics)


def build_multitask(backbone: nn.Module, embed_dim: int, num_classes: int, epochs: int, *,
                    use_dino: bool = True, use_supervised: bool = True, use_rotation: bool = True,
                    masked_view: bool = True, n_local_crops: int = 2, out_dim: int = 512, use_bn: bool = True,
                    hidden_dim: int = 256, bottleneck_dim: int = 64, student_temp: float = 0.1,
                    teacher_temp: float = 0.04, center_momentum: float = 0.9, momentum_teacher: float = 0.96,
                    weights: Optional[Mapping[str, float]] = None, supervised_views: str = "upright",
                    label_smoothing: float = 0.0) -> MultiTaskDINO:
    """A :class:`MultiTaskDINO` with a :class:`DINOHead` and a :class:`DINOLoss` sized for the views
    of :class:`MultiTaskViews` (``2 + masked_view`` global-sized, ``n_local_crops`` local).

    ``epochs`` must equal ``TrainConfig.epochs`` (the loss's temperature schedule and the teacher's
    momentum schedule count epochs). Defaults are the thesis's temperatures (0.1 / 0.04, no
    warm-up), centre momentum 0.9 and weights 1.0 / 2.5 / 1.0; see the module for the deviations.
    """
    head = DINOHead(embed_dim, out_dim, use_bn=use_bn, hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim)
    n_global = 2 + int(masked_view)
    loss = DINOLoss(out_dim, ncrops=n_global + n_local_crops, warmup_teacher_temp=teacher_temp,
                    teacher_temp=teacher_temp, warmup_teacher_temp_epochs=0, nepochs=epochs,
                    student_temp=student_temp, center_momentum=center_momentum, n_global_crops=n_global)
    return MultiTaskDINO(backbone, embed_dim, num_classes, head, loss, use_dino=use_dino,
                         use_supervised=use_supervised, use_rotation=use_rotation, weights=weights,
                         supervised_views=supervised_views, label_smoothing=label_smoothing,
                         momentum_teacher=momentum_teacher)


# ---------------------------------------------------------------------------------------------
# Small labelled subsets, and the semi-supervised setting
# ---------------------------------------------------------------------------------------------
def labelled_indices(targets: Union[Sequence[int], torch.Tensor, np.ndarray], fraction: float,
                     seed: int = 0) -> np.ndarray:
    """Sorted indices of a stratified ``fraction`` of a labelled set (the images whose label we keep).

    The same selection as ``DigitsDataset(label_fraction=fraction, seed=seed)``: scikit-learn's
    ``train_test_split(train_size=fraction, stratify=targets, random_state=seed)``; ``fraction = 1``
    keeps everything.

    Shapes: targets (n,) -> (round-ish(fraction * n),) int64.

    Raises:
        ValueError: ``fraction`` outside (0, 1].
    """
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}; e.g. 0.1 keeps 10% of the labels")
    y = np.asarray(torch.as_tensor(targets).numpy() if isinstance(targets, torch.Tensor) else targets)
    if fraction == 1.0:
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(np.arange(len(y)), train_size=fraction, stratify=y, random_state=seed)
    return np.sort(keep)


class PartiallyLabelled(Dataset):
    """Every image of ``base``, with its label only if its index is in ``labelled``; else ``UNLABELLED``.

    The semi-supervised setting: all images feed the self-supervised losses, only the labelled ones
    the supervised loss.

    Shapes: item = (image, label or -1).
    """

    def __init__(self, base: Dataset, labelled: Sequence[int]) -> None:
        self.base = base
        self.labelled = set(int(i) for i in labelled)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        img, y = self.base[i]
        return img, (int(y) if i in self.labelled else UNLABELLED)


def fixed_steps_loader(dataset: Dataset, batch_size: int, samples_per_epoch: int, seed: int = 0,
                       collate_fn: Optional[Any] = None) -> DataLoader:
    """A shuffled DataLoader whose "epoch" is ``samples_per_epoch`` draws whatever the dataset size.

    Draws are without replacement within each pass over the dataset (a small set is repeated), so
    two methods trained on different numbers of images get the same number of optimiser steps per
    epoch, ``ceil(samples_per_epoch / batch_size)``: the "same budget" of the label-fraction study.
    """
    if samples_per_epoch < 1 or batch_size < 1:
        raise ValueError(f"samples_per_epoch and batch_size must be >= 1, got {samples_per_epoch}, {batch_size}")
    g = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(dataset, replacement=False, num_samples=samples_per_epoch, generator=g)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn, generator=g)


# ---------------------------------------------------------------------------------------------
# The digits recipe
# ---------------------------------------------------------------------------------------------
#: The framework and its supervised baseline on the digits (16 px in smoke and cpu, 32 px in full),
#: by profile. ``epochs`` are passes of ``samples_per_epoch`` images (1,437 = the training split):
#: the same steps for every method.
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


def digits_views(**views: Any) -> MultiTaskViews:
    """:class:`MultiTaskViews` for :class:`~survey_lib.data.DigitsDataset` items (normalised inputs,
    normalised outputs, no flips)."""
    from ..data import DIGITS_MEAN, DIGITS_STD

    return MultiTaskViews(mean=[DIGITS_MEAN], std=[DIGITS_STD], inputs_normalized=True, **views)


def _config(profile: str) -> dict:
    if profile not in MULTITASK_CONFIGS:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(MULTITASK_CONFIGS)}")
    return MULTITASK_CONFIGS[profile]


def _knn(encoder, bank: Dataset, test_set: Dataset, k: int) -> float:
    from ..evaluate import probe_accuracies

    return probe_accuracies(encoder, bank, test_set, k=min(k, len(bank)), linear=False)["knn_acc"]  # type: ignore[arg-type]


def train_multitask(profile: str = "cpu", seed: int = 0, label_fraction: float = 0.1, setting: str = "small_data",
                    losses: Sequence[str] = LOSS_NAMES, epochs: Optional[int] = None, masked_view: bool = True,
                    mask_scale: Optional[Tuple[float, float]] = None, student_temp: Optional[float] = None,
                    teacher_temp: Optional[float] = None, n_local_crops: Optional[int] = None,
                    supervised_views: str = "upright", views: Optional[Mapping[str, Any]] = None,
                    momentum_teacher: Optional[float] = None, train: Optional[Mapping[str, Any]] = None, k: int = 20,
                    progress: Optional[bool] = None, desc: Optional[str] = None) -> dict:
    """Train the framework from scratch on the digits with a fraction of the labels.

    Args:
        profile: ``smoke``, ``cpu`` or ``full`` (:data:`MULTITASK_CONFIGS`).
        label_fraction: stratified fraction of the 1,437 training images whose label is used, in (0, 1].
        setting: ``"small_data"`` (the thesis: only the labelled images exist) or
            ``"semi_supervised"`` (every training image feeds the self-supervised losses, only the
            labelled ones the supervised loss).
        losses: the switched-on losses, a subset of :data:`LOSS_NAMES` (ablations).
        epochs: passes of ``samples_per_epoch`` images (default: the profile's).
        masked_view, mask_scale, student_temp, teacher_temp, n_local_crops, supervised_views: ablation
            overrides.  views: further :class:`MultiTaskViews` overrides (e.g. ``local_scale``).
        momentum_teacher: base teacher momentum (default: the profile's).  train: ``TrainConfig`` overrides.
        k: neighbours of the weighted k-NN probe (the thesis: 20).

    Returns: ``{"model", "history", "test_acc" (supervised head, None without it), "knn_acc" (student
    CLS, labelled images as the memory bank), "knn_teacher_acc", "seconds", "n_labelled"}``. The history
    has ``test_acc`` per epoch when the supervised head exists.

    Raises:
        ValueError: an unknown profile, setting or loss name; a label fraction outside (0, 1]; all
            losses off; a mask scale outside (0, 1).
    """
    from ..data import DigitsDataset
    from ..models.vit import VisionTransformer
    from ..train import TrainConfig, fit, seed_everything

    cfg = _config(profile)
    if setting not in ("small_data", "semi_supervised"):
        raise ValueError(f"setting must be 'small_data' or 'semi_supervised', got {setting!r}")
    unknown = set(losses) - set(LOSS_NAMES)
    if unknown:
        raise ValueError(f"unknown losses {sorted(unknown)}; choose from {LOSS_NAMES}")
    full = DigitsDataset(train=True, img_size=cfg["vit"]["img_size"])
    idx = labelled_indices(full.targets, label_fraction)
    bank = torch.utils.data.Subset(full, idx.tolist())  # the labelled images: k-NN memory bank
    test_set = DigitsDataset(train=False, img_size=cfg["vit"]["img_size"])
    train_set: Dataset = bank if setting == "small_data" else PartiallyLabelled(full, idx.tolist())
    views_kw = dict(cfg["views"], **dict(views or {}), masked_view=masked_view)
    if mask_scale is not None:
        views_kw["mask_scale"] = mask_scale
    if n_local_crops is not None:
        views_kw["n_local_crops"] = n_local_crops
    mt_views = digits_views(**views_kw)  # validates the mask scale before any training
    n_epochs = int(epochs or cfg["train"]["epochs"])
    seed_everything(seed)
    net = VisionTransformer(**cfg["vit"], num_classes=0)
    loss_kw = dict(cfg["loss"])
    if student_temp is not None:
        loss_kw["student_temp"] = student_temp
    if teacher_temp is not None:
        loss_kw["teacher_temp"] = teacher_temp
    model = build_multitask(net, cfg["vit"]["embed_dim"], 10, n_epochs, use_dino="dino" in losses,
                            use_supervised="supervised" in losses, use_rotation="rotation" in losses,
                            masked_view=masked_view, n_local_crops=mt_views.n_local, **cfg["head"], **loss_kw,
                            momentum_teacher=cfg["momentum_teacher"] if momentum_teacher is None else momentum_teacher,
                            label_smoothing=cfg["label_smoothing"], supervised_views=supervised_views)
    loader = fixed_steps_loader(train_set, cfg["train"]["batch_size"], cfg["samples_per_epoch"], seed, mt_views.collate)

    def eval_fn(m: MultiTaskDINO) -> Dict[str, float]:
        if not m.use_supervised:
            return {}
        x, y = test_set.images, test_set.targets
        with torch.no_grad():
            return {"test_acc": float((m.classify(x).argmax(-1) == y).float().mean())}

    tc = TrainConfig(**{**cfg["train"], **dict(train or {}), "epochs": n_epochs}, seed=seed, progress=progress,
                     desc=desc or f"multitask {'+'.join(losses)} {label_fraction:.0%} [{profile}]")
    history = fit(model, loader, config=tc, step_fn=multitask_step, eval_fn=eval_fn)
    return {"model": model, "history": history, "test_acc": history.last.get("test_acc"),
            "knn_acc": _knn(model.student_embed, bank, test_set, k),
            "knn_teacher_acc": _knn(model.teacher_embed, bank, test_set, k),
            "seconds": history.seconds, "n_labelled": len(idx)}


def train_supervised_baseline(profile: str = "cpu", seed: int = 0, label_fraction: float = 0.1,
                              epochs: Optional[int] = None, k: int = 20, progress: Optional[bool] = None,
                              desc: Optional[str] = None) -> dict:
    """The supervised-only baseline: the same ViT, trained with cross-entropy on the labelled images.

    The project's supervised digits recipe (``survey_lib.methods.VIT_TRAIN``: AdamW, warm-up +
    cosine, label smoothing 0.1, random 1-pixel shifts; the "How to train your ViT" style of recipe
    the thesis compares with), with the same steps per epoch and epochs as :func:`train_multitask`.

    Returns: ``{"model", "history" (``val_acc`` per epoch on the test split), "test_acc", "knn_acc",
    "seconds", "n_labelled"}``.

    Raises:
        ValueError: an unknown profile, or a label fraction outside (0, 1].
    """
    from ..data import DigitsDataset
    from ..evaluate import accuracy
    from ..models.vit import VisionTransformer
    from ..train import TrainConfig, fit, seed_everything

    cfg = _config(profile)
    full = DigitsDataset(train=True, img_size=cfg["vit"]["img_size"], augment=True)
    idx = labelled_indices(full.targets, label_fraction)
    train_set = torch.utils.data.Subset(full, idx.tolist())
    plain = DigitsDataset(train=True, img_size=cfg["vit"]["img_size"])
    bank = torch.utils.data.Subset(plain, idx.tolist())
    test_set = DigitsDataset(train=False, img_size=cfg["vit"]["img_size"])
    n_epochs = int(epochs or cfg["train"]["epochs"])
    seed_everything(seed)
    model = VisionTransformer(**cfg["vit"], num_classes=10)
    loader = fixed_steps_loader(train_set, cfg["train"]["batch_size"], cfg["samples_per_epoch"], seed)
    tc = TrainConfig(**{**cfg["train"], **cfg["baseline"], "epochs": n_epochs}, label_smoothing=cfg["label_smoothing"],
                     seed=seed, progress=progress, desc=desc or f"supervised {label_fraction:.0%} [{profile}]")
    history = fit(model, loader, test_set, config=tc)
    return {"model": model, "history": history, "test_acc": accuracy(model, test_set),
            "knn_acc": _knn(model.embed, bank, test_set, k), "seconds": history.seconds, "n_labelled": len(idx)}


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
def plot_framework(n_local: int = 6, title: Optional[str] = None):
    """The framework pictured: views -> student (three heads) and EMA teacher (one head) -> losses.

    Returns a Figure (boxes and arrows drawn with matplotlib).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(11, 5.2))
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 6)
    ax.set_axis_off()

    def box(x, y, w, h, text, color, fs=9):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=color, ec="k", lw=0.8))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fs)
        return (x, y, w, h)

    def arrow(a, b, style="-|>", color="k", ls="-"):
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=12, color=color, lw=1.0, ls=ls))

    box(0.1, 4.3, 1.9, 0.9, "2 global views\n(rotated 0/90/180/270)", "#cfe2f3")
    box(0.1, 3.1, 1.9, 0.9, "1 masked global view\n(40-60% masked, rotated)", "#cfe2f3")
    box(0.1, 1.7, 1.9, 0.9, f"{n_local} local views\n(upright)", "#d9ead3")
    box(3.0, 3.6, 1.6, 1.2, "student\nViT", "#fff2cc", 10)
    box(3.0, 0.7, 1.6, 1.2, "teacher\nViT (EMA)", "#fce5cd", 10)
    box(5.4, 4.9, 1.9, 0.7, "contrastive head\n(DINO MLP)", "#ead1dc")
    box(5.4, 3.9, 1.9, 0.7, "supervised head\n(linear, K classes)", "#ead1dc")
    box(5.4, 2.9, 1.9, 0.7, "rotation head\n(linear, 4)", "#ead1dc")
    box(5.4, 0.9, 1.9, 0.7, "contrastive head\n(EMA copy)", "#ead1dc")
    box(8.2, 4.0, 2.6, 1.3, "self-distillation (x 1.0)\nH(P_t(x), P_s(x')),\nx in {g1, g2, m}, x' != x", "#f4cccc")
    box(8.2, 2.6, 2.6, 1.0, "supervised CE (x 2.5)\nlabelled, upright views", "#f4cccc")
    box(8.2, 1.3, 2.6, 1.0, "rotation CE (x 1.0)\nquarter turn of each\nglobal-sized view", "#f4cccc")
    for y in (4.75, 3.55, 2.15):
        arrow((2.05, y), (2.95, 4.2))
    arrow((2.05, 4.5), (2.95, 1.5), color="tab:brown")
    arrow((2.05, 3.4), (2.95, 1.3), color="tab:brown")
    for y in (5.25, 4.25, 3.25):
        arrow((4.65, 4.2), (5.35, y))
    arrow((4.65, 1.3), (5.35, 1.25))
    arrow((7.35, 5.25), (8.15, 4.8))
    arrow((7.35, 1.25), (8.15, 4.3), color="tab:brown")
    arrow((7.35, 4.25), (8.15, 3.1))
    arrow((7.35, 3.25), (8.15, 1.8))
    arrow((3.8, 3.55), (3.8, 1.95), style="-|>", color="grey", ls="--")
    ax.text(3.9, 2.7, "EMA\n(no gradient)", fontsize=8, color="grey")
    ax.set_title(title or "the multi-task self-distillation framework (thesis S4, \"Tort\")", fontsize=11)
    return fig


def plot_views(img: torch.Tensor, batch: Mapping[str, Any], index: int = 0, n_global: int = 3,
               title: Optional[str] = None):
    """One image and its views from a :class:`MultiTaskViews` batch, with rotation labels.

    Shapes: img (C, H, W) in [0, 1]; ``batch["views"]`` tensors (B, C, s, s) (denormalised for
    display by the caller or min-max scaled here). Returns a Figure.
    """
    import matplotlib.pyplot as plt

    from ..viz import show_image

    views = [v[index] for v in batch["views"]]
    sizes = [img.shape[-1]] + [v.shape[-1] for v in views]
    fig, axes = plt.subplots(1, len(sizes), figsize=(1.7 * len(sizes), 2.5), gridspec_kw={"width_ratios": sizes})
    show_image(axes[0], img, "image")
    for j, v in enumerate(views):
        if j < n_global:
            deg = 90 * int(batch["rotations"][j, index])
            kind = "masked" if (j == 2 and batch.get("mask") is not None) else f"global {j + 1}"
            show_image(axes[j + 1], v, f"{kind}\nrot {deg} deg")
        else:
            show_image(axes[j + 1], v, f"local {j - n_global + 1}\n(upright)")
    fig.suptitle(title or "the framework's views of one digit (teacher: the global-sized ones)", fontsize=10)
    fig.tight_layout()
    return fig
