"""Subsets and loaders: small labelled fractions, the semi-supervised setting, fixed-step epochs.

* :func:`labelled_indices` - a stratified, seeded fraction of a training split (small-data studies).
* :class:`PartiallyLabelled` - every image, with the label hidden (:data:`UNLABELLED`) outside a subset.
* :func:`fixed_steps_loader` - an epoch of a fixed number of samples, whatever the dataset size, so
  that runs on different fractions take the same number of optimiser steps.
* :func:`labelled_unlabelled_loader` - the semi-supervised setting's batches: a fixed number of
  labelled images plus unlabelled ones in every batch (FixMatch's two streams).
* :func:`make_loader` - a DataLoader whose shuffling has its own seeded generator.
"""
from __future__ import annotations

from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

__all__ = ["UNLABELLED", "labelled_indices", "PartiallyLabelled", "fixed_steps_loader", "LabelledAndHidden",
           "LabelledUnlabelledBatches", "labelled_unlabelled_loader", "make_loader"]

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


class LabelledAndHidden(Dataset):
    """Every image of ``base`` twice: index ``i < n`` with its label, index ``n + i`` with the label
    hidden (:data:`UNLABELLED`). :class:`LabelledUnlabelledBatches` draws the labelled stream from the
    first half (only the labelled subset) and the unlabelled stream from the second (every image).

    Shapes: item = (image, label or -1); ``len`` = 2 n.
    """

    def __init__(self, base: Dataset) -> None:
        self.base = base
        self.n = len(base)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return 2 * self.n

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        if not 0 <= i < 2 * self.n:
            raise IndexError(f"index {i} out of range for {2 * self.n} items")
        img, y = self.base[i % self.n]
        return img, (int(y) if i < self.n else UNLABELLED)


class _Stream:
    """Endless draws from ``pool``: a fresh seeded permutation per pass, without replacement within a pass."""

    def __init__(self, pool: Sequence[int], generator: torch.Generator) -> None:
        self.pool, self.g, self.order, self.pos = torch.as_tensor(list(pool), dtype=torch.long), generator, None, 0

    def take(self, k: int) -> List[int]:
        out: List[int] = []
        while len(out) < k:
            if self.order is None or self.pos == len(self.order):
                self.order, self.pos = self.pool[torch.randperm(len(self.pool), generator=self.g)], 0
            m = min(k - len(out), len(self.order) - self.pos)
            out += self.order[self.pos: self.pos + m].tolist()
            self.pos += m
        return out


class LabelledUnlabelledBatches(Sampler):
    """Batches of ``n_labelled`` labelled + ``n_unlabelled`` unlabelled indices of a :class:`LabelledAndHidden`.

    The semi-supervised setting of FixMatch (Sohn et al. 2020, arXiv:2001.07685, Sec. 2.3: a batch of
    B labelled and mu * B unlabelled images per step): the supervised loss sees ``n_labelled`` labelled
    images in every batch whatever the label fraction, and the self-supervised losses see all
    ``n_labelled + n_unlabelled``. Drawn from *one* shuffled pool of all images, a 10% labelled set
    gives a batch of 64 about 6 labelled images: the supervised term then sees a tenth of the label
    draws of the small-data setting at the same steps.

    Each stream draws without replacement within a pass over its pool and reshuffles per pass (the
    labelled stream cycles its small pool many times per epoch; a pool smaller than ``n_labelled``, or
    a pass ending mid-batch, can put an image twice in one batch). ``len`` = ``steps`` batches; the
    streams carry on across epochs (each epoch gets new batches; a new sampler with the same
    generator seed repeats them).

    Args:
        labelled: indices (into the base dataset) of the labelled images.  n_base: size of the base.
        n_labelled, n_unlabelled: images of each stream per batch.  steps: batches per epoch.
        generator: drives both streams (seeded: the same seed gives the same batches).

    Raises:
        ValueError: an empty labelled set, an index outside the base, ``n_labelled < 1``,
            ``n_unlabelled < 0`` or ``steps < 1``.
    """

    def __init__(self, labelled: Sequence[int], n_base: int, n_labelled: int, n_unlabelled: int, steps: int,
                 generator: Optional[torch.Generator] = None) -> None:
        labelled = [int(i) for i in labelled]
        if not labelled:
            raise ValueError("the labelled set is empty: the semi-supervised setting needs at least one labelled image")
        if min(labelled) < 0 or max(labelled) >= n_base:
            raise ValueError(f"labelled indices must lie in [0, {n_base}), got {min(labelled)}..{max(labelled)}")
        if n_labelled < 1 or n_unlabelled < 0 or steps < 1:
            raise ValueError(f"need n_labelled >= 1, n_unlabelled >= 0 and steps >= 1, got {n_labelled}, "
                             f"{n_unlabelled}, {steps}")
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        self.n_base, self.n_labelled, self.n_unlabelled, self.steps = n_base, n_labelled, n_unlabelled, steps
        self._lab = _Stream(labelled, g)
        self._unl = _Stream(range(n_base, 2 * n_base), g)  # LabelledAndHidden's hidden-label half

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[List[int]]:
        for _ in range(self.steps):
            yield self._lab.take(self.n_labelled) + self._unl.take(self.n_unlabelled)


def labelled_unlabelled_loader(base: Dataset, labelled: Sequence[int], n_labelled: int, n_unlabelled: int,
                               samples_per_epoch: int, seed: int = 0, collate_fn: Optional[Any] = None) -> DataLoader:
    """The semi-supervised setting's loader: every batch holds ``n_labelled`` labelled images of
    ``base`` (from ``labelled``) and ``n_unlabelled`` images drawn from all of ``base`` with their labels
    hidden (:class:`LabelledUnlabelledBatches` over :class:`LabelledAndHidden`).

    An epoch has ``ceil(samples_per_epoch / n_labelled)`` batches: as many steps as
    :func:`fixed_steps_loader` gives the small-data setting with batch size ``n_labelled``.

    Shapes: each batch ``n_labelled + n_unlabelled`` items, the labelled ones first.

    Raises:
        ValueError: see :class:`LabelledUnlabelledBatches`; ``samples_per_epoch < 1``.
    """
    if samples_per_epoch < 1:
        raise ValueError(f"samples_per_epoch must be >= 1, got {samples_per_epoch}")
    steps = -(-int(samples_per_epoch) // max(1, int(n_labelled)))
    sampler = LabelledUnlabelledBatches(labelled, len(base), n_labelled, n_unlabelled, steps,  # type: ignore[arg-type]
                                        torch.Generator().manual_seed(seed))
    return DataLoader(LabelledAndHidden(base), batch_sampler=sampler, collate_fn=collate_fn)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0,
                drop_last: bool = False, num_workers: int = 0) -> DataLoader:
    """A DataLoader whose shuffling is driven by its own seeded generator (reproducible on CPU)."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=g, drop_last=drop_last,
                      num_workers=num_workers)
