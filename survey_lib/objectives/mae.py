"""Masked autoencoding: per-sample random masking, the masked-patch loss, the training step and recipe.

He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022, arXiv:2111.06377.

    Sec. 3 "Masking"         a random subset of patches is removed, uniformly and independently per
                             sample (no replacement) -> :func:`random_masking`
    Sec. 3 "MAE encoder"     the encoder sees the visible patches only (mask tokens are not fed to
                             it) -> ``survey_lib.models.mae.MaskedAutoencoderViT.forward_encoder``
    Sec. 3 "Reconstruction   the decoder predicts the pixels of every patch; the loss is the mean
    target"                  squared error "computed only on masked patches", optionally on
                             per-patch normalised pixels (``norm_pix_loss``) -> :func:`patch_targets`,
                             :func:`masked_mse`, :class:`MAELoss`
    Sec. 3 "Simple           shuffle the tokens by random noise, keep the first ones, unshuffle
    implementation"          after the encoder; no sparse operations needed -> :func:`random_masking`

The loss, written out (``M`` the set of removed patches of a batch, ``x_j`` a target patch vector
of ``L = P * P * C`` pixels in :func:`survey_lib.layers.patchify` order, ``x_hat_j`` its prediction):

    loss = 1 / |M|  *  sum_{j in M}  (1 / L) * || x_hat_j - x_j ||^2

i.e. the per-pixel MSE averaged over the masked patches of the whole batch (MAE's ``models_mae.py``
averages over pixels first, then over masked patches). The survey S3's Eq. 6 writes the same sum
without the ``1 / L``: a constant factor, so the minimiser is the same.

Deviations from the paper:
    * the number of visible patches is ``round(N * (1 - mask_ratio))`` with halves rounded up
      (:func:`num_visible`); MAE's code truncates with ``int(...)``, which gives the same count for
      ViT-B/16 at 75% (196 -> 49) but loses a patch to floating-point error in cases such as
      ``N=10, mask_ratio=0.9`` (``10 * (1 - 0.9) = 0.9999999999999998``).
    * a ratio that keeps every patch visible (nothing to reconstruct) is an error here; MAE's code
      would divide 0 by 0.
    * CPU-sized recipes (:data:`MAE_TRAIN`): 32 px digits with random 1-pixel shifts instead of
      ImageNet with random resized crops; 40 epochs (``cpu``) instead of 800-1600, batch 64 instead
      of 4096, a fixed learning rate instead of the paper's ``base_lr * batch / 256`` rule.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import patchify
from ..train import StepOutput, TrainConfig

__all__ = [
    "num_visible",
    "random_masking",
    "patch_targets",
    "masked_mse",
    "MAELoss",
    "mean_patch_baseline",
    "average_patch_baseline",
    "mae_step",
    "MAE_TRAIN",
    "mae_train_config",
    "train_mae",
    "plot_masking",
    "plot_reconstructions",
]


# ---------------------------------------------------------------------------------------------
# Masking (Sec. 3 "Masking" and "Simple implementation")
# ---------------------------------------------------------------------------------------------
def num_visible(num_patches: int, mask_ratio: float) -> int:
    """How many of ``num_patches`` patches stay visible: ``round(N * (1 - mask_ratio))``, halves up.

    Rounding rule: the nearest integer, with an exact half rounded up (``floor(v + 0.5)``), so
    ``N=64, mask_ratio=0.75 -> 16`` and ``N=6, mask_ratio=0.25 -> 5`` (4.5 rounds up).

    Raises:
        ValueError: if ``mask_ratio`` is not strictly between 0 and 1, or the count leaves no visible
            patch (nothing for the encoder to see) or no masked patch (nothing to reconstruct).
    """
    ratio = float(mask_ratio)
    if not 0.0 < ratio < 1.0:  # also rejects NaN
        raise ValueError(
            f"mask_ratio must be strictly between 0 and 1 (the fraction of patches removed), got {mask_ratio}; "
            f"MAE uses 0.75"
        )
    keep = int(math.floor(num_patches * (1.0 - ratio) + 0.5))
    if keep < 1:
        raise ValueError(
            f"mask_ratio {mask_ratio} leaves no visible patch out of N={num_patches} "
            f"(round({num_patches} * {1 - ratio:.3g}) = 0); use mask_ratio <= {1 - 0.5 / num_patches:.3f} "
            f"or a smaller patch_size"
        )
    if keep >= num_patches:
        raise ValueError(
            f"mask_ratio {mask_ratio} masks no patch out of N={num_patches} "
            f"(round({num_patches} * {1 - ratio:.3g}) = {keep}), so there is nothing to reconstruct; "
            f"use mask_ratio >= {0.5 / num_patches:.3f}"
        )
    return keep


def random_masking(
    x: torch.Tensor, mask_ratio: float, generator: Optional[torch.Generator] = None
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a random subset of tokens per sample, by sorting uniform noise (MAE Sec. 3).

    Each sample draws N uniform numbers; ``argsort`` turns them into a random permutation
    ``ids_shuffle`` (a uniform random shuffle, independent per sample); the first ``N_vis`` indices
    of that permutation are kept. ``ids_restore = argsort(ids_shuffle)`` is the inverse permutation:
    ``shuffled.gather(1, ids_restore) == original`` for any tensor ordered like ``ids_shuffle``, which
    is how the decoder puts visible tokens and mask tokens back in grid order.

    Args:
        x: tokens (patch embeddings with their position embedding already added).
        mask_ratio: fraction of tokens removed, strictly between 0 and 1.
        generator: optional ``torch.Generator`` for reproducible masks.

    Shapes:
        x: (B, N, D).
        returns x_visible (B, N_vis, D) with ``N_vis = num_visible(N, mask_ratio)``, in the order of
        ``ids_keep``; mask (B, N) float, 1 = removed, 0 = kept, in grid order; ids_restore (B, N)
        long; ids_keep (B, N_vis) long, the grid indices of the visible tokens.

    Raises:
        ValueError: see :func:`num_visible`; or ``x`` is not 3-D.

    Source: He et al. 2022, arXiv:2111.06377, Sec. 3 "Simple implementation".
    """
    if x.ndim != 3:
        raise ValueError(f"random_masking expects tokens (B, N, D), got shape {tuple(x.shape)}")
    B, N, D = x.shape
    keep = num_visible(N, mask_ratio)
    if generator is None:
        noise = torch.rand(B, N, device=x.device)  # (B, N) uniform in [0, 1)
    else:
        noise = torch.rand(B, N, generator=generator, device=generator.device).to(x.device)  # (B, N)
    ids_shuffle = noise.argsort(dim=1)  # (B, N): a random permutation per sample; small noise = kept
    ids_restore = ids_shuffle.argsort(dim=1)  # (B, N): the inverse permutation
    ids_keep = ids_shuffle[:, :keep]  # (B, N_vis)
    x_visible = x.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, D))  # (B, N_vis, D)
    # Mask in shuffled order is [0]*keep + [1]*(N-keep); unshuffle it to grid order.
    mask = torch.ones(B, N, device=x.device, dtype=x.dtype)
    mask[:, :keep] = 0
    mask = mask.gather(1, ids_restore)  # (B, N), 1 = removed
    return x_visible, mask, ids_restore, ids_keep


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

    Labels are ignored (self-supervised). The model's own ``mask_ratio`` is used unless one is given.
    ``metrics`` logs the fraction of removed patches as a sanity check.

    Shapes: batch ``(imgs (B, C, H, W), labels (B,))`` or ``imgs`` alone -> StepOutput with a scalar loss.
    """

    def step(model: nn.Module, batch) -> StepOutput:
        imgs = batch[0] if isinstance(batch, (tuple, list)) else batch
        loss, _, mask = model(imgs, mask_ratio)
        return StepOutput(loss, metrics={"masked_fraction": float(mask.mean())})

    return step


#: CPU-sized training recipes for the digits MAE (``survey_lib.models.mae.MAE_CONFIGS``) by profile.
#: AdamW with betas (0.9, 0.95) and weight decay 0.05 as in MAE's pre-training (Table 8), with a
#: higher learning rate for the tiny model.
#:
#: Cost of the ``cpu`` preset: 40 epochs at batch 64 (920 optimiser steps) took 154 s (norm-pix) and
#: 159 s (pixel loss) on one thread with another job on the second core (notebook 06's cpu run of
#: 2026-12-01, which trains both); the decoder runs on all 65 tokens, the encoder on 17.
MAE_TRAIN: Dict[str, dict] = {
    "smoke": dict(epochs=2, batch_size=128, lr=1.5e-3, warmup_epochs=0.5, betas=(0.9, 0.95), weight_decay=0.05),
    "cpu": dict(epochs=40, batch_size=64, lr=1.5e-3, warmup_epochs=3, betas=(0.9, 0.95), weight_decay=0.05),
    "full": dict(epochs=400, batch_size=128, lr=1.5e-3, warmup_epochs=20, betas=(0.9, 0.95), weight_decay=0.05),
}


def mae_train_config(profile: str, **overrides) -> TrainConfig:
    """The :class:`~survey_lib.train.TrainConfig` of the digits MAE for ``profile``, with overrides.

    Raises:
        ValueError: unknown profile.
    """
    if profile not in MAE_TRAIN:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(MAE_TRAIN)}")
    return TrainConfig(**{**MAE_TRAIN[profile], **overrides})


def train_mae(profile: str = "cpu", checkpoint: Optional[str] = None, seed: int = 0, **model_overrides) -> dict:
    """Pre-train the digits MAE of ``profile`` and probe its frozen encoder.

    ``test_acc`` is the accuracy of a linear probe (logistic regression) on the encoder's mean-pooled
    features of the full, unmasked test images; ``knn_acc`` the weighted k-NN (k = 20).

    Returns:
        ``{"model", "history", "test_acc", "knn_acc", "final_loss", "seconds"}``.
    """
    from ..data import DigitsDataset
    from ..evaluate import extract_features, knn_classify, linear_probe
    from ..models.mae import mae_for_profile
    from ..train import fit, seed_everything

    seed_everything(seed)
    model = mae_for_profile(profile, **model_overrides)
    train_aug = DigitsDataset(train=True, augment=True)
    cfg = mae_train_config(profile, seed=seed, checkpoint_path=checkpoint, desc=f"mae [{profile}]")
    history = fit(model, train_aug, config=cfg, step_fn=mae_step())
    f_tr, y_tr = extract_features(model.embed, DigitsDataset(train=True))
    f_te, y_te = extract_features(model.embed, DigitsDataset(train=False))
    return {
        "model": model,
        "history": history,
        "test_acc": linear_probe(f_tr, y_tr, f_te, y_te),
        "knn_acc": knn_classify(f_tr, y_tr, f_te, y_te),
        "final_loss": history.last.get("train_loss", float("nan")),
        "seconds": history.seconds,
    }


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
def _masked_view(imgs: torch.Tensor, mask: torch.Tensor, patch_size: int, fill: float = float("nan")) -> torch.Tensor:
    """Images with removed patches set to ``fill`` (NaN draws as the axes' background)."""
    from ..layers import unpatchify

    B, C, H, W = imgs.shape
    patches = patchify(imgs, patch_size)  # (B, N, L)
    patches = patches.masked_fill(mask.bool().unsqueeze(-1), fill)
    return unpatchify(patches, patch_size, (H // patch_size, W // patch_size), C)  # (B, C, H, W)


def _imshow(ax, img: torch.Tensor, vmin: float = 0.0, vmax: float = 1.0, title: Optional[str] = None) -> None:
    import numpy as np

    arr = img.detach().float().cpu()
    arr = arr[0].numpy() if arr.shape[0] == 1 else arr.permute(1, 2, 0).numpy()
    if arr.ndim == 3:
        arr = np.clip(arr, vmin, vmax)
        arr = np.where(np.isnan(arr), 0.85, arr)  # removed patches drawn light grey
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=vmin, vmax=vmax)
    ax.set_facecolor((0.85, 0.85, 0.85))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def plot_masking(img: torch.Tensor, mask: torch.Tensor, ids_keep: torch.Tensor, patch_size: int,
                 vmin: float = 0.0, vmax: float = 1.0):
    """Three panels: patches numbered in ``patchify`` (row-major) order, the removed patches greyed,
    and the visible patches in the order the encoder receives them (``ids_keep``).

    Shapes: img (C, H, W) in [vmin, vmax]; mask (N,); ids_keep (N_vis,). Returns a Figure.
    """
    import matplotlib.pyplot as plt

    C, H, W = img.shape
    gw = W // patch_size
    N = (H // patch_size) * gw
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.6), gridspec_kw=dict(width_ratios=[1, 1, 1.35]))
    _imshow(axes[0], img, vmin, vmax, f"patch order: n = i * {gw} + j")
    _imshow(axes[1], _masked_view(img[None], mask[None], patch_size)[0], vmin, vmax,
            f"{int(mask.sum())} of {N} removed ({mask.mean():.0%})")
    fs = max(4, 48 // gw)
    for n in range(N):
        i, j = divmod(n, gw)
        y, x = i * patch_size + patch_size / 2 - 0.5, j * patch_size + patch_size / 2 - 0.5
        axes[0].text(x, y, str(n), color="tab:red", fontsize=fs, ha="center", va="center")
        if mask[n] == 0:
            axes[1].text(x, y, str(n), color="tab:red", fontsize=fs, ha="center", va="center")
    for ax in axes[:2]:
        ax.set_xticks([v - 0.5 for v in range(0, W + 1, patch_size)], minor=True)
        ax.set_yticks([v - 0.5 for v in range(0, H + 1, patch_size)], minor=True)
        ax.grid(which="minor", color="tab:blue", linewidth=0.5)
        ax.tick_params(which="minor", length=0)
    # The encoder's input: the visible patches as a short sequence.
    vis = patchify(img[None], patch_size)[0, ids_keep]  # (N_vis, L)
    k = len(ids_keep)
    cols = min(k, 8)
    rows = math.ceil(k / cols)
    axes[2].set_axis_off()
    axes[2].set_title(f"encoder input: {k} visible patches, in ids_keep order", fontsize=8)
    for t in range(k):
        r, c = divmod(t, cols)
        inset = axes[2].inset_axes([c / cols + 0.01, 1 - (r + 1) / rows + 0.08 / rows, 0.9 / cols, 0.75 / rows])
        patch = vis[t].reshape(patch_size, patch_size, C).permute(2, 0, 1)  # (C, P, P)
        _imshow(inset, patch, vmin, vmax)
        inset.set_title(str(int(ids_keep[t])), fontsize=6, pad=1)
    fig.tight_layout()
    return fig


def plot_reconstructions(rows: Sequence[Tuple[str, torch.Tensor]], vmin: float = 0.0, vmax: float = 1.0,
                         col_titles: Optional[Sequence[str]] = None, title: Optional[str] = None, scale: float = 1.1):
    """A grid of images: one row per ``(label, images (B, C, H, W))`` pair, one column per image.

    Removed patches given as NaN draw light grey. Returns a Figure.
    """
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), rows[0][1].shape[0]
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(scale * n_cols + 0.8, scale * n_rows + 0.3), squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for c in range(n_cols):
            _imshow(axes[r, c], imgs[c], vmin, vmax, col_titles[c] if (col_titles and r == 0) else None)
        axes[r, 0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
