"""Multi-task self-distillation for small datasets: the "Tort" framework of the ITMO thesis (S4).

Source: the ITMO MSc thesis "Bringing Vision Transformers Closer to Individuals" (2022), framework
"Tort" (code once published as ``detkov/tort``). It trains a ViT *from scratch* on a small dataset
with three objectives at once, on top of DINO's student / EMA-teacher machinery:

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
                                                     -> ``survey_lib.data.views.MultiTaskViews``
                                                        (reuses ``BatchMultiCrop``)
    teacher             EMA of the student, cosine momentum schedule to 1 -> ``DINO.on_train_step_end``

Which images feed which loss: in the thesis every image of the small dataset is labelled, and all
three losses see the same images (the "small data" setting). In the *semi-supervised* setting
(``survey_lib.data.splits.PartiallyLabelled``), every training image feeds the self-supervised losses (distillation and
rotation) while only the labelled ones feed the supervised loss: unlabelled images carry the label
``UNLABELLED = -1`` and are skipped by the supervised term.

Deviations from the thesis (CPU-sized; the objective is the thesis's; sizes of the ``cpu`` recipe,
``survey_lib.recipes.multitask``):
    * backbone: notebook 01's MNIST ViT (patch 7 on 28 px: 16 tokens, d 64, depth 4, mean-pooled
      tokens) instead of ViT-B/16; head: hidden 256, bottleneck 64, K = 512 (DINO's 2048 / 256 /
      65,536), with BatchNorm in the head (DINO's ``use_bn_in_head``): without it a tiny ViT's teacher
      collapsed to uniform in an early prototype of this project.
    * teacher momentum 0.996 -> 1 (thesis 0.9998 -> 1): 0.9998 suits ~100 epochs of a large dataset;
      with a couple of thousand steps it would leave the teacher at its random initialisation.
    * optimiser and schedule: AdamW lr 2e-3, batch 64, a few thousand steps with a warm-up of a tenth
      of the run (thesis: AdamW + Lookahead, lr 5e-4, batch 32, 100 epochs with 10 warm-up epochs);
      the weight decay 0.04 and clip 3.0 are the thesis's. Whether the teacher leaves the uniform
      distribution at this budget is measured in every run (``teacher_entropy_ratio`` of the recipe):
      on the 16 px digits and 276 steps it never did (entropy 6.235 of log K = 6.238, notebook 10,
      2026-12-01), so distillation added no signal there.
    * crops: global 28 px (scale 0.8-1: with 0.5-1 the supervised head fell 1.6-4.4 points on
      validation), local 14 px (scale 0.2-0.5); no flips (a mirrored digit is not a digit), no
      photometric noise (``recipes.dino.DIGITS_PHOTOMETRIC``: with DINO's jitter, blur and
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
      backbone's pooled feature with the *labelled training images* as the memory bank and the test split
      as queries, and the supervised head's test accuracy.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..train import StepOutput
from .dino import DINO, DINOForward, DINOHead, DINOLoss

__all__ = ["UNLABELLED", "LOSS_NAMES", "THESIS_WEIGHTS", "MultiTaskDINO", "multitask_step", "build_multitask"]

#: The label of an image whose label is hidden (the semi-supervised setting): the supervised term
#: skips it. The same marker as ``survey_lib.data.splits.UNLABELLED``, which produces such labels.
UNLABELLED = -1

#: The three losses, by the names used in ``losses``, ``loss_weights`` and the history.
LOSS_NAMES = ("dino", "supervised", "rotation")


#: The thesis's weights: self-distillation 1.0, supervised 2.5, rotation 1.0.
THESIS_WEIGHTS: Dict[str, float] = {"dino": 1.0, "supervised": 2.5, "rotation": 1.0}


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
