"""Knowledge distillation of a ViT student from a CNN teacher, as in DeiT.

Touvron et al. 2021, "Training data-efficient image transformers & distillation through attention",
arXiv:2012.12877, Sec. 4. With Z_s the student's logits, Z_t the teacher's, psi the softmax, y the
label, tau the temperature and y_t = argmax_c Z_t(c) the teacher's hard decision:

    Eq. 2 (soft)  L = (1 - alpha) CE(psi(Z_s), y) + alpha tau^2 KL(psi(Z_t / tau) || psi(Z_s / tau))
    Eq. 3 (hard)  L = 1/2 CE(psi(Z_s), y) + 1/2 CE(psi(Z_s), y_t)

"Distillation through attention" (Sec. 4, Fig. 2): a student with a distillation token produces two
outputs; the first term uses the class token's logits, the distillation term (KL or CE against
y_t) uses the distillation token's logits. A student without that token (a plain ViT) uses the same
logits in both terms: classical knowledge distillation (Hinton et al. 2015, arXiv:1503.02531).

Reading guide: :class:`DistillationLoss` (both equations), :class:`MaskedCrossEntropy` (the supervised
term when only some images have a label) and :func:`deit_step` (the ``step_fn`` for
:func:`survey_lib.train.fit`). The teacher is any classifier (``survey_lib.recipes.teacher`` trains a
small timm ResNet); how often student and teacher agree is measured by
``survey_lib.evaluate.teacher_agreement``.

The paper prints Eq. 2 as KL(psi(Z_s / tau), psi(Z_t / tau)), student first, but its text ("the KL
divergence between the softmax of the teacher and the softmax of the student") and DeiT's code
(``F.kl_div(student_log_probs, teacher_log_probs)``) compute KL(p_t || p_s) = sum_k p_t (log p_t -
log p_s), the teacher being the target distribution; we do the same.

A transfer set with few labels (the semi-supervised use of distillation; Hinton et al. 2015, Sec. 2,
call the images the student learns the teacher's outputs on the "transfer set"): every image gets the
distillation term, only the labelled ones the supervised term. An unlabelled image carries the label
``UNLABELLED = -1`` (the marker of ``survey_lib.data.splits``); :class:`MaskedCrossEntropy` is the
supervised term over the labelled images of the batch, and 0 (with a graph) in a batch without one.
DeiT itself always has every label; this is our extension, for the study of notebook 02.

Deviations from the paper:
    * KL normalisation: ``kl_reduction="batchmean"`` (default; the mean over samples of the
      per-sample KL), not DeiT's code, which sums the KL over samples *and classes* and divides by
      ``numel = B * K`` (``kl_reduction="deit"``). DeiT's value is ours divided by K, so with the same
      alpha its distillation term is K times weaker (1000x on ImageNet, 10x on the digits and MNIST). We use
      the per-sample KL so that Eq. 2 means what it says: at alpha = 1/2 the label and the teacher
      weigh the same, whatever the number of classes; ``"deit"`` reproduces DeiT's choice.
    * Eq. 3 is generalised as in DeiT's code: ``(1 - alpha) CE(cls, y) + alpha CE(dist, y_t)``;
      ``alpha = 0.5`` (the default for ``'hard'``) is the paper's equation.
    * the teacher is a ~0.3M-parameter timm ``resnet10t`` with narrow channels (DeiT: RegNetY-16GF,
      84M parameters, 82.9% on ImageNet), trained from scratch on the student's training split
      (``survey_lib.recipes.deit``: MNIST-5k under ``cpu``, the 8 x 8 digits under ``smoke``).
    * no Mixup/CutMix/RandAugment/repeated augmentation (DeiT Sec. 6); the images get random shifts
      of a few pixels only (``max_shift`` of :func:`survey_lib.data.classification_dataset`).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..train import StepOutput

__all__ = ["DISTILLATION_TYPES", "KL_REDUCTIONS", "UNLABELLED", "DISTILL_HPARAMS", "split_outputs", "MaskedCrossEntropy",
           "DistillationLoss", "deit_step"]

DISTILLATION_TYPES = ("none", "soft", "hard")

#: How the soft term's KL is normalised: per sample (``batchmean``) or as DeiT's code (``deit``: sum / (B K)).
KL_REDUCTIONS = ("batchmean", "deit")

#: The label of an image without one (the same marker as ``survey_lib.data.splits.UNLABELLED``).
UNLABELLED = -1


Outputs = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


#: DeiT's hyper-parameters of the distillation term: soft tau = 3, alpha (the paper's lambda) = 0.1
#: ("the typical values", Sec. 6, after Cho & Hariharan 2019); hard alpha = 1/2 (Eq. 3).
DISTILL_HPARAMS: Dict[str, dict] = {
    "none": dict(alpha=0.0, tau=1.0),
    "soft": dict(alpha=0.1, tau=3.0),
    "hard": dict(alpha=0.5, tau=1.0),
}


def split_outputs(outputs: Outputs) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(cls_logits, dist_logits)`` from a distilled student's pair, or ``(z, z)`` from a plain model.

    Shapes: (B, K) or a pair of (B, K) -> two (B, K).

    Raises:
        ValueError: a tuple/list that is not a pair.
    """
    if isinstance(outputs, torch.Tensor):
        return outputs, outputs
    if isinstance(outputs, (tuple, list)) and len(outputs) == 2:
        return outputs[0], outputs[1]
    raise ValueError(
        "student outputs must be a (B, K) tensor or a pair (cls_logits, dist_logits), "
        f"got {type(outputs).__name__} of length {len(outputs) if hasattr(outputs, '__len__') else '?'}"
    )


class MaskedCrossEntropy(nn.Module):
    """Label-smoothed cross-entropy over the labelled images of a batch; images labelled
    ``UNLABELLED`` (-1) are skipped.

    The mean is over the labelled images only, so the term has the scale of a plain cross-entropy
    whatever the fraction of labels. A batch with no labelled image (at 10% labels a batch of 32 has
    none with probability 0.9^32, about 3%) gives 0 *with a graph* (``0 * logits.sum()``): a mean
    over zero images would be NaN, and :func:`survey_lib.train.fit` stops at a non-finite loss.
    With every image labelled it equals ``F.cross_entropy(logits, labels, label_smoothing=...)``.

    Args:
        label_smoothing: in [0, 1) (Szegedy et al. 2016), as ``nn.CrossEntropyLoss``.

    Shapes: forward(logits (B, K), labels (B,) int with -1 for unlabelled) -> scalar.

    Raises:
        ValueError: ``label_smoothing`` outside [0, 1); at a call, labels that are neither -1 nor a
            class in [0, K), or logits and labels of different batch sizes.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 2 or labels.shape != logits.shape[:1]:
            raise ValueError(f"expected logits (B, K) and labels (B,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
        K = logits.shape[-1]
        bad = (labels != UNLABELLED) & ((labels < 0) | (labels >= K))
        if bool(bad.any()):
            raise ValueError(f"labels must be {UNLABELLED} (unlabelled) or a class in [0, {K}), got "
                             f"{sorted(set(labels[bad].tolist()))[:5]}")
        keep = labels != UNLABELLED  # (B,)
        if not bool(keep.any()):
            return 0.0 * logits.sum()  # no labelled image in this batch: zero, and the graph is kept
        return F.cross_entropy(logits[keep], labels[keep], label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}, ignores={UNLABELLED}"


class DistillationLoss(nn.Module):
    """DeiT's objective: a supervised term on the class output plus a distillation term (Eq. 2 / 3).

    ``'none'``: ``base_criterion(cls_logits, labels)`` only (the teacher, if any, is not run).
    ``'soft'``: ``(1 - alpha) * base + alpha * tau^2 * KL(softmax(Z_t / tau) || softmax(Z_dist / tau))``
    with the KL averaged over samples (``kl_reduction='batchmean'``) or, as DeiT's code, summed over
    samples and classes and divided by ``B * K`` (``kl_reduction='deit'``, i.e. batchmean / K; see
    the module docstring), both distributions computed with ``log_softmax``.
    ``'hard'``: ``(1 - alpha) * base + alpha * CE(Z_dist, argmax Z_t)``; ``alpha = 0.5`` is Eq. 3.

    The teacher is put in eval mode (BatchNorm uses its running statistics and never updates them),
    its parameters are frozen (``requires_grad_(False)``, a side effect on the module passed in),
    and it runs under ``torch.no_grad()`` on every call, so no gradient ever reaches it. It is a
    registered submodule, so ``loss.to(device)`` moves it.

    Args:
        base_criterion: ``(logits (B, K), labels (B,)) -> scalar``, e.g. ``nn.CrossEntropyLoss(label_smoothing=0.1)``.
        teacher: ``images (B, C, H, W) -> logits (B, K)``; may be None only for ``'none'``.
        distillation_type: ``'none'``, ``'soft'`` or ``'hard'``.
        alpha: weight of the distillation term, in [0, 1].
        tau: softmax temperature of the soft term (> 0; unused by ``'hard'``).
        num_classes: the student's K; if given and the teacher has a ``num_classes`` attribute
            (every timm model does), a mismatch raises at construction rather than at the first step.
        kl_reduction: ``'batchmean'`` (default) or ``'deit'`` (see above); used by ``'soft'`` only.

    The distillation term uses every image of the batch; the supervised term is whatever
    ``base_criterion`` makes of the labels (:class:`MaskedCrossEntropy` skips unlabelled images).

    Shapes:
        forward(images (B, C, H, W), outputs (B, K) or pair of (B, K), labels (B,)) -> scalar.
        ``terms(...)`` -> dict of scalars: ``loss``, ``base_loss``, ``distill_loss`` and, when the
        teacher ran, ``teacher_agree`` (fraction of the batch where the student's prediction, the
        average of its two outputs, has the teacher's argmax).

    Raises:
        ValueError: unknown ``distillation_type`` or ``kl_reduction``; ``alpha`` outside [0, 1];
            ``tau <= 0``; no teacher for ``'soft'``/``'hard'``; a teacher whose number of classes differs from the student's
            (at construction when both are known, else at the first call).

    Source: Touvron et al. 2021, arXiv:2012.12877, Eq. 2-3 and Sec. 4.
    """

    def __init__(
        self,
        base_criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        teacher: Optional[nn.Module],
        distillation_type: str = "hard",
        alpha: float = 0.5,
        tau: float = 1.0,
        num_classes: Optional[int] = None,
        kl_reduction: str = "batchmean",
    ) -> None:
        super().__init__()
        if distillation_type not in DISTILLATION_TYPES:
            raise ValueError(f"distillation_type must be one of {DISTILLATION_TYPES}, got {distillation_type!r}")
        if kl_reduction not in KL_REDUCTIONS:
            raise ValueError(f"kl_reduction must be one of {KL_REDUCTIONS} ('deit': DeiT's code, sum / (B * K)), "
                             f"got {kl_reduction!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha weighs the distillation term against the label term and must be in [0, 1], got {alpha}")
        if not tau > 0.0:
            raise ValueError(f"tau is a softmax temperature and must be > 0, got {tau}; DeiT's soft distillation uses 3.0")
        if distillation_type != "none" and teacher is None:
            raise ValueError(f"distillation_type={distillation_type!r} needs a teacher; pass teacher=... or use 'none'")
        teacher_k = getattr(teacher, "num_classes", None) if teacher is not None else None
        if num_classes is not None and isinstance(teacher_k, int) and teacher_k != num_classes:
            raise ValueError(self._mismatch_message(teacher_k, num_classes))
        self.base_criterion = base_criterion
        self.teacher = teacher
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)
        self.distillation_type = distillation_type
        self.alpha = float(alpha)
        self.tau = float(tau)
        self.kl_reduction = kl_reduction

    @staticmethod
    def _mismatch_message(teacher_k: int, student_k: int) -> str:
        return (
            f"the teacher predicts {teacher_k} classes but the student predicts {student_k}; distillation "
            f"compares them class by class, so build the teacher for the student's label set, e.g. "
            f"timm.create_model(..., num_classes={student_k}), and train it on the same data"
        )

    @torch.no_grad()
    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's logits, in eval mode and without a graph. Shapes: (B, C, H, W) -> (B, K_t)."""
        if self.teacher is None:
            raise ValueError("this DistillationLoss has no teacher")
        self.teacher.eval()  # even if someone called .train() on the loss or the teacher
        return self.teacher(images)

    def terms(self, images: torch.Tensor, outputs: Outputs, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The loss and its parts (see the class docstring). Shapes: as ``forward``."""
        z_cls, z_dist = split_outputs(outputs)  # (B, K), (B, K)
        base = self.base_criterion(z_cls, labels)
        if self.distillation_type == "none":
            zero = base.new_zeros(())
            return {"loss": base, "base_loss": base.detach(), "distill_loss": zero}

        z_t = self.teacher_logits(images)  # (B, K), no graph
        if z_t.shape[-1] != z_dist.shape[-1]:
            raise ValueError(self._mismatch_message(z_t.shape[-1], z_dist.shape[-1]))
        if self.distillation_type == "soft":
            T = self.tau
            log_p_s = F.log_softmax(z_dist / T, dim=-1)  # (B, K)
            log_p_t = F.log_softmax(z_t / T, dim=-1)  # (B, K)
            # KL(p_t || p_s) = sum_k p_t (log p_t - log p_s), averaged over the batch ("batchmean"),
            # or summed over batch and classes and divided by B * K (DeiT's code: batchmean / K).
            if self.kl_reduction == "batchmean":
                kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
            else:
                kl = F.kl_div(log_p_s, log_p_t, reduction="sum", log_target=True) / log_p_s.numel()
            distill = kl * (T * T)
        else:  # hard
            distill = F.cross_entropy(z_dist, z_t.argmax(dim=-1))
        loss = (1.0 - self.alpha) * base + self.alpha * distill
        with torch.no_grad():
            pred = ((z_cls + z_dist) / 2).argmax(dim=-1)  # (B,) the student's test-time decision
            agree = (pred == z_t.argmax(dim=-1)).float().mean()
        return {"loss": loss, "base_loss": base.detach(), "distill_loss": distill.detach(), "teacher_agree": agree}

    def forward(self, images: torch.Tensor, outputs: Outputs, labels: torch.Tensor) -> torch.Tensor:
        return self.terms(images, outputs, labels)["loss"]

    def extra_repr(self) -> str:
        return (f"distillation_type={self.distillation_type!r}, alpha={self.alpha}, tau={self.tau}, "
                f"kl_reduction={self.kl_reduction!r}")


def deit_step(criterion: DistillationLoss) -> Callable[[nn.Module, object], StepOutput]:
    """A ``step_fn`` for :func:`survey_lib.train.fit` that trains a student with ``criterion``.

    The training accuracy is computed on the average of the two outputs (the test-time prediction),
    over the labelled images of each batch only (labels ``UNLABELLED`` are skipped); the loss parts,
    the batch agreement with the teacher and the fraction of labelled images are logged as
    per-epoch metrics (``base_loss``, ``distill_loss``, ``teacher_agree``, ``labelled``).
    """

    def step(model: nn.Module, batch) -> StepOutput:
        x, y = batch
        outputs = model(x)  # (B, K) or pair of (B, K)
        parts = criterion.terms(x, outputs, y)
        z_cls, z_dist = split_outputs(outputs)
        keep = y != UNLABELLED  # (B,)
        logits = ((z_cls + z_dist) / 2).detach()[keep]  # (B_labelled, K)
        metrics = {k: float(v) for k, v in parts.items() if k != "loss"}
        metrics["labelled"] = float(keep.float().mean())
        return StepOutput(parts["loss"], logits, y[keep], metrics)

    return step
