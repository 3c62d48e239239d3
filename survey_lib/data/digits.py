"""scikit-learn's handwritten digits: the fixed split and the torch Dataset (the ``smoke`` data).

* :func:`digits_split` - scikit-learn's 1,797 digits (UCI optdigits test set, 8 x 8 grey, 10
  classes) with a fixed stratified split of 1,257 train / 180 validation / 360 test images.
* :class:`DigitsDataset` - the split as a torch Dataset, upsampled for patch-based models, with
  random shifts as augmentation.

Source: Alpaydin & Kaynak 1998, UCI "Optical Recognition of Handwritten Digits"; shipped inside
scikit-learn (``sklearn.datasets.load_digits``), so nothing is downloaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

from .base import InMemoryImages
from .transforms import RandomShift

__all__ = ["DIGIT_NAMES", "DIGITS_MEAN", "DIGITS_STD", "DigitsSplit", "digits_split", "DigitsDataset"]

DIGIT_NAMES: List[str] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


#: Mean and standard deviation of the digits training split after scaling to [0, 1]
#: (computed once by ``digits_split``; stated here so notebooks can un-normalise for display).
DIGITS_MEAN, DIGITS_STD = 0.3054, 0.3761


@dataclass(frozen=True)
class DigitsSplit:
    """The fixed split: images in [0, 1] of shape (n, 8, 8) float32 and int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray

    def part(self, split: str) -> Tuple[np.ndarray, np.ndarray]:
        """Images and labels of ``"train"``, ``"val"`` or ``"test"``."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; choose one of ('train', 'val', 'test')")
        return getattr(self, f"x_{split}"), getattr(self, f"y_{split}")


def digits_split(seed: int = 0, test_size: int = 360, val_size: int = 180) -> DigitsSplit:
    """scikit-learn's digits with a fixed stratified split: 1,257 train / 180 validation / 360 test.

    The 360 test images are drawn first (the same test split as before validation existed), then
    180 validation images from the remaining 1,437, both stratified with ``random_state=seed``.
    Pixel values 0..16 are divided by 16, giving [0, 1].

    Shapes: x_* (n, 8, 8) float32; y_* (n,) int64.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    x_rest, x_te, y_rest, y_te = train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)
    x_tr, x_va, y_tr, y_va = train_test_split(x_rest, y_rest, test_size=val_size, stratify=y_rest, random_state=seed)
    return DigitsSplit(x_tr, y_tr, x_te, y_te, x_va, y_va)


class DigitsDataset(InMemoryImages):
    """The digits as a torch Dataset, upsampled for patch-based models.

    Resize rule: each 8 x 8 image (scaled to [0, 1]) is resized to ``img_size`` x ``img_size`` with
    bilinear interpolation (torchvision ``Resize``, ``align_corners=False``), then normalised with the
    training split's mean and std (:data:`DIGITS_MEAN`, :data:`DIGITS_STD`). With ``augment=True``
    training images are shifted at random by up to ``max_shift`` pixels (zero padding then a random
    crop), a label-preserving augmentation for digits (flips and rotations are not: 6 vs 9).

    Args:
        train: the training split (True) or the test split (False); ``split`` overrides it.
        split: ``"train"`` (1,257 images), ``"val"`` (180) or ``"test"`` (360); see :func:`digits_split`.
        img_size: output side in pixels (8 keeps the raw grid).
        augment: random shifts (training only makes sense).
        in_chans: 1 (grey) or 3 (the grey channel repeated, for RGB models).
        max_shift: largest shift in output pixels; default ``img_size // 8`` (one original pixel).
        label_fraction: keep only this stratified fraction of the training labels (small-data studies).
        seed: split seed (keep 0 to compare with every number in this project).

    Shapes: item = (image (in_chans, img_size, img_size) float32, label int).
    """

    classes = DIGIT_NAMES

    def __init__(
        self,
        train: bool = True,
        img_size: int = 32,
        augment: bool = False,
        in_chans: int = 1,
        max_shift: Optional[int] = None,
        label_fraction: float = 1.0,
        seed: int = 0,
        split: Optional[str] = None,
    ) -> None:
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
        if not 0.0 < label_fraction <= 1.0:
            raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction}")
        split = split or ("train" if train else "test")
        x, y = digits_split(seed).part(split)
        self.split = split
        if split == "train" and label_fraction < 1.0:
            from sklearn.model_selection import train_test_split

            keep, _ = train_test_split(np.arange(len(y)), train_size=label_fraction, stratify=y, random_state=seed)
            keep = np.sort(keep)
            x, y = x[keep], y[keep]
        self.img_size = img_size
        self.in_chans = in_chans
        imgs = torch.from_numpy(x).unsqueeze(1)  # (n, 1, 8, 8)
        # Deterministic part, done once: resize (bilinear) and normalise.
        resize = v2.Resize((img_size, img_size), interpolation=InterpolationMode.BILINEAR, antialias=True)
        imgs = resize(imgs)  # (n, 1, img_size, img_size)
        imgs = (imgs - DIGITS_MEAN) / DIGITS_STD
        if in_chans == 3:
            imgs = imgs.expand(-1, 3, -1, -1).contiguous()  # (n, 3, img_size, img_size)
        self.images = imgs
        self.targets = torch.from_numpy(y)
        shift = max(1, img_size // 8) if max_shift is None else max_shift
        # Random part, per item: a shift of up to `shift` pixels (pad with the background value,
        # then crop back to img_size at a random offset).
        self.transform: Optional[Callable] = RandomShift(shift, fill=(0.0 - DIGITS_MEAN) / DIGITS_STD) if augment and shift > 0 else None

    @staticmethod
    def denormalize(img: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation for display: back to [0, 1]."""
        return (img * DIGITS_STD + DIGITS_MEAN).clamp(0, 1)
