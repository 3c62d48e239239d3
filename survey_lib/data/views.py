"""Several random views of one image: multi-crop (DINO), the multi-task views, SimCLR's pairs.

* :class:`MultiCropTransform` / :class:`BatchMultiCrop` / :class:`MultiCropDataset` - DINO's 2
  global and several local crops (Caron et al. 2021, arXiv:2104.14294, Sec. 3.1 "multi-crop"; Caron
  et al. 2020, SwAV, arXiv:2006.09882).
* :class:`MultiTaskViews` - the ITMO thesis's views (2 global, 1 masked global, local crops, quarter
  turns with their labels): :func:`mask_rectangle`, :func:`random_rotation`.
* :func:`simclr_augment` / :class:`TwoViews` - two random views of each image for SimCLR (Chen et
  al. 2020, arXiv:2002.05709, Sec. 3).

Deviations from the papers:
    * DINO crops: the scales and sizes are arguments (the digits recipe uses global 32 px and local
      16 px crops of 32 px digits, no flips: a flipped 2 is not a 2).
    * SimCLR: no colour, flip or blur augmentation for digits (flips change digits, colour does not
      exist); views differ by crop, shift, small rotation and a small erased patch.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.transforms import v2

from .digits import DIGITS_MEAN, DIGITS_STD

__all__ = [
    "MultiCropTransform",
    "MultiCropDataset",
    "BatchMultiCrop",
    "rotate_quarter_turns",
    "random_rotation",
    "sample_mask_boxes",
    "mask_rectangle",
    "MultiTaskViews",
    "simclr_augment",
    "TwoViews",
]


# ---------------------------------------------------------------------------------------------
# Multi-crop (DINO Sec. 3.1 "multi-crop")
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
# Rotation labels (Gidaris et al. 2018, arXiv:1803.07728)
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
# The masked view (the ITMO thesis)
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
# All the views of a batch (the ITMO thesis)
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
# Two views for SimCLR
# ---------------------------------------------------------------------------------------------
def simclr_augment(img_size: int = 32, crop_scale: Tuple[float, float] = (0.6, 1.0), degrees: float = 10.0,
                   translate: float = 0.125, erase_p: float = 0.5,
                   background: Optional[float] = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """SimCLR's "random crop and resize" adapted to normalised digits (no flips, no colour).

    Random resized crop (``crop_scale`` of the area, aspect 3/4-4/3), a random affine map (rotation
    up to ``degrees``, shift up to ``translate`` of the side, filled with the background value), and
    with probability ``erase_p`` a small erased rectangle (2-10% of the area, background value).
    ``background`` is the normalised value of a black pixel (default: the 8 x 8 digits';
    :func:`survey_lib.data.catalog.background_value` gives each dataset's).

    Shapes: (C, img_size, img_size) -> (C, img_size, img_size).

    Raises:
        ValueError: ``crop_scale`` not within (0, 1] or not increasing.
    """
    if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
        raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale}")
    background = (0.0 - DIGITS_MEAN) / DIGITS_STD if background is None else float(background)
    return v2.Compose([
        v2.RandomResizedCrop(img_size, scale=tuple(crop_scale), ratio=(0.75, 4 / 3), antialias=True),
        v2.RandomAffine(degrees=degrees, translate=(translate, translate), fill=background),
        v2.RandomErasing(p=erase_p, scale=(0.02, 0.1), value=background),
    ])


class TwoViews(Dataset):
    """Two independent random views of each item of ``dataset``: item = ((view_a, view_b), label).

    Args:
        dataset: yields ``(image, label)``; use it without its own augmentation.
        transform: applied independently to produce each view (default :func:`simclr_augment`).

    Shapes: item = ((C, H, W), (C, H, W)), int.
    """

    def __init__(self, dataset: Dataset, transform: Optional[Callable] = None) -> None:
        self.dataset = dataset
        self.transform = transform if transform is not None else simclr_augment()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        img, y = self.dataset[i][:2]
        return (self.transform(img), self.transform(img)), y
