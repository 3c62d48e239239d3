"""DINO: self-distillation with no labels (and DinoNAT: the same objective with a NAT backbone).

Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021,
arXiv:2104.14294. What the code implements, by section of the paper:

    Sec. 3.1, Eq. 1   P_s(x)^(i) = softmax(g_s(x) / tau_s)^(i)      -> ``DINOLoss`` (student side)
    Sec. 3.1, Eq. 2   min_s H(P_t(x), P_s(x)),  H(a, b) = -a log b   -> ``DINOLoss`` (cross-entropy)
    Sec. 3.1, Eq. 3   sum_{x in {x1g, x2g}} sum_{x' in V, x' != x} H(P_t(x), P_s(x'))
                                                                    -> ``DINOLoss.forward`` (all pairs)
    Sec. 3.1, "multi-crop": 2 global + several local views; the teacher sees global views only
                                                                    -> ``MultiCropTransform``, ``MultiCropWrapper``
    Sec. 3.1, "Teacher network": theta_t <- l theta_t + (1 - l) theta_s, l cosine 0.996 -> 1
                                                                    -> ``DINO.on_train_step_end``
    Sec. 3.1, "Avoiding collapse", Eq. 4: g_t(x) <- g_t(x) + c,  c <- m c + (1 - m) mean_B g_t
              (the code *subtracts* c, as DINO's ``main_dino.py`` does) -> ``DINOLoss.update_center``
    Sec. 3.2, "Network architecture": 3-layer MLP head (hidden 2048), bottleneck 256, L2
              normalisation, weight-normalised last layer (K = 65,536)  -> ``DINOHead``
    Sec. 5.3 / Fig. 7: collapse diagnostics - target entropy and KL(P_t || P_s) -> ``collapse_metrics``

DinoNAT (SOURCES.md S1) is this objective with ``survey_lib.models.nat.NAT`` as both student and
teacher backbone; nothing here depends on the backbone beyond ``embed(x) -> (B, D)``. The source's
three errors are *not* copied; two are reproducible as switches for the notebook's experiments:
``DINOLoss(variant="source_sign")`` minimises ``+sum t log s`` (its Algorithm 1 drops the minus sign),
and ``DINO(teacher_update="epoch")`` updates the teacher once per epoch (its prose) instead of every
step (its own Algorithm 1 and DINO). Its attention formula without V concerns the backbone, not this file.

Deviations from the paper (CPU-sized defaults for 32 px digits; the objective is the paper's):
    * head: hidden 256, bottleneck 64, K = 512 prototypes (paper: 2048, 256, 65,536); BatchNorm in
      the head is on in the digits recipe (DINO's ``use_bn_in_head`` option, off by default there).
      Without it a tiny ViT's CLS feature at initialisation barely depends on the image and the
      teacher collapsed to uniform in our prototype (DESIGN.md).
    * crops: global 32 px (scale 0.4-1), local 16 px (scale 0.1-0.4) of 32 px digits (paper 224 /
      96 px, scales 0.4-1 / 0.05-0.4); no flips for digits (a flipped 2 is not a 2). The digits
      recipe uses *no photometric augmentation* (:data:`DIGITS_PHOTOMETRIC`): with DINO's jitter,
      blur and solarisation the teacher collapsed to uniform (measured; see the constant). The
      transforms keep them (Gaussian-blur sigma scaled to the image size; colour jitter reduces to
      brightness/contrast on grey images) for colour photographs and for experiments.
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
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from torchvision.transforms import v2

from ..train import StepOutput

__all__ = [
    "MultiCropTransform",
    "MultiCropDataset",
    "BatchMultiCrop",
    "DINOHead",
    "DINOLoss",
    "MultiCropWrapper",
    "DINO",
    "DINOForward",
    "collapse_metrics",
    "teacher_momentum",
    "dino_step",
    "probe_eval_fn",
    "plot_multicrop",
    "plot_collapse",
    "DINO_CONFIGS",
    "DIGITS_PHOTOMETRIC",
    "build_dino",
    "train_dino",
]


# ---------------------------------------------------------------------------------------------
# Multi-crop augmentation (Sec. 3.1 "multi-crop"; Caron et al. 2020, SwAV, arXiv:2006.09882)
# ---------------------------------------------------------------------------------------------
class MultiCropTransform:
    """Turn one image into ``n_global_crops`` global and ``n_local_crops`` local views, globals first.

    Each view is a random resized crop (its own scale range and output size), then, as in DINO's
    ``DataAugmentationDINO``: optional horizontal flip, colour jitter (p = 0.8; on grey images only
    brightness and contrast), random greyscale (RGB only), Gaussian blur (p = 1.0 for the first global
    view, 0.1 for the second, 0.5 for local views), solarisation (second global view only, p = 0.2),
    and normalisation. Photometric operations run on pixel values in [0, 1].

    Args:
        global_size: side of a global view in pixels.  local_size: side of a local view.
        n_local_crops: local views per image (0 allowed).  n_global_crops: global views (>= 2).
        global_scale, local_scale: (min, max) fraction of the image area kept by each crop.
        flip: random horizontal flips (DINO: on; default off here because digits are not
            flip-invariant).
        color_jitter: strength s of ``ColorJitter(s, s, s/2, s/4)``; 0 disables it.
        grayscale_prob: probability of a greyscale view (RGB inputs only).
        blur_sigma: (min, max) Gaussian-blur sigma in pixels of the output view; None disables blur.
        blur_prob: blur probability for (first global, other globals, locals).
        solarize_prob: solarisation probability of the second global view (0 disables it).
        mean, std: per-channel normalisation applied last (None: the views stay in [0, 1]).
        inputs_normalized: the input image is already normalised with ``mean``/``std``; it is
            un-normalised to [0, 1] first (e.g. :class:`survey_lib.data.DigitsDataset` items).

    Shapes:
        img (C, H, W) float -> list of ``n_global_crops`` tensors (C, global_size, global_size)
        followed by ``n_local_crops`` tensors (C, local_size, local_size).

    Raises:
        ValueError: fewer than 2 global crops, negative local crops, scales outside (0, 1], or
            ``inputs_normalized`` without ``mean``/``std``.

    Source: Caron et al. 2021, arXiv:2104.14294, Sec. 3.1 and Appendix (data augmentation).
    """

    def __init__(
        self,
        global_size: int = 32,
        local_size: int = 16,
        n_local_crops: int = 4,
        n_global_crops: int = 2,
        global_scale: Tuple[float, float] = (0.4, 1.0),
        local_scale: Tuple[float, float] = (0.1, 0.4),
        flip: bool = False,
        color_jitter: float = 0.4,
        grayscale_prob: float = 0.2,
        blur_sigma: Optional[Tuple[float, float]] = (0.1, 1.0),
        blur_prob: Tuple[float, float, float] = (1.0, 0.1, 0.5),
        solarize_prob: float = 0.2,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
        inputs_normalized: bool = False,
    ) -> None:
        if n_global_crops < 2:
            raise ValueError(
                f"DINO needs at least 2 global crops (got {n_global_crops}): the teacher sees the global "
                f"crops and each is predicted from the *other* views; use n_global_crops=2"
            )
        if n_local_crops < 0:
            raise ValueError(f"n_local_crops must be >= 0, got {n_local_crops}")
        for name, (lo, hi) in (("global_scale", global_scale), ("local_scale", local_scale)):
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(f"{name} must satisfy 0 < min <= max <= 1, got {(lo, hi)}")
        if inputs_normalized and (mean is None or std is None):
            raise ValueError("inputs_normalized=True needs mean and std to undo the normalisation")
        self.global_size, self.local_size = int(global_size), int(local_size)
        self.n_global_crops, self.n_local_crops = int(n_global_crops), int(n_local_crops)
        self.global_scale, self.local_scale = tuple(global_scale), tuple(local_scale)
        self.flip, self.color_jitter, self.grayscale_prob = flip, color_jitter, grayscale_prob
        self.blur_sigma, self.blur_prob, self.solarize_prob = blur_sigma, tuple(blur_prob), solarize_prob
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)  # (C, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).reshape(-1, 1, 1)  # (C, 1, 1)
        self.inputs_normalized = inputs_normalized
        self._pipelines: Dict[int, List[Callable]] = {}  # built lazily per channel count

    @property
    def ncrops(self) -> int:
        """Total number of views per image."""
        return self.n_global_crops + self.n_local_crops

    def _photometric(self, in_chans: int, blur_p: float, solarize_p: float, size: int) -> List[Callable]:
        ops: List[Callable] = []
        if self.flip:
            ops.append(v2.RandomHorizontalFlip(p=0.5))
        s = self.color_jitter
        if s > 0:
            jitter = v2.ColorJitter(brightness=s, contrast=s, saturation=s / 2, hue=s / 4) if in_chans == 3 else \
                v2.ColorJitter(brightness=s, contrast=s)
            ops.append(v2.RandomApply([jitter], p=0.8))
        if in_chans == 3 and self.grayscale_prob > 0:
            ops.append(v2.RandomGrayscale(p=self.grayscale_prob))
        if self.blur_sigma is not None and blur_p > 0:
            k = 2 * math.ceil(3 * self.blur_sigma[1]) + 1
            k = min(k, size - 1 if size % 2 == 0 else size)  # odd kernel no larger than the view
            ops.append(v2.RandomApply([v2.GaussianBlur(kernel_size=k, sigma=self.blur_sigma)], p=blur_p))
        if solarize_p > 0:
            ops.append(v2.RandomSolarize(threshold=0.5, p=solarize_p))
        return ops

    def _build(self, in_chans: int) -> List[Callable]:
        views = []
        for g in range(self.n_global_crops):
            crop = v2.RandomResizedCrop(self.global_size, scale=self.global_scale, antialias=True)
            blur_p = self.blur_prob[0] if g == 0 else self.blur_prob[1]
            sol_p = self.solarize_prob if g == 1 else 0.0
            views.append(v2.Compose([crop] + self._photometric(in_chans, blur_p, sol_p, self.global_size)))
        local = v2.Compose([v2.RandomResizedCrop(self.local_size, scale=self.local_scale, antialias=True)]
                           + self._photometric(in_chans, self.blur_prob[2], 0.0, self.local_size))
        views += [local] * self.n_local_crops
        return views

    def __call__(self, img: torch.Tensor) -> List[torch.Tensor]:
        if img.ndim != 3:
            raise ValueError(f"MultiCropTransform expects one (C, H, W) image, got shape {tuple(img.shape)}")
        x = img.float()
        if self.inputs_normalized:
            x = (x * self.std + self.mean).clamp(0.0, 1.0)  # back to [0, 1]
        C = x.shape[0]
        if C not in self._pipelines:
            self._pipelines[C] = self._build(C)
        crops = [view(x) for view in self._pipelines[C]]
        if self.mean is not None:
            crops = [(c - self.mean) / self.std for c in crops]
        return crops

    def __repr__(self) -> str:
        return (f"MultiCropTransform({self.n_global_crops} x {self.global_size}px scale {self.global_scale}, "
                f"{self.n_local_crops} x {self.local_size}px scale {self.local_scale}, flip={self.flip})")


class MultiCropDataset(Dataset):
    """Wrap a labelled image dataset so each item is ``(list of crops, label)``.

    The label is kept only for monitoring (probes); DINO never uses it.

    Args:
        base: a dataset whose items are ``(image (C, H, W), label)``.
        transform: a :class:`MultiCropTransform` (or any ``image -> list of tensors``).

    Shapes:
        item = ([ncrops tensors, globals first], label int). A DataLoader's default collate turns a
        batch into ``[list of ncrops tensors (B, C, s, s), labels (B,)]``.
    """

    def __init__(self, base: Dataset, transform: Callable[[torch.Tensor], List[torch.Tensor]]) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Tuple[List[torch.Tensor], int]:
        img, label = self.base[i]
        return self.transform(img), label


class BatchMultiCrop(MultiCropTransform):
    """The same multi-crop, vectorised over a batch: one ``grid_sample`` per view instead of one
    torchvision call per image, view and operation (about 100x faster on a CPU for 32 px digits).

    Every sample still gets its own random crop box (torchvision's ``RandomResizedCrop`` sampling:
    10 tries of scale and log-ratio, then a centre-crop fallback), flip, jitter, blur and
    solarisation. Differences from the per-image :class:`MultiCropTransform`: bilinear resampling
    without antialiasing (identical when a crop is enlarged, which is the case for every global view
    of the digits recipe; ``tests/test_dino.py`` checks it against ``v2.functional.resized_crop``);
    colour jitter applies brightness, contrast, saturation in this fixed order (torchvision: random
    order) and has no hue term.

    Use it as a DataLoader ``collate_fn`` (:meth:`collate`), so batches look like
    :class:`MultiCropDataset`'s: ``[list of ncrops tensors (B, C, s, s), labels (B,)]``.

    Shapes:
        imgs (B, C, H, W) (or one image (C, H, W)) -> list of ncrops tensors (B, C, s, s)
        (or (C, s, s)), globals first.
    """

    def __call__(self, imgs: torch.Tensor) -> List[torch.Tensor]:  # type: ignore[override]
        single = imgs.ndim == 3
        x = imgs[None] if single else imgs  # (B, C, H, W)
        if x.ndim != 4:
            raise ValueError(f"BatchMultiCrop expects (B, C, H, W) or (C, H, W), got shape {tuple(imgs.shape)}")
        x = x.float()
        if self.inputs_normalized:
            x = (x * self.std + self.mean).clamp(0.0, 1.0)  # back to [0, 1]
        views = []
        for g in range(self.n_global_crops):
            blur_p = self.blur_prob[0] if g == 0 else self.blur_prob[1]
            sol_p = self.solarize_prob if g == 1 else 0.0
            views.append(self._view(x, self.global_size, self.global_scale, blur_p, sol_p))
        for _ in range(self.n_local_crops):
            views.append(self._view(x, self.local_size, self.local_scale, self.blur_prob[2], 0.0))
        if self.mean is not None:
            views = [(v - self.mean) / self.std for v in views]
        return [v[0] for v in views] if single else views

    def collate(self, items: Sequence[Tuple[torch.Tensor, int]]) -> List[Any]:
        """DataLoader ``collate_fn``: stack ``(image, label)`` items and crop the batch."""
        imgs = torch.stack([it[0] for it in items])  # (B, C, H, W)
        labels = torch.as_tensor([int(it[1]) for it in items])  # (B,)
        return [self(imgs), labels]

    @staticmethod
    def sample_boxes(B: int, H: int, W: int, scale: Tuple[float, float],
                     ratio: Tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
        """torchvision's RandomResizedCrop box sampling for B images at once.

        Shapes: returns (B, 4) int64 boxes ``(top, left, height, width)``.
        """
        area = H * W
        target = area * torch.empty(B, 10).uniform_(scale[0], scale[1])  # (B, 10 tries)
        log_r = torch.empty(B, 10).uniform_(math.log(ratio[0]), math.log(ratio[1]))
        aspect = log_r.exp()
        w = (target * aspect).sqrt().round()
        h = (target / aspect).sqrt().round()
        ok = (w > 0) & (w <= W) & (h > 0) & (h <= H)  # (B, 10)
        first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((B,), -1))  # (B,)
        idx = first.clamp_min(0)[:, None]
        w, h = w.gather(1, idx)[:, 0], h.gather(1, idx)[:, 0]  # (B,), (B,)
        in_ratio = W / H  # fallback: centre crop (the whole image when its ratio is in range)
        fw = W if ratio[0] <= in_ratio <= ratio[1] else (W if in_ratio < ratio[0] else int(round(H * ratio[1])))
        fh = H if ratio[0] <= in_ratio <= ratio[1] else (int(round(W / ratio[0])) if in_ratio < ratio[0] else H)
        bad = first < 0
        w = torch.where(bad, torch.full_like(w, fw), w)
        h = torch.where(bad, torch.full_like(h, fh), h)
        top = (torch.rand(B) * (H - h + 1)).floor()
        left = (torch.rand(B) * (W - w + 1)).floor()
        top = torch.where(bad, (H - h) // 2, top)
        left = torch.where(bad, (W - w) // 2, left)
        return torch.stack([top, left, h, w], dim=1).long()  # (B, 4)

    @staticmethod
    def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
        """Crop each image to its box and resize it to ``size`` (bilinear, half-pixel centres, edge
        clamped inside the box like ``F.interpolate``). Shapes: (B, C, H, W), (B, 4) -> (B, C, size, size)."""
        B, C, H, W = x.shape
        top, left, h, w = [boxes[:, k].to(x.dtype)[:, None] for k in range(4)]  # 4 x (B, 1)
        u = torch.arange(size, dtype=x.dtype)[None]  # (1, size)
        src_x = left + ((u + 0.5) * w / size - 0.5).clamp(min=0.0)  # (B, size) source pixel coordinates
        src_y = top + ((u + 0.5) * h / size - 0.5).clamp(min=0.0)
        src_x = torch.minimum(src_x, left + w - 1)
        src_y = torch.minimum(src_y, top + h - 1)
        gx = (2 * src_x + 1) / W - 1  # (B, size) in grid_sample's [-1, 1] (align_corners=False)
        gy = (2 * src_y + 1) / H - 1
        grid = torch.stack([gx[:, None, :].expand(B, size, size), gy[:, :, None].expand(B, size, size)], dim=-1)  # (B, s, s, 2)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _view(self, x: torch.Tensor, size: int, scale: Tuple[float, float], blur_p: float, sol_p: float) -> torch.Tensor:
        B, C, H, W = x.shape
        v = self.resized_crop(x, self.sample_boxes(B, H, W, scale), size)  # (B, C, s, s)

        def coin(p: float) -> torch.Tensor:
            return (torch.rand(B) < p).view(B, 1, 1, 1)  # (B, 1, 1, 1)

        if self.flip:
            v = torch.where(coin(0.5), v.flip(-1), v)
        s = self.color_jitter
        if s > 0:
            on = coin(0.8)
            b = torch.empty(B, 1, 1, 1).uniform_(max(0.0, 1 - s), 1 + s)
            c = torch.empty(B, 1, 1, 1).uniform_(max(0.0, 1 - s), 1 + s)
            j = (v * b).clamp(0, 1)  # brightness
            mean = _grey(j).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
            j = (c * j + (1 - c) * mean).clamp(0, 1)  # contrast
            if C == 3:
                sat = torch.empty(B, 1, 1, 1).uniform_(max(0.0, 1 - s / 2), 1 + s / 2)
                j = (sat * j + (1 - sat) * _grey(j)).clamp(0, 1)  # saturation
            v = torch.where(on, j, v)
        if C == 3 and self.grayscale_prob > 0:
            v = torch.where(coin(self.grayscale_prob), _grey(v).expand(-1, 3, -1, -1), v)
        if self.blur_sigma is not None and blur_p > 0:
            k = 2 * math.ceil(3 * self.blur_sigma[1]) + 1
            k = min(k, size - 1 if size % 2 == 0 else size)
            sigma = torch.empty(B, 1).uniform_(*self.blur_sigma)  # (B, 1)
            t = torch.linspace(-(k - 1) / 2, (k - 1) / 2, k)[None]  # (1, k)
            kern = torch.softmax(-0.5 * (t / sigma) ** 2, dim=1)  # (B, k), a normalised Gaussian
            kern = kern.repeat_interleave(C, dim=0)  # (B * C, k)
            y = F.pad(v.reshape(1, B * C, size, size), (k // 2,) * 4, mode="reflect")  # (1, B*C, s+k-1, s+k-1)
            y = F.conv2d(y, kern[:, None, None, :], groups=B * C)  # horizontal pass
            y = F.conv2d(y, kern[:, None, :, None], groups=B * C)  # vertical pass -> (1, B*C, s, s)
            v = torch.where(coin(blur_p), y.reshape(B, C, size, size), v)
        if sol_p > 0:
            v = torch.where(coin(sol_p), torch.where(v >= 0.5, 1.0 - v, v), v)
        return v


def _grey(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of (B, 3, H, W) images (torchvision's weights), or the image itself if grey.

    Shapes: (B, C, H, W) -> (B, 1, H, W).
    """
    if x.shape[1] == 1:
        return x
    return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])  # (B, 1, H, W)


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
            sign error of SOURCES.md S1's Algorithm 1, i.e. *maximise* H; for the experiment only).
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
        B = self._check(student_output, teacher_output)
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


def probe_eval_fn(encoder: Callable[[nn.Module], Callable[[torch.Tensor], torch.Tensor]], train_set: Dataset,
                  test_set: Dataset, k: int = 20, linear: bool = True, prefix: str = "") -> Callable[[nn.Module], Dict[str, float]]:
    """An ``eval_fn`` for ``fit``: weighted k-NN (and linear-probe) accuracy of frozen features.

    Args:
        encoder: ``model -> (images -> features)``, e.g. ``lambda m: m.teacher_embed``.
        train_set, test_set: un-augmented ``(image, label)`` datasets.
        k: neighbours of the weighted k-NN (DINO: 20).  linear: also fit the logistic-regression probe.
        prefix: prepended to the metric names (``knn_acc``, ``linear_acc``).
    """
    from ..evaluate import probe_accuracies

    def eval_fn(model: nn.Module) -> Dict[str, float]:
        res = probe_accuracies(encoder(model), train_set, test_set, k=k, linear=linear)
        return {f"{prefix}{name}": v for name, v in res.items()}

    return eval_fn


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
def plot_multicrop(img: torch.Tensor, crops: Sequence[torch.Tensor], n_global: int = 2, title: Optional[str] = None):
    """The source image, its global views and its local views, drawn at their true relative size.

    Shapes: img (C, H, W); crops: tensors (C, s, s), globals first. Returns a Figure.
    """
    import matplotlib.pyplot as plt

    from ..viz import show_image

    sizes = [img.shape[-1]] + [c.shape[-1] for c in crops]
    fig, axes = plt.subplots(1, len(sizes), figsize=(1.9 * len(sizes), 2.4),
                             gridspec_kw={"width_ratios": sizes})
    show_image(axes[0], img, "image")
    for j, c in enumerate(crops):
        kind = "global" if j < n_global else "local"
        role = "teacher + student" if j < n_global else "student only"
        show_image(axes[j + 1], c, f"{kind} {j + 1}\n{c.shape[-1]} px, {role}")
    fig.suptitle(title or "multi-crop: the teacher sees the global views, the student sees all", fontsize=10)
    fig.tight_layout()
    return fig


def plot_collapse(histories: Dict[str, Any], out_dim: int, title: Optional[str] = None):
    """Teacher entropy (against 0 and log K) and KL(P_t || P_s) per epoch for several runs (DINO Fig. 7).

    Args:
        histories: ``{run name: History}`` whose rows hold ``teacher_entropy`` and ``kl``.
        out_dim: K, to draw the ``log K`` line (uniform collapse).
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    keys = [("teacher_entropy", "teacher entropy H(P_t) (nats)"),
            ("teacher_marginal_entropy", "entropy of the batch-mean P_t"),
            ("kl", "KL(P_t || P_s) (nats)")]
    for ax, (key, label) in zip(axes, keys):
        for name, h in histories.items():
            ys = h.series(key)
            ax.plot(range(1, len(ys) + 1), ys, marker="o", ms=3, label=name)
        if key != "kl":
            ax.axhline(math.log(out_dim), color="k", ls="--", lw=1)
            ax.text(1, math.log(out_dim), f" log K = {math.log(out_dim):.2f}", va="bottom", fontsize=8)
            ax.axhline(0.0, color="grey", ls=":", lw=1)
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[-1].set_yscale("symlog", linthresh=1e-2)
    axes[0].legend(fontsize=8)
    fig.suptitle(title or "collapse diagnostics (DINO Sec. 5.3, Fig. 7)", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# The digits recipe (``survey train dino``)
# ---------------------------------------------------------------------------------------------
#: The digits recipe's photometric augmentation: none. Crops are the only augmentation. With DINO's
#: colour jitter (brightness / contrast on grey images), blur and solarisation on these 32 px
#: upsampled digits, a 30-epoch run of the cpu recipe collapsed its teacher to uniform (entropy 6.02
#: of log K = 6.24; k-NN 56.9%, linear 90.0%); with crops only, the same 30 epochs reached k-NN
#: 83.3%, linear 95.0%, and 50 epochs (the cpu recipe) k-NN 91.4%, linear 97.5% (seed 0, one thread;
#: measured 2026-12-01).
DIGITS_PHOTOMETRIC: Dict[str, Any] = dict(color_jitter=0.0, blur_sigma=None, solarize_prob=0.0)

#: DINO on the 32 px digits, by profile: model, crops, head, loss and optimisation.
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
    # cpu cost (one thread, another job on the second core): 15-19 s per epoch of 1,437 images x 6
    # views (the teacher on 2 x 65 tokens, the student on 2 x 65 + 4 x 17 tokens, forward and
    # backward), ~10 s per k-NN + linear probe; 50 epochs (1,150 steps) 878 s probing every 10
    # epochs, 1,124 s probing every 2 (notebook 07). The schedule length matters, not only the epoch
    # count: at epoch 30 of this 50-epoch schedule k-NN was 89.4%, at the end of a 30-epoch one 83.3%.
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


def digits_multicrop(crops: dict, batched: bool = False) -> MultiCropTransform:
    """The digits' multi-crop transform (per image, or :class:`BatchMultiCrop`); inputs are
    :class:`~survey_lib.data.DigitsDataset` items (normalised), outputs normalised the same way."""
    from ..data import DIGITS_MEAN, DIGITS_STD

    cls = BatchMultiCrop if batched else MultiCropTransform
    return cls(mean=[DIGITS_MEAN], std=[DIGITS_STD], inputs_normalized=True, **crops)


def digits_loader(base: Dataset, crops: dict, batch_size: int, seed: int = 0) -> torch.utils.data.DataLoader:
    """Shuffled DataLoader of multi-crop batches ``[crops, labels]`` built with :class:`BatchMultiCrop`."""
    aug = digits_multicrop(crops, batched=True)
    return torch.utils.data.DataLoader(base, batch_size=batch_size, shuffle=True, collate_fn=aug.collate,
                                       generator=torch.Generator().manual_seed(seed))


def train_dino(profile: str = "cpu", checkpoint: Optional[str] = None, seed: int = 0, backbone: str = "vit",
               eval_every: Optional[int] = None) -> dict:
    """Train DINO on the digits (no labels) and probe the teacher's feature (k-NN and linear).

    Args:
        profile: ``smoke``, ``cpu`` or ``full`` (:data:`DINO_CONFIGS`).
        backbone: ``"vit"`` or ``"nat"`` (DinoNAT; needs ``survey_lib.models.nat``).
        eval_every: probe every this many epochs (default: only at the end).

    Returns: ``{"model", "history", "test_acc" (k-NN), "knn_acc", "linear_acc", "seconds"}``.
    """
    from ..data import DigitsDataset
    from ..models.vit import VisionTransformer
    from ..train import TrainConfig, fit, seed_everything

    if profile not in DINO_CONFIGS:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(DINO_CONFIGS)}")
    cfg = DINO_CONFIGS[profile]
    seed_everything(seed)
    if backbone == "vit":
        net = VisionTransformer(**cfg["vit"])
        embed_dim = cfg["vit"]["embed_dim"]
    elif backbone == "nat":
        from ..models.nat import nat_for_profile  # type: ignore[attr-defined]

        net = nat_for_profile(profile, num_classes=0)
        embed_dim = getattr(net, "num_features", getattr(net, "embed_dim", None))
    else:
        raise ValueError(f"backbone must be 'vit' or 'nat', got {backbone!r}")
    epochs = cfg["train"]["epochs"]
    model = build_dino(net, embed_dim, epochs, n_local_crops=cfg["crops"]["n_local_crops"],
                       momentum_teacher=cfg["momentum_teacher"], **cfg["head"], **cfg["loss"])
    base = DigitsDataset(train=True, img_size=cfg["vit"]["img_size"])
    if cfg.get("train_subset"):
        base = torch.utils.data.Subset(base, range(cfg["train_subset"]))
    train_loader = digits_loader(base, cfg["crops"], cfg["train"]["batch_size"], seed)
    probe_train = DigitsDataset(train=True, img_size=cfg["vit"]["img_size"])
    test_set = DigitsDataset(train=False, img_size=cfg["vit"]["img_size"])
    eval_fn = probe_eval_fn(lambda m: m.teacher_embed, probe_train, test_set)
    tc = TrainConfig(**cfg["train"], seed=seed, checkpoint_path=checkpoint, eval_every=eval_every or epochs,
                     desc=f"dino-{backbone} [{profile}]")
    history = fit(model, train_loader, config=tc, step_fn=dino_step, eval_fn=eval_fn)
    last = history.last
    return {"model": model, "history": history, "test_acc": last.get("knn_acc"), "knn_acc": last.get("knn_acc"),
            "linear_acc": last.get("linear_acc"), "seconds": history.seconds}
