"""Real datasets found on local disk: torchvision's datasets, FER2013's csv, and video frames.

Nothing here downloads unless the caller passes ``download=True`` (torchvision datasets); a missing
dataset raises :class:`DatasetNotFoundError` with the path where the files are expected.

* :func:`load_torchvision_dataset` - CIFAR-10, CIFAR-100, Flowers102, Oxford-IIIT Pets, FGVC
  Aircraft, Stanford Cars from a local root.
* :class:`FER2013` - facial expressions from the Kaggle ``fer2013.csv``.
* :func:`read_video_frames` - frames of a local video or animated image.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "DatasetNotFoundError",
    "data_root",
    "TORCHVISION_DATASETS",
    "load_torchvision_dataset",
    "FER2013_CLASSES",
    "FER2013_SPLITS",
    "fer2013_default_path",
    "FER2013",
    "read_video_frames",
]

class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not where the loader expected them; the message says where to put them."""


#: torchvision class and the folder it expects under ``root``.
TORCHVISION_DATASETS: Dict[str, Tuple[str, str]] = {
    "mnist": ("MNIST", "MNIST"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
    "cifar100": ("CIFAR100", "cifar-100-python"),
    "flowers102": ("Flowers102", "flowers-102"),
    "pets": ("OxfordIIITPet", "oxford-iiit-pet"),
    "aircraft": ("FGVCAircraft", "fgvc-aircraft-2013b"),
    "cars": ("StanfordCars", "stanford_cars"),
}


def data_root() -> Path:
    """``$SURVEY_DATA_ROOT`` if set, else ``~/data``: where datasets on disk are looked for (read
    when called, so a changed environment is honoured)."""
    return Path(os.environ.get("SURVEY_DATA_ROOT", Path.home() / "data"))


def load_torchvision_dataset(
    name: str,
    root: Union[str, Path, None] = None,
    train: bool = True,
    transform: Optional[Callable] = None,
    download: bool = False,
) -> Dataset:
    """A torchvision dataset from a local folder; downloads only when ``download=True``.

    Args:
        name: a key of :data:`TORCHVISION_DATASETS` (``cifar10``, ``flowers102``, ``pets``, ...).
        root: the folder holding the dataset's own folder (default ``$SURVEY_DATA_ROOT`` or ``~/data``).
        train: training split (``train``/``trainval``) or test split.
        transform: a torchvision transform applied to each PIL image.
        download: let torchvision fetch the files (needs network; off by default).

    Raises:
        ValueError: unknown name.
        DatasetNotFoundError: the files are absent and ``download`` is False; the message names the
            expected path.
    """
    import torchvision.datasets as tvd

    key = name.lower()
    if key not in TORCHVISION_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(TORCHVISION_DATASETS)}")
    cls_name, folder = TORCHVISION_DATASETS[key]
    root = Path(root) if root is not None else data_root()
    expected = root / folder
    if not download and not expected.exists():
        raise DatasetNotFoundError(
            f"{cls_name} not found: expected its files in {expected}. Copy the extracted dataset there "
            f"(or set SURVEY_DATA_ROOT / pass root=...), or pass download=True on a machine with network."
        )
    cls = getattr(tvd, cls_name)
    kwargs: dict = dict(root=str(root), transform=transform, download=download)
    if cls_name.startswith("CIFAR") or cls_name == "MNIST":
        kwargs["train"] = train
    elif cls_name == "OxfordIIITPet":
        kwargs["split"] = "trainval" if train else "test"
    else:
        kwargs["split"] = "train" if train else "test"
    try:
        return cls(**kwargs)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise DatasetNotFoundError(f"{cls_name} in {expected} is incomplete or corrupted ({e}); re-copy it") from e


# ---------------------------------------------------------------------------------------------
# FER2013 (facial expressions) from the standard Kaggle csv
# ---------------------------------------------------------------------------------------------
#: FER2013 class names in the csv's label order 0..6 (0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad,
#: 5 Surprise, 6 Neutral), as in Goodfellow et al. 2013, "Challenges in Representation Learning",
#: arXiv:1307.0414, and the Kaggle ``fer2013.csv``.
FER2013_CLASSES: List[str] = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]


#: Our split names -> the csv's ``Usage`` values.
FER2013_SPLITS: Dict[str, str] = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}


FER2013_SIZE = 48  # every image is 48 x 48 grey


def fer2013_default_path() -> Path:
    """``$SURVEY_DATA_ROOT/fer2013/fer2013.csv`` (``~/data/fer2013/fer2013.csv`` if the variable is unset),
    read when called so a changed environment is honoured."""
    return data_root() / "fer2013" / "fer2013.csv"


def _parse_fer2013(path: Path) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read and validate every row of a FER2013 csv.

    Returns images (n, 48, 48) uint8, labels (n,) int64 and usage (n,) str.

    Raises:
        ValueError: missing columns, or a malformed row; the message names the file and line number.
    """
    import csv

    n_pix = FER2013_SIZE * FER2013_SIZE
    usages = set(FER2013_SPLITS.values())
    images: List[np.ndarray] = []
    labels: List[int] = []
    usage: List[str] = []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path} is empty; expected a header 'emotion,pixels,Usage' and one row per image")
        names = [h.strip() for h in header]
        missing = [c for c in ("emotion", "pixels", "Usage") if c not in names]
        if missing:
            raise ValueError(f"{path}, line 1: header {names} lacks column(s) {missing}; "
                             f"expected the Kaggle fer2013.csv header 'emotion,pixels,Usage'")
        i_emo, i_pix, i_use = names.index("emotion"), names.index("pixels"), names.index("Usage")
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue  # blank lines (e.g. a trailing newline) carry no image
            where = f"{path}, line {line}"
            if len(row) != len(names):
                raise ValueError(f"{where}: expected {len(names)} fields ({', '.join(names)}), got {len(row)}")
            emo = row[i_emo].strip()
            if not (emo.isdigit() and 0 <= int(emo) < len(FER2013_CLASSES)):
                raise ValueError(f"{where}: emotion {emo!r} is not an integer label in 0..{len(FER2013_CLASSES) - 1}")
            use = row[i_use].strip()
            if use not in usages:
                raise ValueError(f"{where}: unknown Usage {use!r}; expected one of {sorted(usages)}")
            text = row[i_pix]
            try:  # NumPy's C text parser: ~5x faster than converting 2,304 tokens one by one
                pix = np.fromstring(text, dtype=np.int64, sep=" ")
            except ValueError:  # it stops at the first token that is not an integer
                bad = next((t for t in text.split() if not t.lstrip("+-").isdigit()), text[:20])
                raise ValueError(f"{where}: pixel value {bad!r} is not an integer") from None
            if pix.size != n_pix:
                raise ValueError(f"{where}: expected {n_pix} pixel values (48 x 48), got {pix.size}")
            if pix.min() < 0 or pix.max() > 255:
                raise ValueError(f"{where}: pixel values must lie in 0..255, found {pix.min()}..{pix.max()}")
            images.append(pix.astype(np.uint8).reshape(FER2013_SIZE, FER2013_SIZE))
            labels.append(int(emo))
            usage.append(use)
    if not images:
        raise ValueError(f"{path} has a header but no image rows")
    return np.stack(images), np.asarray(labels, dtype=np.int64), np.asarray(usage)


_FER_CACHE: Dict[Tuple[str, int, int], Tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


class FER2013(Dataset):
    """FER2013 facial-expression images from the standard ``fer2013.csv`` on local disk.

    The csv has one row per image with the columns ``emotion`` (0..6, see :data:`FER2013_CLASSES`),
    ``pixels`` (2,304 space-separated integers 0..255, row-major 48 x 48) and ``Usage``
    (``Training`` 28,709 / ``PublicTest`` 3,589 / ``PrivateTest`` 3,589 rows in the Kaggle release).
    Every row of the file is validated once (and cached per file path, size and modification time);
    nothing is silently dropped. Never downloaded: FER2013's licence requires a Kaggle account.

    Args:
        csv_path: the csv; default :func:`fer2013_default_path` (``$SURVEY_DATA_ROOT/fer2013/fer2013.csv``).
        split: ``'train'`` (Usage Training), ``'val'`` (PublicTest) or ``'test'`` (PrivateTest).
        transform: applied to each image tensor (1, 48, 48) float in [0, 1], e.g. a torchvision v2 resize.

    Shapes: item = (image (1, 48, 48) float32 in [0, 1], or whatever ``transform`` returns; label int).

    Raises:
        DatasetNotFoundError: no file at the path; the message names the expected path.
        ValueError: unknown split, missing columns, or a malformed row (wrong pixel count, a
            non-integer pixel or label, a label outside 0..6, an unknown Usage); the message names the
            line number.
    """

    classes = FER2013_CLASSES

    def __init__(self, csv_path: Union[str, Path, None] = None, split: str = "train",
                 transform: Optional[Callable] = None) -> None:
        if split not in FER2013_SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {sorted(FER2013_SPLITS)} "
                             f"(Usage {FER2013_SPLITS})")
        path = Path(csv_path) if csv_path is not None else fer2013_default_path()
        if not path.is_file():
            raise DatasetNotFoundError(
                f"FER2013 not found: expected the csv at {path}. Download fer2013.csv from Kaggle "
                f"('Challenges in Representation Learning: Facial Expression Recognition Challenge') and put "
                f"it there, set SURVEY_DATA_ROOT to the folder holding fer2013/fer2013.csv, or pass csv_path=..."
            )
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _FER_CACHE:
            _FER_CACHE.clear()  # keep at most one parsed file (~83 MB for the full csv)
            _FER_CACHE[key] = _parse_fer2013(path)
        images, labels, usage = _FER_CACHE[key]
        keep = usage == FER2013_SPLITS[split]
        self.split = split
        self.path = path
        self.images = torch.from_numpy(images[keep])  # (n, 48, 48) uint8
        self.targets = torch.from_numpy(labels[keep])  # (n,)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        img = self.images[i].unsqueeze(0).float() / 255.0  # (1, 48, 48) in [0, 1]
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[i])


# ---------------------------------------------------------------------------------------------
# video frames (the real-time check of notebook 08)
# ---------------------------------------------------------------------------------------------
def read_video_frames(path: Union[str, Path], max_frames: Optional[int] = None) -> Iterable[torch.Tensor]:
    """Yield the frames of a local video or animated image as float tensors (C, H, W) in [0, 1].

    Uses ``imageio.v3.imiter``: GIF/APNG work through Pillow; MP4/AVI need an imageio video plugin
    (``pip install imageio-ffmpeg`` or ``av``).

    Raises:
        FileNotFoundError: no file at ``path``.
        RuntimeError: no installed plugin can decode it (the message says what to install).
    """
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video at {path}")
    try:
        it = iio.imiter(path)
        for i, frame in enumerate(it):
            if max_frames is not None and i >= max_frames:
                break
            arr = np.asarray(frame)
            if arr.ndim == 2:
                arr = arr[..., None]  # (H, W, 1)
            yield torch.from_numpy(np.ascontiguousarray(arr[..., :3])).permute(2, 0, 1).float() / 255.0  # (C, H, W)
    except (OSError, ValueError, ImportError) as e:
        raise RuntimeError(f"cannot decode {path} ({e}); for MP4/AVI install a video plugin: "
                           f"pip install imageio-ffmpeg (or av)") from e
