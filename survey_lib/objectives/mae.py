"""Masked autoencoding's objective: the masked-patch loss, its baselines and the training step.

He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022, arXiv:2111.06377.

    Sec. 3 "Masking"         a random subset of patches is removed, uniformly and independently per
                             sample (no replacement) -> ``survey_lib.models.mae.random_masking``
    Sec. 3 "MAE encoder"     the encoder sees the visible patches only (mask tokens are not fed to
                             it) -> ``survey_lib.models.mae.MaskedAutoencoderViT.forward_encoder``
    Sec. 3 "Reconstruction   the decoder predicts the pixels of every patch; the loss is the mean
    target"                  squared error "computed only on masked patches", optionally on
                             per-patch normalised pixels (``norm_pix_loss``) -> :func:`patch_targets`,
                             :func:`masked_mse`, :class:`MAELoss`
    Sec. 3 "Simple           shuffle the tokens by random noise, keep the first ones, unshuffle
    implementation"          after the encoder; no sparse operations needed -> ``survey_lib.models.mae``

The loss, written out (``M`` the set of removed patches of a batch, ``x_j`` a target patch vector
of ``L = P * P * C`` pixels in :func:`survey_lib.layers.patchify` order, ``x_hat_j`` its prediction):

    loss = 1 / |M|  *  sum_{j in M}  (1 / L) * || x_hat_j - x_j ||^2

i.e. the per-pixel MSE averaged over the masked patches of the whole batch (MAE's ``models_mae.py``
averages over pixels first, then over masked patches). The survey S3's Eq. 6 writes the same sum
without the ``1 / L``: a constant factor, so the minimiser is the same.

Deviation from the paper: MAE's visualisation maps normalised predictions back with each target
patch's own mean and variance; :func:`reconstruct` does the same, so with ``norm_pix_loss`` the
brightness and contrast of removed patches are given away in the figures (only the shape is predicted).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from ..layers import patchify, unpatchify
from ..train import StepOutput

__all__ = [
    "patch_targets",
    "masked_mse",
    "MAELoss",
    "mean_patch_baseline",
    "average_patch_baseline",
    "mae_step",
    "reconstruct",
]


# ---------------------------------------------------------------------------------------------
# Loss (Sec. 3 "Reconstruction target")
# ---------------------------------------------------------------------------------------------
def patch_targets(imgs: torch.Tensor, patch_size: int, norm_pix_loss: bool = False, eps: float = 1e-6) -> torch.Tensor:
    """Reconstruction targets: the pixel patches, optionally normalised per patch.

    With ``norm_pix_loss`` each patch vector ``t`` becomes ``(t - mean(t)) / sqrt(var(t) + eps)``:
    mean and variance over the patch's own ``P * P * C`` pixels, the variance *unbiased* (divided
    by ``L - 1``, ``torch.var``'s default, as in MAE's code), ``eps`` inside the square root. A flat
    patch (variance 0) becomes all zeros. MAE Sec. 3 / Table 1c: this "improves representation
    quality" because the model must reproduce local contrast, not brightness.

    Shapes:
        imgs: (B, C, H, W) -> (B, N, P * P * C) in :func:`survey_lib.layers.patchify` order.
    """
    target = patchify(imgs, patch_size)  # (B, N, L)
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)  # (B, N, 1)
        var = target.var(dim=-1, keepdim=True)  # (B, N, 1), unbiased
        target = (target - mean) / torch.sqrt(var + eps)
    return target


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-pixel MSE averaged over the removed patches only (MAE Sec. 3, "loss only on masked patches").

    Visible patches get weight 0, so neither their predictions nor their gradients matter.

    Shapes:
        pred, target: (B, N, L); mask: (B, N), 1 = removed. Returns a scalar.

    Raises:
        ValueError: mismatched shapes, or a mask without any removed patch.
    """
    if pred.shape != target.shape or pred.shape[:2] != mask.shape:
        raise ValueError(f"pred {tuple(pred.shape)}, target {tuple(target.shape)} and mask {tuple(mask.shape)} "
                         f"must be (B, N, L), (B, N, L), (B, N)")
    n_masked = mask.sum()
    if n_masked == 0:
        raise ValueError("the mask removes no patch; the MAE loss is defined on removed patches only")
    per_patch = ((pred - target) ** 2).mean(dim=-1)  # (B, N): MSE of each patch
    return (per_patch * mask).sum() / n_masked


class MAELoss(nn.Module):
    """The MAE objective as a module: targets from the images, MSE on removed patches.

    Args:
        patch_size: P.
        norm_pix_loss: normalise each target patch by its own mean and variance (see :func:`patch_targets`).
        eps: added to the variance inside the square root.

    Shapes:
        imgs (B, C, H, W), pred (B, N, P * P * C), mask (B, N) -> scalar.

    Source: He et al. 2022, arXiv:2111.06377, Sec. 3.
    """

    def __init__(self, patch_size: int, norm_pix_loss: bool = False, eps: float = 1e-6) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.norm_pix_loss = norm_pix_loss
        self.eps = eps

    def forward(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        target = patch_targets(imgs, self.patch_size, self.norm_pix_loss, self.eps)
        return masked_mse(pred, target, mask)

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, norm_pix_loss={self.norm_pix_loss}, eps={self.eps}"


@torch.no_grad()
def mean_patch_baseline(imgs: torch.Tensor, mask: torch.Tensor, patch_size: int, norm_pix_loss: bool = False,
                        eps: float = 1e-6) -> torch.Tensor:
    """The MAE loss of an oracle that predicts every removed patch as its own mean value.

    It knows each hidden patch's average brightness (more than the model is told) but nothing of its
    texture, so a model that beats it has learnt structure, not just where the ink is. Its loss is
    the (biased) within-patch variance averaged over the removed patches; with ``norm_pix_loss`` the
    normalised target has mean 0, so the oracle predicts 0 and scores about ``(L-1)/L`` per
    non-flat patch.

    Shapes: imgs (B, C, H, W), mask (B, N) -> scalar.
    """
    target = patch_targets(imgs, patch_size, norm_pix_loss, eps)  # (B, N, L)
    pred = target.mean(dim=-1, keepdim=True).expand_as(target)  # (B, N, L)
    return masked_mse(pred, target, mask)


@torch.no_grad()
def average_patch_baseline(imgs: torch.Tensor, mask: torch.Tensor, patch_size: int, reference_imgs: torch.Tensor,
                           norm_pix_loss: bool = False, eps: float = 1e-6) -> torch.Tensor:
    """The MAE loss of predicting every removed patch as the *average* target patch at its grid
    position over ``reference_imgs`` (e.g. the training set): a constant guess that uses nothing of
    the image at hand. Weaker than :func:`mean_patch_baseline`, which is told each patch's brightness.

    Shapes: imgs (B, C, H, W), mask (B, N), reference_imgs (M, C, H, W) -> scalar.
    """
    average = patch_targets(reference_imgs, patch_size, norm_pix_loss, eps).mean(dim=0, keepdim=True)  # (1, N, L)
    target = patch_targets(imgs, patch_size, norm_pix_loss, eps)  # (B, N, L)
    return masked_mse(average.expand_as(target), target, mask)


# ---------------------------------------------------------------------------------------------
# Training with survey_lib.train.fit
# ---------------------------------------------------------------------------------------------
def mae_step(mask_ratio: Optional[float] = None):
    """A ``step_fn`` for :func:`survey_lib.train.fit`: ``(model, (imgs, labels)) -> StepOutput``.

    Labels are ignored (self-supervised). The model (an MAE: ``model(imgs, mask_ratio) -> (pred,
    mask)``, with ``patch_size`` and ``norm_pix_loss`` attributes) predicts every patch; the loss is
    :class:`MAELoss` on the removed ones. The model's own ``mask_ratio`` is used unless one is given.
    ``metrics`` logs the fraction of removed patches as a sanity check.

    Shapes: batch ``(imgs (B, C, H, W), labels (B,))`` or ``imgs`` alone -> StepOutput with a scalar loss.
    """

    def step(model: nn.Module, batch) -> StepOutput:
        imgs = batch[0] if isinstance(batch, (tuple, list)) else batch
        pred, mask = model(imgs, mask_ratio)
        loss = MAELoss(model.patch_size[0], model.norm_pix_loss)(imgs, pred, mask)
        return StepOutput(loss, metrics={"masked_fraction": float(mask.mean())})

    return step


@torch.no_grad()
def reconstruct(model: nn.Module, imgs: torch.Tensor, mask_ratio: Optional[float] = None,
                generator: Optional[torch.Generator] = None, eps: float = 1e-6) -> Dict[str, torch.Tensor]:
    """An MAE's predicted images for display, in the input's pixel space, and its loss.

    With the model's ``norm_pix_loss`` it predicts normalised patches; they are mapped back with the
    *true* mean and standard deviation of each target patch (as MAE's visualisation does), so the
    brightness and contrast of removed patches are given away: only the shape is predicted.

    Args:
        model: an MAE (``model(imgs, mask_ratio, generator) -> (pred, mask)``, with ``patch_size``,
            ``grid_size`` and ``norm_pix_loss``), run in eval mode.

    Returns:
        ``{"mask" (B, N), "masked" (B, C, H, W) with removed patches NaN, "pred" (B, C, H, W) the
        raw prediction of every patch, "pasted" (B, C, H, W) visible patches from the input and
        removed ones from the prediction, "loss" ()}``.
    """
    was_training = model.training
    model.eval()
    pred, mask = model(imgs, mask_ratio, generator)  # pred (B, N, L)
    model.train(was_training)
    P = model.patch_size[0]
    loss = MAELoss(P, model.norm_pix_loss, eps)(imgs, pred, mask)
    target = patch_targets(imgs, P)  # (B, N, L)
    if model.norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)  # (B, N, 1)
        std = (target.var(dim=-1, keepdim=True) + eps).sqrt()  # (B, N, 1)
        pred = pred * std + mean
    m = mask.unsqueeze(-1)  # (B, N, 1)
    C = imgs.shape[1]
    to_img = lambda p: unpatchify(p, P, model.grid_size, C)  # noqa: E731  (B, N, L) -> (B, C, H, W)
    return {
        "mask": mask,
        "masked": to_img(target.masked_fill(m.bool(), float("nan"))),
        "pred": to_img(pred),
        "pasted": to_img(target * (1 - m) + pred * m),
        "loss": loss,
    }
