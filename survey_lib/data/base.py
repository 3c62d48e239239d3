"""The in-memory labelled image dataset every embedded dataset is: images, labels, a random transform."""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch.utils.data import Dataset

__all__ = ["InMemoryImages"]


class InMemoryImages(Dataset):
    """Images held as one tensor, their labels, and an optional per-item random transform.

    Subclasses fill ``images`` (n, C, H, W) float32, ``targets`` (n,) int64 and ``transform``
    (``image -> image``, applied on every read, e.g. a random shift; None for none).

    Shapes: item = (image (C, H, W) float32, label int).
    """

    images: torch.Tensor
    targets: torch.Tensor
    transform: Optional[Callable] = None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        img = self.images[i]
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[i])
