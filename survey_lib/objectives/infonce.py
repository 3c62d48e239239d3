"""Contrastive objectives: CLIP's symmetric InfoNCE and SimCLR's NT-Xent.

Sources:
    Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision"
    (CLIP), arXiv:2103.00020, Sec. 2.3 and Fig. 3 (the numpy-like pseudocode of the loss).
    Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations"
    (SimCLR), arXiv:2002.05709, Sec. 2.1, Eq. 1 and Algorithm 1 (NT-Xent).
    van den Oord et al. 2018, "Representation Learning with Contrastive Predictive Coding",
    arXiv:1807.03748, Eq. 4 (InfoNCE, the common ancestor).

Both losses are a softmax cross-entropy over a matrix of cosine similarities divided by a
temperature tau: every row holds one positive and many negatives, and the loss asks the positive to
win. CLIP's matrix is image x text (N x N, positives on the diagonal) and is read both ways; SimCLR's
is view x view (2N x 2N, the diagonal removed, the positive of view i is the other view of the same
image).

The Ukrainian review of vision transformers and cross-modal learning writes CLIP's loss (its Eq. 4) exactly as below, but its
InfoNCE (its Eq. 5) puts in the denominator only the positive and the *same* view's negatives
``s(h_i, h_j), j != i``; SimCLR's NT-Xent also uses the other view's negatives ``s(h_i, h'_j)``,
2N - 2 negatives in all. :func:`infonce_review_eq5` implements the review's form so the notebook can
show the difference; :class:`NTXentLoss` is SimCLR's.

Both losses are single-process ``nn.Module``s: no ``all_gather`` (open_clip's ``ClipLoss`` gathers
features across ranks when ``world_size > 1``; with one process both compute the same thing, which
``tests/test_clip.py`` checks forward and backward). Every log-probability comes from
``F.cross_entropy`` (a fused log-softmax), never ``log(softmax + eps)``.

Deviations from the papers:
    * SimCLR's default temperature here is 0.2 (the paper's best for its batch sizes is 0.1 to 0.5,
      Table 5 and Appendix B.9); CLIP's initial temperature 0.07 (logit scale ln(1/0.07) = 2.659)
      and cap of 100 on the logit scale are the paper's.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..train import StepOutput

__all__ = [
    "MAX_LOGIT_SCALE",
    "clip_logits",
    "ClipLoss",
    "NTXentLoss",
    "infonce_review_eq5",
    "ReviewEq5Loss",
    "clip_step",
    "SimCLR",
    "simclr_step",
    "duplicate_loss_floor",
]

#: ln(100): the stored logit scale is clamped to [0, ln 100] before each step (CLIP Sec. 2.5; the
#: model's own forward caps the multiplier at the same value, ``survey_lib.models.clip.MAX_LOGIT_SCALE``).
MAX_LOGIT_SCALE: float = math.log(100.0)


def _check_pair(a: torch.Tensor, b: torch.Tensor, names: Tuple[str, str]) -> None:
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(
            f"{names[0]} and {names[1]} must be 2-D (B, D) feature matrices, got shapes "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"batch sizes differ: {a.shape[0]} {names[0]} vs {b.shape[0]} {names[1]}; a contrastive batch "
            f"needs exactly one {names[1][:-1]} per {names[0][:-1]} (row i of each is a positive pair)"
        )
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"feature widths differ: {names[0]} have D={a.shape[1]}, {names[1]} D={b.shape[1]}; project both "
            f"to the same embed_dim"
        )
    if a.shape[0] == 0:
        raise ValueError(f"empty batch: got 0 {names[0]}")


def _checked_temperature(temperature: float) -> float:
    """``temperature`` if it is positive; ValueError otherwise (the contrastive losses divide by it)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return temperature


def clip_logits(image_features: torch.Tensor, text_features: torch.Tensor,
                logit_scale: Union[torch.Tensor, float]) -> Tuple[torch.Tensor, torch.Tensor]:
    """The two logit matrices of CLIP: ``logits_per_image = scale * I T^T`` and its transpose.

    Args:
        image_features, text_features: L2-normalised embeddings; row i of each forms a pair.
        logit_scale: the multiplier 1 / tau (already exponentiated, as open_clip passes it).

    Shapes:
        image_features (B, E), text_features (B, E) -> logits_per_image (B, B) (row: an image,
        column: a text), logits_per_text (B, B) = logits_per_image.T.

    Raises:
        ValueError: if the batch sizes or widths differ.
    """
    _check_pair(image_features, text_features, ("images", "texts"))
    logits_per_image = logit_scale * image_features @ text_features.T  # (B, B) cosine / tau
    return logits_per_image, logits_per_image.T  # (B, B), (B, B)


class ClipLoss(nn.Module):
    """CLIP's symmetric contrastive loss (CLIP Sec. 2.3, Fig. 3; the review's Eq. 4).

    With L2-normalised image and text embeddings ``v_i``, ``t_i`` and ``s(v, t) = v . t`` (cosine
    similarity), and ``1 / tau = exp(logit_scale)``::

        L = -1/(2B) sum_i [ log  exp(s(v_i, t_i)/tau) / sum_j exp(s(v_i, t_j)/tau)      (image -> text)
                          + log  exp(s(v_i, t_i)/tau) / sum_j exp(s(v_j, t_i)/tau) ]    (text -> image)

    i.e. the mean of two cross-entropies over the rows and the columns of the B x B similarity
    matrix, with the diagonal as the target class. Which caption belongs to which image is the
    only supervision.

    The temperature is not a parameter of the loss: as in CLIP and open_clip, the model owns a
    learnable ``logit_scale`` (initialised to ln(1/0.07)), turns it into the multiplier with
    :func:`scale_from_log` (exponentiated once, clamped at ln 100) and passes the multiplier here,
    so ``ClipLoss()(img, txt, scale)`` and ``open_clip.loss.ClipLoss()(img, txt, scale)`` take the
    same arguments and agree (``tests/test_clip.py``).

    Args:
        normalize: L2-normalise the features here (default False: CLIP models return normalised
            features, and open_clip's loss does not normalise).

    Shapes:
        image_features (B, E), text_features (B, E), logit_scale scalar -> scalar loss
        (``output_dict=True``: ``{"contrastive_loss", "loss_i2t", "loss_t2i"}``).

    Raises:
        ValueError: if the image and text batch sizes (or widths) differ, or the batch is empty.
    """

    def __init__(self, normalize: bool = False) -> None:
        super().__init__()
        self.normalize = normalize

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor,
                logit_scale: Union[torch.Tensor, float],
                output_dict: bool = False) -> Union[torch.Tensor, Dict[str, torch.Tensor]]:
        _check_pair(image_features, text_features, ("images", "texts"))
        if self.normalize:
            image_features = F.normalize(image_features, dim=-1)
            text_features = F.normalize(text_features, dim=-1)
        logits_per_image, logits_per_text = clip_logits(image_features, text_features, logit_scale)  # (B, B) x 2
        labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)  # (B,) the diagonal
        loss_i2t = F.cross_entropy(logits_per_image, labels)  # each image picks its caption
        loss_t2i = F.cross_entropy(logits_per_text, labels)  # each caption picks its image
        loss = (loss_i2t + loss_t2i) / 2
        if output_dict:
            return {"contrastive_loss": loss, "loss_i2t": loss_i2t, "loss_t2i": loss_t2i}
        return loss


class NTXentLoss(nn.Module):
    """SimCLR's normalised temperature-scaled cross-entropy (NT-Xent; SimCLR Eq. 1, Algorithm 1).

    A batch of N images gives 2N augmented views ``z_1 .. z_2N`` (here: ``z = cat(z_a, z_b)``, so
    the positive of view k is view ``k + N mod 2N``). With ``s_ij = z_i . z_j / (|z_i| |z_j|)``::

        l(i, j) = -log  exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau)
        L = 1/(2N) sum_{k=1..N} [ l(k, k+N) + l(k+N, k) ]

    The denominator runs over all 2N - 1 other views: the positive and 2N - 2 negatives, that is
    the other images in *both* views. (The review's Eq. 5 keeps only the same view's N - 1
    negatives; see :func:`infonce_review_eq5` and the review's Eq. 5.) The self-similarity ``s_ii`` is
    removed by setting it to -inf before the log-softmax.

    Args:
        temperature: tau (SimCLR: 0.1-0.5; default 0.2).

    Shapes:
        z_a (N, D), z_b (N, D) (row i of each: two views of image i) -> scalar loss.

    Raises:
        ValueError: if the two views' batch sizes or widths differ, the batch is empty, or
            ``temperature`` is not positive.
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = _checked_temperature(temperature)

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        _check_pair(z_a, z_b, ("first views", "second views"))
        N = z_a.shape[0]
        z = F.normalize(torch.cat([z_a, z_b], dim=0), dim=-1)  # (2N, D), view a first
        sim = z @ z.T / self.temperature  # (2N, 2N) s_ij / tau
        self_mask = torch.eye(2 * N, dtype=torch.bool, device=z.device)
        sim = sim.masked_fill(self_mask, float("-inf"))  # drop k == i from the denominator
        targets = torch.cat([torch.arange(N, 2 * N), torch.arange(0, N)]).to(z.device)  # (2N,) the other view
        return F.cross_entropy(sim, targets)  # mean over the 2N anchors


def infonce_review_eq5(h: torch.Tensor, h_prime: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """The review's InfoNCE (its Eq. 5), for comparison with :class:`NTXentLoss`::

        L_i = -log  exp(s(h_i, h'_i)/tau) / ( exp(s(h_i, h'_i)/tau) + sum_{j != i} exp(s(h_i, h_j)/tau) )

    averaged over i. The negatives are the other images *in the same view* only, N - 1 of them,
    and only the first view serves as anchor; NT-Xent uses 2N - 2 negatives and both views as
    anchors. :class:`ReviewEq5Loss` trains with it (both views as anchors).

    Shapes: h (N, D), h_prime (N, D) -> scalar.

    Raises:
        ValueError: as :class:`NTXentLoss`.
    """
    _check_pair(h, h_prime, ("first views", "second views"))
    h, h_prime = F.normalize(h, dim=-1), F.normalize(h_prime, dim=-1)
    pos = (h * h_prime).sum(-1, keepdim=True) / temperature  # (N, 1) s(h_i, h'_i)
    neg = h @ h.T / temperature  # (N, N) s(h_i, h_j)
    neg = neg.masked_fill(torch.eye(h.shape[0], dtype=torch.bool, device=h.device), float("-inf"))
    logits = torch.cat([pos, neg], dim=1)  # (N, 1 + N): the positive is column 0
    return F.cross_entropy(logits, torch.zeros(h.shape[0], dtype=torch.long, device=h.device))


class ReviewEq5Loss(nn.Module):
    """The review's Eq. 5 as a training loss, symmetrised over the two views so that it differs from
    :class:`NTXentLoss` only by its negatives::

        L = 1/2 [ eq5(z_a, z_b) + eq5(z_b, z_a) ]      (eq5 = :func:`infonce_review_eq5`)

    Each anchor is contrasted with its positive and the N - 1 other images *of its own view*;
    NT-Xent adds the N - 1 other images of the other view (2N - 2 negatives). Used by the ``simclr``
    recipe's ``loss="review_eq5"`` to measure what the omitted negatives cost.

    Args:
        temperature: tau (> 0).

    Shapes: z_a (N, D), z_b (N, D) -> scalar.

    Raises:
        ValueError: as :class:`NTXentLoss`.
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = _checked_temperature(temperature)

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        return 0.5 * (infonce_review_eq5(z_a, z_b, self.temperature) + infonce_review_eq5(z_b, z_a, self.temperature))


# ---------------------------------------------------------------------------------------------
# training steps for survey_lib.train.fit, and SimCLR's encoder + projection head
# ---------------------------------------------------------------------------------------------
def clip_step(loss_fn: Optional[nn.Module] = None, max_logit_scale: float = MAX_LOGIT_SCALE):
    """A ``step_fn`` for :func:`survey_lib.train.fit` that trains any CLIP-like model.

    The model maps ``(images, tokens)`` to ``(image_features, text_features, logit_scale)`` (ours,
    and open_clip's ``CLIP``). Batches are ``(images, tokens, ...)``. Before the forward pass the
    stored ``model.logit_scale`` is clamped in place to [0, ln 100], which is what open_clip's
    training loop does after every optimiser step (our model also clamps inside ``forward``).

    Returns:
        ``step(model, batch) -> StepOutput(loss, metrics={"loss_i2t", "loss_t2i", "inv_tau"})``,
        where ``inv_tau`` is the multiplier 1/tau = exp(logit_scale).
    """
    loss_fn = loss_fn if loss_fn is not None else ClipLoss()

    def step(model: nn.Module, batch) -> StepOutput:
        images, tokens = batch[0], batch[1]
        log_scale = getattr(model, "logit_scale", None)
        if isinstance(log_scale, torch.Tensor) and log_scale.requires_grad:
            with torch.no_grad():
                log_scale.clamp_(0.0, max_logit_scale)
        image_features, text_features, scale = model(images, tokens)[:3]
        out = loss_fn(image_features, text_features, scale, output_dict=True)
        return StepOutput(out["contrastive_loss"], metrics={
            "loss_i2t": float(out["loss_i2t"].detach()), "loss_t2i": float(out["loss_t2i"].detach()),
            "inv_tau": float(torch.as_tensor(scale).detach())})

    return step


class SimCLR(nn.Module):
    """SimCLR's encoder f and projection head g (SimCLR Sec. 2.1): ``z = g(f(x))``.

    The loss is computed on z; the representation kept for downstream tasks is ``h = f(x)``
    (``embed``), taken *before* the head, which the paper found much better (Sec. 4.2, Fig. 8).
    The head is ``Linear -> BatchNorm -> ReLU -> Linear`` (SimCLR's code; the paper writes
    ``W2 ReLU(W1 h)``).

    Args:
        backbone: images (B, C, H, W) -> features (B, feature_dim), e.g. a ViT with num_classes=0.
        feature_dim: width of the backbone's feature.
        proj_dim: width of z.  hidden_dim: width of the head's hidden layer (default feature_dim).

    Shapes: ``forward``: (B, C, H, W) -> (B, proj_dim); ``embed``: (B, C, H, W) -> (B, feature_dim).
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, proj_dim: int = 64, hidden_dim: Optional[int] = None) -> None:
        super().__init__()
        hidden_dim = hidden_dim or feature_dim
        self.backbone = backbone
        self.projector = nn.Sequential(
            nn.Linear(feature_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, proj_dim),
        )

    def no_weight_decay(self) -> set:
        return set(getattr(self.backbone, "no_weight_decay", lambda: set())())

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)  # (B, feature_dim) h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))  # (B, proj_dim) z


def simclr_step(loss_fn: Optional[nn.Module] = None):
    """A ``step_fn`` for :func:`survey_lib.train.fit`: batches ``((view_a, view_b), labels)``, both
    views through the model in one forward pass (so BatchNorm sees all 2N views), NT-Xent on z.
    Labels are ignored (self-supervised)."""
    loss_fn = loss_fn if loss_fn is not None else NTXentLoss()

    def step(model: nn.Module, batch) -> StepOutput:
        (view_a, view_b), _ = batch
        N = view_a.shape[0]
        z = model(torch.cat([view_a, view_b], dim=0))  # (2N, proj_dim)
        z_a, z_b = z[:N], z[N:]  # (N, proj_dim) x 2
        return StepOutput(loss_fn(z_a, z_b))

    return step


def duplicate_loss_floor(labels: torch.Tensor) -> float:
    """The smallest CLIP loss a batch with these class labels allows when captions carry only the class.

    If image i has ``m_i`` captions of its class in the batch (its own included), no model can
    tell which of them is its own, so each direction costs at least ``ln m_i``: the floor is
    ``mean_i ln m_i``. With 10 balanced classes and B = 64 it is about 1.8 (a loss of 0 would need
    unique captions).

    Shapes: labels (B,) -> float.
    """
    counts = torch.bincount(labels)[labels].float()  # (B,) m_i
    return float(counts.log().mean())
