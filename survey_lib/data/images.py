"""scikit-image's bundled images: colour photographs and the LFW face / non-face subset.

* :func:`load_photo` / :class:`PhotoCrops` - the bundled colour photographs (an unlabelled image
  source for MAE and DINO figures).
* :class:`LFWSubset` - the 200-image LFW subset: 100 faces and 100 non-faces, 25 x 25 grey.

Both ship inside scikit-image (``skimage.data``), so nothing is downloaded.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from .base import InMemoryImages

__all__ = ["PHOTO_NAMES", "load_photo", "PhotoCrops", "LFWSubset"]

#: Colour photographs bundled with scikit-image (no download needed).
PHOTO_NAMES: Tuple[str, ...] = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")


def load_photo(name: str, size: Optional[int] = None) -> torch.Tensor:
    """One of scikit-image's bundled colour photographs as a float tensor in [0, 1].

    Args:
        name: one of :data:`PHOTO_NAMES`.
        size: if given, centre-crop to a square and resize to ``size`` x ``size`` (bilinear, antialiased).

    Shapes: returns (3, H, W).

    Raises:
        ValueError: for an unknown name.
    """
    import skimage.data

    if name not in PHOTO_NAMES:
        raise ValueError(f"unknown photo {name!r}; choose one of {PHOTO_NAMES}")
    arr = getattr(skimage.data, name)()
    img = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / 255.0  # (3, H, W)
    if size is not None:
        side = min(img.shape[1:])
        img = v2.functional.center_crop(img, [side, side])
        img = v2.functional.resize(img, [size, size], antialias=True)
    return img


class PhotoCrops(Dataset):
    """Random square crops of the bundled photographs (an unlabelled image source for MAE / DINO).

    Each item is a random resized crop (scale ``scale`` of the photo's area) of one photograph,
    with a random horizontal flip; the label is the photograph's index in ``names``. The crops are
    a deterministic function of ``(seed, index)``, so an "epoch" is reproducible.

    Shapes: item = (image (3, img_size, img_size) float32 in [0, 1], label int).
    """

    def __init__(
        self,
        names: Sequence[str] = PHOTO_NAMES[:4],
        img_size: int = 32,
        length: int = 2048,
        scale: Tuple[float, float] = (0.05, 0.3),
        source_size: int = 256,
        seed: int = 0,
    ) -> None:
        self.names = list(names)
        self.photos = [load_photo(n, size=source_size) for n in self.names]
        self.length = length
        self.seed = seed
        self.transform = v2.Compose(
            [v2.RandomResizedCrop(img_size, scale=scale, antialias=True), v2.RandomHorizontalFlip()]
        )

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        label = int(torch.randint(len(self.photos), (1,), generator=g))
        state = torch.get_rng_state()
        torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=g)))
        try:
            img = self.transform(self.photos[label])
        finally:
            torch.set_rng_state(state)
        return img, label


class LFWSubset(InMemoryImages):
    """scikit-image's LFW subset: 100 face and 100 non-face grey 25 x 25 crops (label 1 = face).

    A fixed stratified split (seed 0): ``test_size`` images for testing, then ``val_size`` of the
    rest for validation (default 125 / 25 / 50). Images are resized bilinearly to ``img_size`` and
    scaled to [-1, 1].

    Args:
        train: the training split (True) or the test split (False); ``split`` overrides it.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Shapes: item = (image (in_chans, img_size, img_size) float32, label int).
    """

    classes = ["non-face", "face"]

    def __init__(self, train: bool = True, img_size: int = 32, in_chans: int = 1, test_size: int = 50,
                 augment: bool = False, seed: int = 0, split: Optional[str] = None, val_size: int = 25) -> None:
        import skimage.data
        from sklearn.model_selection import train_test_split

        split = split or ("train" if train else "test")
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; choose one of ('train', 'val', 'test')")
        x = np.asarray(skimage.data.lfw_subset(), dtype=np.float32)  # (200, 25, 25) in [0, 1]
        y = np.r_[np.ones(100), np.zeros(100)].astype(np.int64)
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)
        x_tr, x_va, y_tr, y_va = train_test_split(x_tr, y_tr, test_size=val_size, stratify=y_tr, random_state=seed)
        x, y = {"train": (x_tr, y_tr), "val": (x_va, y_va), "test": (x_te, y_te)}[split]
        self.split = split
        imgs = torch.from_numpy(x).unsqueeze(1)  # (n, 1, 25, 25)
        imgs = v2.Resize((img_size, img_size), antialias=True)(imgs) * 2 - 1  # (n, 1, S, S)
        self.images = imgs.expand(-1, in_chans, -1, -1).contiguous()
        self.targets = torch.from_numpy(y)
        self.transform = v2.RandomHorizontalFlip() if augment else None
