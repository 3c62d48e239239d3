"""Captions for CLIP: prompt templates, captioned digits, and CLIP's tokenizer.

* :data:`TRAIN_TEMPLATES` / :data:`HELDOUT_TEMPLATES` - prompt templates; a caption is a class name
  put through a template ("a photo of the digit seven.", "a handwritten 7."). Training uses the
  first set; evaluation uses the second, which no training caption was built from.
* :class:`CaptionedDigits` - image-caption pairs, a new random template each time an image is drawn.
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
class CaptionedDigits(Dataset):
    """The digits paired with captions: item ``i`` is (image, tokens of a caption of its class, label).

    The caption's template is drawn at random (torch's global generator, which ``fit`` seeds) every
    time the item is read, so an image meets several phrasings over the epochs. All captions are
    tokenised once, in the constructor.

    Args:
        train: the training split or the test split (``DigitsDataset``).
        templates: prompt templates (default :data:`TRAIN_TEMPLATES`).
        tokenizer: a :class:`CaptionTokenizer` (default: context length 16).
        img_size, augment, in_chans, seed: as :class:`survey_lib.data.DigitsDataset` (``in_chans=3``
            for open_clip's vision tower).

    Shapes:
        item = (image (in_chans, img_size, img_size) float32, tokens (context_length,) int64, label int).
        ``tokens``: (K, T, context_length), the caption of class k under template t.

    Raises:
        ValueError: an empty or malformed template list (see :func:`check_templates`).
    """

    def __init__(self, train: bool = True, templates: Sequence[str] = TRAIN_TEMPLATES, tokenizer=None,
                 img_size: int = 32, augment: bool = False, in_chans: int = 1, seed: int = 0) -> None:
        self.templates = check_templates(templates)
        self.tokenizer = tokenizer if tokenizer is not None else CaptionTokenizer()
        self.digits = DigitsDataset(train=train, img_size=img_size, augment=augment, in_chans=in_chans, seed=seed)
        self.targets = self.digits.targets
        K, T = len(DIGIT_NAMES), len(self.templates)
        texts = [fill_template(t, k) for k in range(K) for t in self.templates]
        self.tokens = self.tokenizer(texts).reshape(K, T, -1)  # (K, T, L)

    def __len__(self) -> int:
        return len(self.digits)

    def caption(self, label: int, template_index: int) -> str:
        return fill_template(self.templates[template_index], label)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, torch.Tensor, int]:
        img, y = self.digits[i]
        t = int(torch.randint(len(self.templates), ()))
        return img, self.tokens[y, t], y
