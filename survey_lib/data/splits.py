"""Subsets and loaders: small labelled fractions, the semi-supervised setting, fixed-step epochs.

* :func:`labelled_indices` - a stratified, seeded fraction of a training split (small-data studies).
* :class:`PartiallyLabelled` - every image, with the label hidden (:data:`UNLABELLED`) outside a subset.
* :func:`fixed_steps_loader` - an epoch of a fixed number of samples, whatever the dataset size, so
  that runs on different fractions take the same number of optimiser steps.
* :func:`make_loader` - a DataLoader whose shuffling has its own seeded generator.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

__all__ = ["UNLABELLED", "labelled_indices", "PartiallyLabelled", "fixed_steps_loader", "make_loader"]

#: The label of an image whose label is hidden (semi-supervised setting); losses skip it.
UNLABELLED = -1


def labelled_indices(targets: Union[Sequence[int], torch.Tensor, np.ndarray], fraction: float,
                     seed: int = 0) -> np.ndarray:
    """Sorted indices of a stratified ``fraction`` of a labelled set (the images whose label we keep).

    The same selection as ``DigitsDataset(label_fraction=fraction, seed=seed)``: scikit-learn's
    ``train_test_split(train_size=fraction, stratify=targets, random_state=seed)``; ``fraction = 1``
    keeps everything.

    Shapes: targets (n,) -> (round-ish(fraction * n),) int64.

    Raises:
        ValueError: ``fraction`` outside (0, 1].
    """
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}; e.g. 0.1 keeps 10% of the labels")
    y = np.asarray(torch.as_tensor(targets).numpy() if isinstance(targets, torch.Tensor) else targets)
    if fraction == 1.0:
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(np.arange(len(y)), train_size=fraction, stratify=y, random_state=seed)
    return np.sort(keep)


class PartiallyLabelled(Dataset):
    """Every image of ``base``, with its label only if its index is in ``labelled``; else ``UNLABELLED``.

    The semi-supervised setting: all images feed the self-supervised losses, only the labelled ones
    the supervised loss.

    Shapes: item = (image, label or -1).
    """

    def __init__(self, base: Dataset, labelled: Sequence[int]) -> None:
        self.base = base
        self.labelled = set(int(i) for i in labelled)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        img, y = self.base[i]
        return img, (int(y) if i in self.labelled else UNLABELLED)


def fixed_steps_loader(dataset: Dataset, batch_size: int, samples_per_epoch: int, seed: int = 0,
                       collate_fn: Optional[Any] = None) -> DataLoader:
    """A shuffled DataLoader whose "epoch" is ``samples_per_epoch`` draws whatever the dataset size.

    Draws are without replacement within each pass over the dataset (a small set is repeated), so
    two methods trained on different numbers of images get the same number of optimiser steps per
    epoch, ``ceil(samples_per_epoch / batch_size)``: the "same budget" of the label-fraction study.
    """
    if samples_per_epoch < 1 or batch_size < 1:
        raise ValueError(f"samples_per_epoch and batch_size must be >= 1, got {samples_per_epoch}, {batch_size}")
    g = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(dataset, replacement=False, num_samples=samples_per_epoch, generator=g)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn, generator=g)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0,
                drop_last: bool = False, num_workers: int = 0) -> DataLoader:
    """A DataLoader whose shuffling is driven by its own seeded generator (reproducible on CPU)."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=g, drop_last=drop_last,
                      num_workers=num_workers)
