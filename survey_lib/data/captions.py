"""Captions for CLIP: prompt templates, captioned digits, and CLIP's tokenizer.

* :data:`TRAIN_TEMPLATES` / :data:`HELDOUT_TEMPLATES` - prompt templates; a caption is a class name
  put through a template ("a photo of the digit seven.", "a handwritten 7."). Training uses the
  first set; evaluation uses the second, which no training caption was built from.
* :class:`CaptionedImages` - any labelled image dataset paired with captions, a new random
  template each time an image is drawn; :class:`CaptionedDigits` - the same for a split of the
  catalog's digit datasets (the 8 x 8 digits, MNIST-5k, MNIST).
* :class:`CaptionTokenizer` - CLIP's byte-pair tokenizer (open_clip's ``SimpleTokenizer``, whose
  vocabulary ships inside the package, so it works offline) with a short context.

Sources: Radford et al. 2021 (CLIP), arXiv:2103.00020, Sec. 2.4 (the text encoder's BPE input) and
Sec. 3.1.4 (prompt engineering and ensembling).

Deviation from the paper: the captions carry only the class, so many captions are identical (the
retrieval metric in :mod:`survey_lib.evaluate` counts a hit when the retrieved item shows or
describes the same digit).
"""
from __future__ import annotations

import functools
import string
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import Dataset

from .digits import DIGIT_NAMES, DigitsDataset

__all__ = [
    "DIGIT_NUMERALS",
    "TRAIN_TEMPLATES",
    "HELDOUT_TEMPLATES",
    "fill_template",
    "check_templates",
    "CaptionedImages",
    "CaptionedDigits",
    "CaptionTokenizer",
]

DIGIT_NUMERALS: List[str] = [str(k) for k in range(10)]


#: Templates of the training captions. ``{name}`` is the class word ("seven"), ``{digit}`` the numeral ("7").
TRAIN_TEMPLATES: Tuple[str, ...] = (
    "a photo of the digit {name}.",
    "a handwritten {digit}.",
    "the number {name}.",
    "a {name} written by hand.",
    "an image of a {digit}.",
    "a blurry {name}.",
    "a low resolution photo of a {digit}.",
    "the digit {digit}.",
)


#: Templates reserved for evaluation: no training caption uses them (their words may recur).
HELDOUT_TEMPLATES: Tuple[str, ...] = (
    "a scan of a handwritten {name}.",
    "a picture of the number {digit}.",
    "a drawing of a {name}.",
    "a pixelated {digit}.",
    "this is a {name}.",
)


_FIELDS = {"name", "digit"}


def _fields(template: str) -> set:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}


def check_templates(templates: Sequence[str]) -> List[str]:
    """Validate prompt templates and return them as a list.

    Raises:
        ValueError: an empty list, a template that is not a string, or one without a ``{name}`` or
            ``{digit}`` placeholder (or with another placeholder).
    """
    if isinstance(templates, str):
        templates = [templates]
    templates = list(templates)
    if not templates:
        raise ValueError("empty template list: pass at least one template, e.g. ['a photo of the digit {name}.']")
    for t in templates:
        if not isinstance(t, str):
            raise ValueError(f"templates must be strings, got {type(t).__name__} ({t!r})")
        fields = _fields(t)
        if not fields & _FIELDS or fields - _FIELDS:
            raise ValueError(f"template {t!r} must contain {{name}} (e.g. 'seven') or {{digit}} (e.g. '7') "
                             f"and no other placeholder")
    return templates


def fill_template(template: str, label: int, classnames: Sequence[str] = DIGIT_NAMES,
                  numerals: Optional[Sequence[str]] = None) -> str:
    """The caption of class ``label`` under ``template``: ``fill_template("a handwritten {digit}.", 7)``
    gives ``"a handwritten 7."``; ``{name}`` gives ``"seven"``. ``numerals`` fills ``{digit}``
    (default: :data:`DIGIT_NUMERALS` for the ten digit names, else the class name itself)."""
    if numerals is None:
        numerals = DIGIT_NUMERALS if list(classnames) == DIGIT_NAMES else classnames
    return template.format(name=classnames[label], digit=numerals[label])


# ---------------------------------------------------------------------------------------------
# CLIP's tokenizer (open_clip's SimpleTokenizer, offline)
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _simple_tokenizer(context_length: int):
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)  # reads the BPE file shipped with open_clip


class CaptionTokenizer:
    """CLIP's byte-pair tokenizer (open_clip's ``SimpleTokenizer``, offline) with a short context.

    Each caption is lower-cased, cleaned, split into BPE tokens, bracketed by the start token
    (``sot_token_id`` = 49406) and the end token (``eot_token_id`` = 49407), truncated to
    ``context_length`` (the last kept token is then replaced by the end token, as in open_clip) and
    zero-padded.

    Args:
        context_length: tokens per caption, start and end tokens included.

    Shapes:
        ``tokenizer(texts)``: list of B strings (or one string) -> (B, context_length) int64.

    Raises:
        ValueError: an empty caption list, or an element that is not a string.
    """

    def __init__(self, context_length: int = 16) -> None:
        if context_length < 3:
            raise ValueError(f"context_length must be >= 3 (start, one token, end), got {context_length}")
        self.context_length = int(context_length)
        self._tok = _simple_tokenizer(self.context_length)
        self.sot_token_id: int = self._tok.sot_token_id
        self.eot_token_id: int = self._tok.eot_token_id
        self.vocab_size: int = self._tok.vocab_size

    def __call__(self, texts: Union[str, Sequence[str]]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ValueError("empty caption list: pass at least one caption, e.g. ['a photo of the digit seven']")
        bad = [t for t in texts if not isinstance(t, str)]
        if bad:
            raise ValueError(f"captions must be strings, got {type(bad[0]).__name__} ({bad[0]!r})")
        return self._tok(texts, context_length=self.context_length).long()  # (B, context_length)

    def decode(self, tokens: torch.Tensor) -> str:
        """Text of one token row, without the start, end and padding tokens. Shapes: (L,) -> str."""
        ids = [int(t) for t in tokens if int(t) not in (0, self.sot_token_id, self.eot_token_id)]
        return self._tok.decode(ids).strip()

    def __repr__(self) -> str:
        return f"CaptionTokenizer(context_length={self.context_length}, vocab_size={self.vocab_size})"


# ---------------------------------------------------------------------------------------------
# image-caption pairs
# ---------------------------------------------------------------------------------------------
class CaptionedImages(Dataset):
    """Any labelled image dataset paired with captions: item ``i`` is (image, tokens of a caption of
    its class, label).

    The caption's template is drawn at random (torch's global generator, which ``fit`` seeds) every
    time the item is read, so an image meets several phrasings over the epochs. All captions are
    tokenised once, in the constructor.

    Args:
        images: a Dataset of ``(image, label)`` items with a ``targets`` tensor of labels in
            ``range(len(classnames))`` (e.g. :class:`~survey_lib.data.MNIST5k`, :class:`DigitsDataset`).
        templates: prompt templates (default :data:`TRAIN_TEMPLATES`).
        tokenizer: a :class:`CaptionTokenizer` (default: context length 16).
        classnames, numerals: fill ``{name}`` and ``{digit}`` (see :func:`fill_template`).

    Shapes:
        item = (image as ``images`` gives it, tokens (context_length,) int64, label int).
        ``tokens``: (K, T, context_length), the caption of class k under template t.

    Raises:
        ValueError: an empty or malformed template list (see :func:`check_templates`), a dataset
            without ``targets``, or labels outside ``range(len(classnames))``.
    """

    def __init__(self, images: Dataset, templates: Sequence[str] = TRAIN_TEMPLATES, tokenizer=None,
                 classnames: Sequence[str] = DIGIT_NAMES, numerals: Optional[Sequence[str]] = None) -> None:
        self.templates = check_templates(templates)
        targets = getattr(images, "targets", None)
        if targets is None:
            raise ValueError(f"{type(images).__name__} has no `targets`: CaptionedImages needs the label of every "
                             f"image (a tensor of class indices) to caption it")
        self.images = images
        self.targets = torch.as_tensor(targets).long()
        self.classnames, self.numerals = list(classnames), numerals
        K = len(self.classnames)
        if len(self.targets) and (int(self.targets.min()) < 0 or int(self.targets.max()) >= K):
            raise ValueError(f"labels must lie in range({K}) (one per class name), got "
                             f"{int(self.targets.min())}..{int(self.targets.max())}")
        self.tokenizer = tokenizer if tokenizer is not None else CaptionTokenizer()
        texts = [self.caption(k, t) for k in range(K) for t in range(len(self.templates))]
        self.tokens = self.tokenizer(texts).reshape(K, len(self.templates), -1)  # (K, T, L)

    def __len__(self) -> int:
        return len(self.images)

    def caption(self, label: int, template_index: int) -> str:
        """The caption of class ``label`` under template ``template_index`` of this dataset."""
        return fill_template(self.templates[template_index], label, self.classnames, self.numerals)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, torch.Tensor, int]:
        img, y = self.images[i][:2]
        t = int(torch.randint(len(self.templates), ()))
        return img, self.tokens[y, t], y


class CaptionedDigits(CaptionedImages):
    """A split of a digits dataset of the catalog (``survey_lib.data.classification_dataset``:
    scikit-learn's 8 x 8 digits upsampled, MNIST-5k, the full MNIST) paired with captions of its
    class, as :class:`CaptionedImages`.

    Args:
        train: the training split (True) or the test split (False); ``split`` overrides it.
        templates: prompt templates (default :data:`TRAIN_TEMPLATES`).
        tokenizer: a :class:`CaptionTokenizer` (default: context length 16).
        img_size: output side (default: the dataset's, 32 for ``"digits"``, 28 for MNIST).
        augment: random shifts (training).  max_shift: their size (default: the dataset's).
        in_chans: 1, or 3 for open_clip's vision tower (the grey channel repeated).
        seed: the split's seed (keep 0).
        dataset: ``"digits"`` (default), ``"mnist5k"`` (3,500 / 500 / 1,000 at 28 x 28) or ``"mnist"``.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Shapes:
        item = (image (in_chans, img_size, img_size) float32, tokens (context_length,) int64, label int).

    Raises:
        ValueError: an unknown dataset or split, or a malformed template list.
    """

    def __init__(self, train: bool = True, templates: Sequence[str] = TRAIN_TEMPLATES, tokenizer=None,
                 img_size: Optional[int] = None, augment: bool = False, in_chans: int = 1, seed: int = 0,
                 dataset: str = "digits", split: Optional[str] = None, max_shift: Optional[int] = None) -> None:
        from .catalog import classification_dataset

        split = split or ("train" if train else "test")
        images = classification_dataset(dataset, split, img_size=img_size, augment=augment, in_chans=in_chans,
                                        max_shift=max_shift, seed=seed)
        super().__init__(images, templates, tokenizer)
        self.dataset, self.split = dataset, split

    @property
    def digits(self) -> Dataset:
        """The underlying image dataset (the name the digits-only version had)."""
        return self.images
