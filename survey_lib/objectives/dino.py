"""DINO: self-distillation with no labels (and DinoNAT: the same objective with a NAT backbone).

Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021,
arXiv:2104.14294. What the code implements, by section of the paper:

    Sec. 3.1, Eq. 1   P_s(x)^(i) = softmax(g_s(x) / tau_s)^(i)      -> ``DINOLoss`` (student side)
    Sec. 3.1, Eq. 2   min_s H(P_t(x), P_s(x)),  H(a, b) = -a log b   -> ``DINOLoss`` (cross-entropy)
    Sec. 3.1, Eq. 3   sum_{x in {x1g, x2g}} sum_{x' in V, x' != x} H(P_t(x), P_s(x'))
                                                                    -> ``DINOLoss.forward`` (all pairs)
    Sec. 3.1, "multi-crop": 2 global + several local views; the teacher sees global views only
                                                                    -> ``survey_lib.data.views``, ``MultiCropWrapper``
    Sec. 3.1, "Teacher network": theta_t <- l theta_t + (1 - l) theta_s, l cosine 0.996 -> 1
                                                                    -> ``DINO.on_train_step_end``
    Sec. 3.1, "Avoiding collapse", Eq. 4: g_t(x) <- g_t(x) + c,  c <- m c + (1 - m) mean_B g_t
              (the code *subtracts* c, as DINO's ``main_dino.py`` does) -> ``DINOLoss.update_center``
    Sec. 3.2, "Network architecture": 3-layer MLP head (hidden 2048), bottleneck 256, L2
              normalisation, weight-normalised last layer (K = 65,536)  -> ``DINOHead``
    Sec. 5.3 / Fig. 7: collapse diagnostics - target entropy and KL(P_t || P_s) -> ``collapse_metrics``

DinoNAT (the Russian DinoNAT conference paper) is this objective with ``survey_lib.models.nat.NAT`` as both student and
teacher backbone; nothing here depends on the backbone beyond ``embed(x) -> (B, D)``. The source's
three errors are *not* copied; two are reproducible as switches for the notebook's experiments:
``DINOLoss(variant="source_sign")`` minimises ``+sum t log s`` (its Algorithm 1 drops the minus sign),
and ``DINO(teacher_update="epoch")`` updates the teacher once per epoch (its prose) instead of every
step (its own Algorithm 1 and DINO). Its attention formula without V concerns the backbone, not this file.

Deviations from the paper (CPU-sized defaults for 32 px digits; the objective is the paper's):
    * head: hidden 256, bottleneck 64, K = 512 prototypes (paper: 2048, 256, 65,536); BatchNorm in
      the head is on in the digits recipe (DINO's ``use_bn_in_head`` option, off by default there).
      Without it a tiny ViT's CLS feature at initialisation barely depends on the image and the
      teacher collapsed to uniform in an early prototype of this project.
    * crops (``survey_lib.data.views``, sizes in ``survey_lib.recipes.dino``): global 32 px (scale
      0.4-1), local 16 px (scale 0.1-0.4) of 32 px digits (paper 224 / 96 px, scales 0.4-1 /
      0.05-0.4); no flips and no photometric augmentation for digits (see the recipe).
    * teacher momentum 0.96 -> 1 (paper 0.996 -> 1): with ~20 steps per epoch and a few dozen
      epochs, 0.996 leaves the teacher near its random initialisation.
    * the weight decay is constant (paper: cosine 0.04 -> 0.4); the last layer is not frozen during
      the first epoch; the loss is the *mean* over pairs and samples (the equation is a sum; DINO's
      code averages too) - a constant factor.
    * ``torch.distributed.all_reduce`` of the batch centre runs only when a process group is
      initialised, so the loss works in a single process (DINO's code always calls it).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..train import StepOutput

__all__ = [
    "DINOHead",
    "DINOLoss",
    "MultiCropWrapper",
    "DINO",
    "DINOForward",
    "collapse_metrics",
    "teacher_momentum",
    "dino_step",
    "build_dino",
]


# ---------------------------------------------------------------------------------------------
# Projection head (Sec. 3.2, "Network architecture")
# ---------------------------------------------------------------------------------------------
class DINOHead(nn.Module):
    """MLP projection head with an L2-normalised bottleneck and a weight-normalised last layer.

    ``x -> [Linear, (BN), GELU] x (nlayers - 1) -> Linear(bottleneck) -> L2 normalise ->
    weight-normed Linear(K, no bias)``. With ``norm_last_layer`` the weight-norm gain g is fixed to 1,
    so each of the K output rows is a unit vector and every logit is a cosine similarity in [-1, 1].

    Args:
        in_dim: D of the backbone feature.  out_dim: K, the number of prototypes.
        use_bn: BatchNorm after each hidden Linear (DINO's ``use_bn_in_head``).
        norm_last_layer: freeze the weight-norm gain at 1 (DINO's default True).
        nlayers: Linear layers before the bottleneck output (>= 1).
        hidden_dim: width of the hidden layers.  bottleneck_dim: width before the last layer.

    Shapes: (B, D) -> (B, K).  ``forward_bottleneck``: (B, D) -> (B, bottleneck_dim), unit norm.

    Raises:
        ValueError: ``nlayers < 1`` or non-positive widths.

    Source: Caron et al. 2021, arXiv:2104.14294, Sec. 3.2; Salimans & Kingma 2016 (weight
    normalisation), arXiv:1602.07868.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        use_bn: bool = False,
        norm_last_layer: bool = True,
        nlayers: int = 3,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
    ) -> None:
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"nlayers must be >= 1, got {nlayers}")
        if min(in_dim, out_dim, hidden_dim, bottleneck_dim) <= 0:
            raise ValueError(f"widths must be positive, got in={in_dim} out={out_dim} hidden={hidden_dim} "
                             f"bottleneck={bottleneck_dim}")
        if nlayers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers: List[nn.Module] = [nn.Linear(in_dim, hidden_dim)]
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            for _ in range(nlayers - 2):
                layers.append(nn.Linear(hidden_dim, hidden_dim))
                if use_bn:
                    layers.append(nn.BatchNorm1d(hidden_dim))
                layers.append(nn.GELU())
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        # Weight normalisation: W = g * V / ||V|| row by row; parametrizations store g as original0
        # (K, 1) and V as original1 (K, bottleneck_dim).
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        with torch.no_grad():
            self.last_layer.parametrizations.weight.original0.fill_(1.0)
        if norm_last_layer:
            self.last_layer.parametrizations.weight.original0.requires_grad = False
        self.use_bn, self.norm_last_layer, self.out_dim = use_bn, norm_last_layer, out_dim

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward_bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        """The L2-normalised bottleneck feature. Shapes: (B, D) -> (B, bottleneck_dim)."""
        return F.normalize(self.mlp(x), dim=-1, p=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(self.forward_bottleneck(x))  # (B, K)


# ---------------------------------------------------------------------------------------------
# The loss (Eq. 1-4)
# ---------------------------------------------------------------------------------------------
class DINOLoss(nn.Module):
    """DINO's cross-entropy between a centred, sharpened teacher and the student, over all view pairs.

    For teacher view i (a global crop) and student view v != i:
    ``P_t = softmax((g_t - c) / tau_t)`` (stop-gradient), ``log P_s = log_softmax(g_s / tau_s)``,
    ``H = -sum_k P_t[k] log P_s[k]``; the loss is the mean of H over samples and over the
    ``n_global * ncrops - n_global`` pairs (Eq. 3 up to a constant factor).

    Side effect: in training mode every call updates the centre buffer,
    ``center <- m * center + (1 - m) * mean over the batch of the raw teacher outputs`` (the
    un-centred g_t of all global views), with the batch mean averaged over processes by
    ``torch.distributed.all_reduce`` only if a process group is initialised. In eval mode the
    centre is left unchanged. The centre is a persistent buffer (saved in checkpoints).

    Args:
        out_dim: K.  ncrops: views per image given to the student (globals first).
        warmup_teacher_temp: tau_t at epoch 0.  teacher_temp: tau_t after the warm-up.
        warmup_teacher_temp_epochs: epochs of the linear warm-up (``np.linspace`` of DINO).
        nepochs: training epochs (length of the temperature schedule).
        student_temp: tau_s.  center_momentum: m.
        n_global_crops: teacher views (>= 2), the first ``n_global_crops`` student views.
        variant: ``"dino"`` (minimise H, the paper) or ``"source_sign"`` (minimise +sum t log s, the
            sign error of the DinoNAT paper's Algorithm 1, i.e. *maximise* H; for the experiment only).
        centering: subtract the centre (ablation switch; the centre is still tracked when off).
        sharpening: use tau_t; when off the teacher uses tau_s, i.e. it is not sharper than the
            student (ablation switch).

    Shapes:
        student_output: (ncrops * B, K) logits, crop-major (all B images of view 0, then view 1, ...).
        teacher_output: (n_global_crops * B, K) logits, same order.  Returns a scalar.

    Raises:
        ValueError: fewer than 2 global crops, ``ncrops < n_global_crops``, an unknown variant, a
            warm-up longer than training, or inputs whose shapes do not match K / ncrops / B.

    Source: Caron et al. 2021, arXiv:2104.14294, Eq. 1-4 and Algorithm 1.
    """

    def __init__(
        self,
        out_dim: int,
        ncrops: int,
        warmup_teacher_temp: float,
        teacher_temp: float,
        warmup_teacher_temp_epochs: int,
        nepochs: int,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        n_global_crops: int = 2,
        variant: str = "dino",
        centering: bool = True,
        sharpening: bool = True,
    ) -> None:
        super().__init__()
        if n_global_crops < 2:
            raise ValueError(f"DINO needs at least 2 global crops, got n_global_crops={n_global_crops}")
        if ncrops < n_global_crops:
            raise ValueError(f"ncrops={ncrops} must count the {n_global_crops} global crops plus the local ones")
        if variant not in ("dino", "source_sign"):
            raise ValueError(f"variant must be 'dino' or 'source_sign', got {variant!r}")
        if not 0 <= warmup_teacher_temp_epochs <= nepochs:
            raise ValueError(f"warmup_teacher_temp_epochs={warmup_teacher_temp_epochs} must be in [0, nepochs={nepochs}]")
        if min(warmup_teacher_temp, teacher_temp, student_temp) <= 0:
            raise ValueError("temperatures must be positive")
        self.out_dim, self.ncrops, self.n_global_crops = out_dim, ncrops, n_global_crops
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.nepochs, self.variant, self.centering, self.sharpening = nepochs, variant, centering, sharpening
        self.register_buffer("center", torch.zeros(1, out_dim))  # (1, K)
        # tau_t per epoch: linear warm-up, then constant (DINO's np.concatenate((linspace, ones))).
        schedule = torch.cat([
            torch.linspace(warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs, dtype=torch.float64),
            torch.full((nepochs - warmup_teacher_temp_epochs,), float(teacher_temp), dtype=torch.float64),
        ])
        self.register_buffer("teacher_temp_schedule", schedule, persistent=False)

    def teacher_temperature(self, epoch: int) -> float:
        """tau_t at ``epoch`` (0-based); epochs past the schedule keep its last value."""
        if not self.sharpening:
            return self.student_temp
        if len(self.teacher_temp_schedule) == 0:
            raise ValueError("the schedule is empty: nepochs is 0")
        return float(self.teacher_temp_schedule[min(max(int(epoch), 0), len(self.teacher_temp_schedule) - 1)])

    def _check(self, student_output: torch.Tensor, teacher_output: torch.Tensor) -> int:
        if student_output.ndim != 2 or teacher_output.ndim != 2:
            raise ValueError(f"expected 2-D logits, got student {tuple(student_output.shape)}, "
                             f"teacher {tuple(teacher_output.shape)}")
        if student_output.shape[1] != self.out_dim or teacher_output.shape[1] != self.out_dim:
            raise ValueError(f"logits must have out_dim={self.out_dim} columns, got student "
                             f"{student_output.shape[1]}, teacher {teacher_output.shape[1]}")
        if student_output.shape[0] % self.ncrops != 0:
            raise ValueError(f"student_output has {student_output.shape[0]} rows, not a multiple of ncrops={self.ncrops}")
        B = student_output.shape[0] // self.ncrops
        if teacher_output.shape[0] != self.n_global_crops * B:
            raise ValueError(f"teacher_output has {teacher_output.shape[0]} rows; expected n_global_crops * B = "
                             f"{self.n_global_crops} * {B} (the teacher sees the global crops only)")
        return B

    def teacher_probs(self, teacher_output: torch.Tensor, epoch: int) -> torch.Tensor:
        """Centred, sharpened, detached teacher distribution. Shapes: (n_global * B, K) -> same."""
        t = teacher_output.detach()
        if self.centering:
            t = t - self.center
        return F.softmax(t / self.teacher_temperature(epoch), dim=-1)

    def forward(self, student_output: torch.Tensor, teacher_output: torch.Tensor, epoch: int = 0,
                return_metrics: bool = False) -> Union[torch.Tensor, Tuple[torch.Tensor, Dict[str, float]]]:
        self._check(student_output, teacher_output)
        log_ps = F.log_softmax(student_output / self.student_temp, dim=-1).chunk(self.ncrops)  # ncrops x (B, K)
        pt = self.teacher_probs(teacher_output, epoch).chunk(self.n_global_crops)  # n_global x (B, K)
        total, n_terms = student_output.new_zeros(()), 0
        for i, q in enumerate(pt):
            for v, lp in enumerate(log_ps):
                if v == i:  # never the same view for teacher and student
                    continue
                total = total + torch.sum(-q * lp, dim=-1).mean()
                n_terms += 1
        loss = total / n_terms
        if self.variant == "source_sign":
            loss = -loss  # S1's Algorithm 1: (t * log(s)).sum(dim=1).mean(), minimised
        metrics = collapse_metrics(student_output.detach(), pt, self.ncrops, self.student_temp) if return_metrics else None
        if self.training:
            self.update_center(teacher_output)
        return (loss, metrics) if return_metrics else loss

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor) -> None:
        """EMA of the batch mean of the raw teacher logits (Eq. 4); all-reduced only under torch.distributed.

        Shapes: teacher_output (n_global * B, K).
        """
        batch_center = teacher_output.detach().sum(dim=0, keepdim=True)  # (1, K)
        n = teacher_output.shape[0]
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_center)
            n = n * dist.get_world_size()
        batch_center = batch_center / n
        self.center.mul_(self.center_momentum).add_(batch_center * (1.0 - self.center_momentum))

    def extra_repr(self) -> str:
        return (f"out_dim={self.out_dim}, ncrops={self.ncrops}, n_global_crops={self.n_global_crops}, "
                f"student_temp={self.student_temp}, center_momentum={self.center_momentum}, variant={self.variant!r}, "
                f"centering={self.centering}, sharpening={self.sharpening}")


@torch.no_grad()
def collapse_metrics(student_output: torch.Tensor, teacher_probs: Sequence[torch.Tensor], ncrops: int,
                     student_temp: float) -> Dict[str, float]:
    """Collapse diagnostics of DINO Sec. 5.3 / Fig. 7, as floats.

    * ``teacher_entropy``: mean over samples of H(P_t) (nats). ``log K`` = uniform collapse;
      near 0 with a low ``teacher_marginal_entropy`` = one-prototype collapse.
    * ``teacher_marginal_entropy``: H of the batch-mean P_t; ``log K`` when prototypes are used evenly.
    * ``kl``: mean over the loss's view pairs of KL(P_t || P_s); 0 means the student copies the
      teacher, which in a collapsed run happens trivially.

    Shapes: student_output (ncrops * B, K) logits; teacher_probs: n_global tensors (B, K).
    """
    log_ps = F.log_softmax(student_output.float() / student_temp, dim=-1).chunk(ncrops)  # ncrops x (B, K)
    ent, kls = [], []
    for i, q in enumerate(teacher_probs):
        log_q = q.clamp_min(1e-30).log()
        ent.append(-(q * log_q).sum(-1).mean())
        for v, lp in enumerate(log_ps):
            if v != i:
                kls.append((q * (log_q - lp)).sum(-1).mean())
    marginal = torch.cat(list(teacher_probs)).mean(0)  # (K,)
    return {
        "teacher_entropy": float(torch.stack(ent).mean()),
        "teacher_marginal_entropy": float(-(marginal * marginal.clamp_min(1e-30).log()).sum()),
        "kl": float(torch.stack(kls).mean()),
    }


# ---------------------------------------------------------------------------------------------
# Backbone + head over a list of crops; the student/teacher pair
# ---------------------------------------------------------------------------------------------
class MultiCropWrapper(nn.Module):
    """Run a backbone on crops of different sizes (one pass per run of equal sizes), then the head.

    Args:
        backbone: any module with ``embed(x) -> (B, D)`` (ViT: the CLS token; NAT: pooled tokens),
            or a plain callable module returning (B, D).
        head: maps (B, D) -> (B, K).

    Shapes:
        crops: a list of tensors (B, C, s_i, s_i) (or one tensor) ->
        (features (len(crops) * B, D), logits (len(crops) * B, K)), crop-major.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone feature of one batch. Shapes: (B, C, H, W) -> (B, D)."""
        fn = getattr(self.backbone, "embed", None)
        return fn(x) if fn is not None else self.backbone(x)

    def forward(self, crops: Union[torch.Tensor, Sequence[torch.Tensor]]) -> Tuple[torch.Tensor, torch.Tensor]:
        if isinstance(crops, torch.Tensor):
            crops = [crops]
        feats, start = [], 0
        while start < len(crops):  # group consecutive crops of equal size into one forward pass
            end = start
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            feats.append(self.embed(torch.cat(list(crops[start:end]))))  # ((end - start) * B, D)
            start = end
        z = torch.cat(feats)  # (len(crops) * B, D)
        return z, self.head(z)


def teacher_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """Cosine schedule of the teacher momentum, ``final - (final - base) * (cos(pi * step / total) + 1) / 2``.

    ``step`` 0 gives ``base``; ``step == total_steps`` gives ``final`` (DINO: 0.996 -> 1).
    """
    return final - (final - base) * (math.cos(math.pi * step / max(1, total_steps)) + 1.0) / 2.0


@dataclass
class DINOForward:
    """Everything one DINO forward pass produced (subclasses add their own losses from it).

    Attributes:
        loss: the total loss to minimise (``sum(weight * losses[name])``).
        losses: named scalar losses (``{"dino": ...}`` plus a subclass's).
        student_feats: (ncrops * B, D) backbone features of every view, crop-major.
        student_out: (ncrops * B, K) student logits.  teacher_feats: (n_global * B, D).
        teacher_out: (n_global * B, K) teacher logits (no graph).
        metrics: floats for the history (collapse diagnostics, temperature, momentum).
    """

    loss: torch.Tensor
    losses: Dict[str, torch.Tensor]
    student_feats: torch.Tensor
    student_out: torch.Tensor
    teacher_feats: torch.Tensor
    teacher_out: torch.Tensor
    metrics: Dict[str, float] = field(default_factory=dict)


class DINO(nn.Module):
    """Student and EMA teacher (backbone + head each) with the DINO loss: one module for ``fit``.

    The teacher starts as a copy of the student, has ``requires_grad=False`` everywhere and is only
    changed by :meth:`on_train_step_end` (``survey_lib.train.fit`` calls it after every optimiser
    step): ``theta_t <- m theta_t + (1 - m) theta_s`` with the cosine momentum schedule
    :func:`teacher_momentum` from ``momentum_teacher`` to ``final_momentum_teacher``. Only
    parameters are averaged; the teacher's buffers (BatchNorm statistics) are its own, as in DINO.
    The loss's centre and the step counter are buffers, so a checkpoint resumes exactly.

    Composability (the multi-task framework reuses this class): :meth:`compute` returns a
    :class:`DINOForward` with the backbone features of every view; a subclass overrides
    :meth:`extra_losses` (returning ``{name: loss}``) and sets ``loss_weights``; extra heads are
    ordinary submodules of the subclass (or pass ``extra_heads``, a dict stored as a ModuleDict).

    Args:
        backbone: the student backbone (``embed(x) -> (B, D)``); the teacher gets a deep copy.
        head: the student head (e.g. :class:`DINOHead`); copied for the teacher.
        loss: a :class:`DINOLoss` whose ``ncrops`` / ``n_global_crops`` match the data.
        momentum_teacher: base teacher momentum.  final_momentum_teacher: its value at the end.
        teacher_update: ``"step"`` (DINO and S1's Algorithm 1) or ``"epoch"`` (S1's prose: the
            teacher is frozen for an epoch, then updated once with the momentum of that step).
        extra_heads: optional ``{name: module}`` for subclasses' extra objectives.
        loss_weights: weight of each named loss in the total (default 1.0; ``"dino"`` included).

    Shapes:
        forward(crops): crops a list of ``ncrops`` tensors (B, C, s, s), globals first -> DINOForward.

    Raises:
        ValueError: unknown ``teacher_update``; in ``on_train_step_end``, a total step count that is
            not a whole number of the loss's ``nepochs`` epochs; in ``forward``, a wrong number of crops.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        loss: DINOLoss,
        momentum_teacher: float = 0.996,
        final_momentum_teacher: float = 1.0,
        teacher_update: str = "step",
        extra_heads: Optional[Dict[str, nn.Module]] = None,
        loss_weights: Optional[Dict[str, float]] = None,
    ) -> None:
        super().__init__()
        if teacher_update not in ("step", "epoch"):
            raise ValueError(f"teacher_update must be 'step' or 'epoch', got {teacher_update!r}")
        if not 0.0 <= momentum_teacher <= final_momentum_teacher <= 1.0:
            raise ValueError(f"need 0 <= momentum_teacher <= final_momentum_teacher <= 1, got "
                             f"{momentum_teacher}, {final_momentum_teacher}")
        self.student = MultiCropWrapper(backbone, head)
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.loss = loss
        self.momentum_teacher, self.final_momentum_teacher = momentum_teacher, final_momentum_teacher
        self.teacher_update = teacher_update
        self.extra_heads = nn.ModuleDict(extra_heads or {})
        self.loss_weights = dict(loss_weights or {})
        self.register_buffer("step_count", torch.zeros((), dtype=torch.long))  # optimiser steps done
        self.register_buffer("total_steps", torch.zeros((), dtype=torch.long))  # known after the first step
        self.last_momentum = momentum_teacher

    # -- helpers ---------------------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """The backbone's exclusions (position embedding, CLS token), matched by last name in ``fit``."""
        fn = getattr(self.student.backbone, "no_weight_decay", None)
        return set(fn()) if fn is not None else set()

    @property
    def epoch(self) -> int:
        """Current 0-based epoch, from the step counter (0 before the first step)."""
        total = int(self.total_steps)
        if total == 0:
            return 0
        return int(int(self.step_count) * self.loss.nepochs // total)

    def teacher_embed(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher backbone's feature, the one DINO evaluates. Shapes: (B, C, H, W) -> (B, D)."""
        return self.teacher.embed(x)

    def student_embed(self, x: torch.Tensor) -> torch.Tensor:
        """The student backbone's feature. Shapes: (B, C, H, W) -> (B, D)."""
        return self.student.embed(x)

    # -- forward ---------------------------------------------------------------------------------
    def compute(self, crops: Sequence[torch.Tensor], **targets: Any) -> DINOForward:
        """Run student on all views, teacher on the global views, and the DINO loss (with diagnostics).

        ``targets`` (e.g. labels, rotation labels) are passed unchanged to :meth:`extra_losses`.

        Shapes: crops: ``ncrops`` tensors (B, C, s, s), the ``n_global_crops`` global views first ->
        :class:`DINOForward` (student (ncrops * B, K) and teacher (n_global * B, K) logits, crop-major).
        """
        if len(crops) != self.loss.ncrops:
            raise ValueError(f"got {len(crops)} crops but the loss expects ncrops={self.loss.ncrops} "
                             f"({self.loss.n_global_crops} global first, then local)")
        ng = self.loss.n_global_crops
        with torch.no_grad():
            t_feats, t_out = self.teacher(list(crops[:ng]))  # (ng * B, D), (ng * B, K)
        s_feats, s_out = self.student(list(crops))  # (ncrops * B, D), (ncrops * B, K)
        dino_loss, metrics = self.loss(s_out, t_out, epoch=self.epoch, return_metrics=True)
        metrics["teacher_temp"] = self.loss.teacher_temperature(self.epoch)
        metrics["momentum"] = self.last_momentum
        out = DINOForward(dino_loss, {"dino": dino_loss}, s_feats, s_out, t_feats, t_out, metrics)
        extra = self.extra_losses(out, crops, **targets)
        out.losses.update(extra)
        out.loss = sum(self.loss_weights.get(k, 1.0) * v for k, v in out.losses.items())
        for k, v in out.losses.items():
            if k != "dino" or extra:
                out.metrics[f"loss_{k}"] = float(v.detach())
        return out

    def extra_losses(self, out: DINOForward, crops: Sequence[torch.Tensor], **targets: Any) -> Dict[str, torch.Tensor]:
        """Hook for subclasses: further named losses from ``out`` and the ``targets`` given to
        :meth:`compute` (e.g. a rotation head on the student's features and the rotation labels)."""
        return {}

    def forward(self, crops: Sequence[torch.Tensor]) -> DINOForward:
        return self.compute(crops)

    # -- teacher update --------------------------------------------------------------------------
    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """``theta_t <- momentum * theta_t + (1 - momentum) * theta_s`` for every parameter pair."""
        for ps, pt in zip(self.student.parameters(), self.teacher.parameters()):
            pt.mul_(momentum).add_(ps.detach(), alpha=1.0 - momentum)

    @torch.no_grad()
    def on_train_step_end(self, step: int, total_steps: int) -> None:
        """Called by ``fit`` after each optimiser step (0-based ``step``): EMA teacher update.

        ``"step"``: update with momentum ``teacher_momentum(step, total_steps)``. ``"epoch"``: update only
        after the last step of each epoch, with the momentum of that step.
        """
        nepochs = self.loss.nepochs
        if total_steps % nepochs != 0:
            raise ValueError(f"total_steps={total_steps} is not a whole number of the loss's nepochs={nepochs}; "
                             f"build DINOLoss with nepochs equal to TrainConfig.epochs")
        self.total_steps.fill_(total_steps)
        self.step_count.fill_(step + 1)
        m = teacher_momentum(step, total_steps, self.momentum_teacher, self.final_momentum_teacher)
        self.last_momentum = m
        steps_per_epoch = total_steps // nepochs
        if self.teacher_update == "step" or (step + 1) % steps_per_epoch == 0:
            self.update_teacher(m)


def dino_step(model: DINO, batch: Any) -> StepOutput:
    """``step_fn`` for :func:`survey_lib.train.fit`: batch ``[crops, labels]`` (labels ignored).

    Returns the total loss and the collapse diagnostics as ``metrics`` (averaged per epoch by ``fit``).

    Shapes: batch ``[list of ncrops tensors (B, C, s, s), labels (B,)]`` (or the list alone) ->
    StepOutput with a scalar loss.
    """
    crops = batch[0] if isinstance(batch, (list, tuple)) and isinstance(batch[0], (list, tuple)) else batch
    out = model(crops)
    return StepOutput(loss=out.loss, metrics=out.metrics)


def build_dino(backbone: nn.Module, embed_dim: int, epochs: int, out_dim: int = 512, n_local_crops: int = 4,
               use_bn: bool = True, hidden_dim: int = 256, bottleneck_dim: int = 64, norm_last_layer: bool = True,
               momentum_teacher: float = 0.996, teacher_update: str = "step", **loss_kwargs) -> DINO:
    """A :class:`DINO` around ``backbone`` with a :class:`DINOHead` and a :class:`DINOLoss` for 2 global crops.

    ``loss_kwargs`` go to :class:`DINOLoss` (``warmup_teacher_temp``, ``teacher_temp``,
    ``warmup_teacher_temp_epochs``, ``student_temp``, ``center_momentum``, ``variant``, ``centering``,
    ``sharpening``); temperatures default to 0.04 without warm-up.
    """
    head = DINOHead(embed_dim, out_dim, use_bn=use_bn, norm_last_layer=norm_last_layer,
                    hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim)
    kw = dict(warmup_teacher_temp=0.04, teacher_temp=0.04, warmup_teacher_temp_epochs=0)
    kw.update(loss_kwargs)
    loss = DINOLoss(out_dim, ncrops=2 + n_local_crops, nepochs=epochs, **kw)
    return DINO(backbone, head, loss, momentum_teacher=momentum_teacher, teacher_update=teacher_update)
