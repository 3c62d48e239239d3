"""Paired data for contrastive learning on the digits, and how CLIP-like models are evaluated.

* :class:`CaptionedDigits` - image-caption pairs: every digit gets a caption made from its class
  name through a prompt template ("a photo of the digit seven.", "a handwritten 7."), a new random
  template each time the image is drawn. Training uses :data:`TRAIN_TEMPLATES`; evaluation uses
  :data:`HELDOUT_TEMPLATES`, which no training caption was built from.
* :func:`zero_shot_weights` / :func:`zero_shot_accuracy` - zero-shot classification with prompt
  ensembling (CLIP Sec. 3.1.4): a class's weight vector is the normalised mean of the normalised
  text embeddings of its captions under several templates; an image goes to the class whose
  weight is most similar.
* :func:`retrieval_recall` - recall@k for image -> text and text -> image retrieval.
* :class:`TwoViews` / :func:`simclr_augment` - two random views of each image for SimCLR.
* :data:`CLIP_TRAIN` / :func:`train_clip` - the digits CLIP recipe by profile (``survey train clip``).

Sources: Radford et al. 2021 (CLIP), arXiv:2103.00020, Sec. 3.1.4 (prompt engineering and
ensembling) and Sec. 3.1 / Table 13 (retrieval); Chen et al. 2020 (SimCLR), arXiv:2002.05709,
Sec. 3 (data augmentation).

Deviations from the papers:
    * the captions carry only the class, so many captions are identical. Retrieval therefore
      counts a hit when a retrieved item shows (or describes) the *same digit*, over the set of
      distinct captions (10 classes x held-out templates); instance-level recall, as for COCO, is
      meaningless here. :func:`retrieval_recall` without labels computes the instance version.
    * no colour, flip or blur augmentation for SimCLR: flips change digits (2 vs 5-like shapes,
      6 vs 9 under rotation), colour does not exist; views differ by crop, shift, small rotation and
      a small erased patch.
"""
from __future__ import annotations

import string
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from .data import DIGIT_NAMES, DIGITS_MEAN, DIGITS_STD, DigitsDataset

__all__ = [
    "DIGIT_NUMERALS",
    "TRAIN_TEMPLATES",
    "HELDOUT_TEMPLATES",
    "fill_template",
    "check_templates",
    "CaptionedDigits",
    "encode_captions",
    "encode_images",
    "zero_shot_weights",
    "zero_shot_accuracy",
    "retrieval_recall",
    "clip_eval_fn",
    "TwoViews",
    "simclr_augment",
    "CLIP_TRAIN",
    "clip_train_config",
    "train_clip",
    "duplicate_loss_floor",
    "plot_similarity_matrices",
    "plot_joint_embedding",
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


class CaptionedDigits(Dataset):
    """The digits paired with captions: item ``i`` is (image, tokens of a caption of its class, label).

    The caption's template is drawn at random (torch's global generator, which ``fit`` seeds) every
    time the item is read, so an image meets several phrasings over the epochs. All captions are
    tokenised once, in the constructor.

    Args:
        train: the 1,437-image training split or the 360-image test split (``DigitsDataset``).
        templates: prompt templates (default :data:`TRAIN_TEMPLATES`).
        tokenizer: a :class:`survey_lib.models.clip.CaptionTokenizer` (default: context length 16).
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
        from .models.clip import CaptionTokenizer

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


# ---------------------------------------------------------------------------------------------
# zero-shot classification and retrieval
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def encode_captions(model: nn.Module, tokenizer, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """L2-normalised text embeddings of ``texts`` in eval mode.

    Shapes: n strings -> (n, E).

    Raises:
        ValueError: an empty caption list.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("empty caption list: nothing to encode")
    was_training = model.training
    model.eval()
    try:
        out = [model.encode_text(tokenizer(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)]
    finally:
        model.train(was_training)
    return F.normalize(torch.cat(out).float(), dim=-1)  # (n, E)


@torch.no_grad()
def encode_images(model: nn.Module, dataset: Dataset, batch_size: int = 256) -> Tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised image embeddings and labels of a dataset of ``(image, label, ...)`` items.

    Shapes: returns (n, E) and (n,).
    """
    was_training = model.training
    model.eval()
    feats, labels = [], []
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            feats.append(model.encode_image(batch[0]).float())
            labels.append(torch.as_tensor(batch[-1]))
    finally:
        model.train(was_training)
    return F.normalize(torch.cat(feats), dim=-1), torch.cat(labels)  # (n, E), (n,)


def zero_shot_weights(model: nn.Module, tokenizer, templates: Sequence[str],
                      classnames: Sequence[str] = DIGIT_NAMES) -> torch.Tensor:
    """Prompt-ensembled class embeddings (CLIP Sec. 3.1.4).

    ``w_k = normalize( mean_t normalize(encode_text(template_t(class k))) )``: the ensemble is built
    in embedding space, so it costs one text forward per caption once, and nothing per image.

    Shapes: returns (K, E), rows L2-normalised.

    Raises:
        ValueError: an empty or malformed template list, or no class names.
    """
    templates = check_templates(templates)
    if len(classnames) == 0:
        raise ValueError("no class names: pass at least one")
    texts = [fill_template(t, k, classnames) for k in range(len(classnames)) for t in templates]
    emb = encode_captions(model, tokenizer, texts)  # (K * T, E)
    emb = emb.reshape(len(classnames), len(templates), -1).mean(dim=1)  # (K, E) mean over templates
    return F.normalize(emb, dim=-1)


def zero_shot_accuracy(model: nn.Module, tokenizer, dataset: Dataset, templates: Sequence[str] = HELDOUT_TEMPLATES,
                       classnames: Sequence[str] = DIGIT_NAMES) -> float:
    """Accuracy in [0, 1] of zero-shot classification of ``dataset`` with prompt ensembling over
    ``templates`` (default: the held-out ones)."""
    weights = zero_shot_weights(model, tokenizer, templates, classnames)  # (K, E)
    feats, labels = encode_images(model, dataset)  # (n, E), (n,)
    return float(((feats @ weights.T).argmax(1) == labels).float().mean())


def retrieval_recall(image_features: torch.Tensor, text_features: torch.Tensor,
                     image_labels: Optional[torch.Tensor] = None, text_labels: Optional[torch.Tensor] = None,
                     ks: Sequence[int] = (1, 5)) -> Dict[str, float]:
    """Recall@k of image -> text and text -> image retrieval by cosine similarity.

    With labels, a query is a hit if any of its k nearest candidates has the query's label (the
    caption describes the digit shown). Without labels, image i and text i are the only pair (needs
    as many images as texts), the usual instance-level recall.

    Shapes: image_features (n_i, E), text_features (n_t, E), labels (n_i,), (n_t,).
    Returns: ``{"i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@5"}`` (for ``ks=(1, 5)``), fractions in [0, 1].

    Raises:
        ValueError: labels given for one side only, mismatched lengths, or k larger than the number
            of candidates.
    """
    n_i, n_t = image_features.shape[0], text_features.shape[0]
    if (image_labels is None) != (text_labels is None):
        raise ValueError("pass both image_labels and text_labels, or neither (instance-level pairs)")
    if image_labels is None:
        if n_i != n_t:
            raise ValueError(f"batch sizes differ: {n_i} images vs {n_t} texts; instance-level retrieval "
                             f"needs one text per image (or pass labels)")
        image_labels = text_labels = torch.arange(n_i)
    if len(image_labels) != n_i or len(text_labels) != n_t:
        raise ValueError(f"labels do not match features: {len(image_labels)} image labels for {n_i} images, "
                         f"{len(text_labels)} text labels for {n_t} texts")
    if max(ks) > min(n_i, n_t):
        raise ValueError(f"k={max(ks)} exceeds the number of candidates ({n_i} images, {n_t} texts)")
    sim = F.normalize(image_features.float(), dim=-1) @ F.normalize(text_features.float(), dim=-1).T  # (n_i, n_t)
    out = {}
    for k in ks:
        top_t = sim.topk(k, dim=1).indices  # (n_i, k) texts nearest each image
        out[f"i2t_R@{k}"] = float((text_labels[top_t] == image_labels[:, None]).any(1).float().mean())
    for k in ks:
        top_i = sim.T.topk(k, dim=1).indices  # (n_t, k) images nearest each text
        out[f"t2i_R@{k}"] = float((image_labels[top_i] == text_labels[:, None]).any(1).float().mean())
    return out


def clip_eval_fn(tokenizer, dataset: Dataset, templates: Sequence[str] = HELDOUT_TEMPLATES) -> Callable[[nn.Module], Dict[str, float]]:
    """An ``eval_fn`` for :func:`survey_lib.train.fit`: ``{"val_acc": zero-shot accuracy}`` per epoch."""
    templates = check_templates(templates)
    return lambda model: {"val_acc": zero_shot_accuracy(model, tokenizer, dataset, templates)}


# ---------------------------------------------------------------------------------------------
# two views for SimCLR
# ---------------------------------------------------------------------------------------------
def simclr_augment(img_size: int = 32, crop_scale: Tuple[float, float] = (0.6, 1.0), degrees: float = 10.0,
                   translate: float = 0.125, erase_p: float = 0.5) -> Callable[[torch.Tensor], torch.Tensor]:
    """SimCLR's "random crop and resize" adapted to normalised digits (no flips, no colour).

    Random resized crop (``crop_scale`` of the area, aspect 3/4-4/3), a random affine map (rotation
    up to ``degrees``, shift up to ``translate`` of the side, filled with the background value), and
    with probability ``erase_p`` a small erased rectangle (2-10% of the area, background value).

    Shapes: (C, img_size, img_size) -> (C, img_size, img_size).
    """
    background = (0.0 - DIGITS_MEAN) / DIGITS_STD
    return v2.Compose([
        v2.RandomResizedCrop(img_size, scale=crop_scale, ratio=(0.75, 4 / 3), antialias=True),
        v2.RandomAffine(degrees=degrees, translate=(translate, translate), fill=background),
        v2.RandomErasing(p=erase_p, scale=(0.02, 0.1), value=background),
    ])


class TwoViews(Dataset):
    """Two independent random views of each item of ``dataset``: item = ((view_a, view_b), label).

    Args:
        dataset: yields ``(image, label)``; use it without its own augmentation.
        transform: applied independently to produce each view (default :func:`simclr_augment`).

    Shapes: item = ((C, H, W), (C, H, W)), int.
    """

    def __init__(self, dataset: Dataset, transform: Optional[Callable] = None) -> None:
        self.dataset = dataset
        self.transform = transform if transform is not None else simclr_augment()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        img, y = self.dataset[i][:2]
        return (self.transform(img), self.transform(img)), y


# ---------------------------------------------------------------------------------------------
# the recipe (``survey train clip``)
# ---------------------------------------------------------------------------------------------
#: Training recipes of the digits CLIP (``survey_lib.models.clip.CLIP_CONFIGS``) by profile.
#: cpu: 91.9% zero-shot accuracy with the held-out templates and image-to-text recall@1 93.6% after
#: 30 epochs (seed 0; notebook 05's cpu run of 2026-12-01). An earlier trial found lr 2e-3 worse.
CLIP_TRAIN: Dict[str, dict] = {
    "smoke": dict(epochs=2, batch_size=128, lr=1e-3, warmup_epochs=0.5),
    "cpu": dict(epochs=30, batch_size=64, lr=1e-3, warmup_epochs=2, weight_decay=0.1),
    "full": dict(epochs=100, batch_size=128, lr=5e-4, warmup_epochs=5, weight_decay=0.1),
}


def clip_train_config(profile: str, **overrides):
    """The :class:`survey_lib.train.TrainConfig` of the digits CLIP for ``profile``, with overrides.

    Raises:
        ValueError: unknown profile.
    """
    from .train import TrainConfig

    if profile not in CLIP_TRAIN:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(CLIP_TRAIN)}")
    return TrainConfig(**{**CLIP_TRAIN[profile], **overrides})


def train_clip(profile: str = "cpu", checkpoint: Optional[str] = None, seed: int = 0) -> dict:
    """Train the digits CLIP of ``profile`` on captions from :data:`TRAIN_TEMPLATES` and report the
    zero-shot test accuracy with :data:`HELDOUT_TEMPLATES` (``test_acc``) and retrieval recall."""
    from .models.clip import CaptionTokenizer, clip_for_profile
    from .objectives.infonce import clip_step
    from .train import fit, seed_everything

    seed_everything(seed)
    model = clip_for_profile(profile)
    tokenizer = CaptionTokenizer(model.context_length)
    train_set = CaptionedDigits(train=True, tokenizer=tokenizer, augment=True, seed=0)
    test_set = DigitsDataset(train=False)
    cfg = clip_train_config(profile, seed=seed, checkpoint_path=checkpoint, desc=f"clip [{profile}]")
    history = fit(model, train_set, config=cfg, step_fn=clip_step())
    acc = zero_shot_accuracy(model, tokenizer, test_set, HELDOUT_TEMPLATES)
    img, img_y = encode_images(model, test_set)
    txt = encode_captions(model, tokenizer, [fill_template(t, k) for k in range(10) for t in HELDOUT_TEMPLATES])
    txt_y = torch.arange(10).repeat_interleave(len(HELDOUT_TEMPLATES))
    rec = retrieval_recall(img, txt, img_y, txt_y)
    return {"model": model, "history": history, "test_acc": acc, **rec, "seconds": history.seconds}


# ---------------------------------------------------------------------------------------------
# figures (each returns a matplotlib Figure)
# ---------------------------------------------------------------------------------------------
def duplicate_loss_floor(labels: torch.Tensor) -> float:
    """The smallest CLIP loss a batch with these class labels allows when captions carry only the class.

    If image i has ``m_i`` captions of its class in the batch (its own included), no model can
    tell which of them is its own, so each direction costs at least ``ln m_i``: the floor is
    ``mean_i ln m_i``. With 10 balanced classes and B = 64 it is about 1.8 (a loss of 0 would need
    unique captions).

    Shapes: labels (B,) -> float.
    """
    counts = torch.bincount(labels)[labels].float()  # (B,) m_i
    return float(counts.log().mean())


def plot_similarity_matrices(matrices: Dict[str, torch.Tensor], row_labels: Sequence[str],
                             col_labels: Sequence[str], title: Optional[str] = None) -> "Figure":
    """Heatmaps of image x text similarity matrices, the diagonal (the true pairs) outlined.

    Args:
        matrices: ``{panel title: (B, B) tensor}``, e.g. cosine similarities before and after training.
        row_labels: B image labels.  col_labels: B captions.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = len(matrices)
    B = len(row_labels)
    fig, axes = plt.subplots(1, n, figsize=(0.55 * B * n + 2.5 * n, 0.55 * B + 2.8), squeeze=False)
    for ax, (name, m) in zip(axes[0], matrices.items()):
        m = m.detach().float().cpu().numpy()
        im = ax.imshow(m, cmap="viridis")
        for i in range(B):
            ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.5))
            for j in range(B):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if m[i, j] < m.mean() else "black")
        ax.set_xticks(range(B), col_labels, rotation=70, ha="right", fontsize=7)
        ax.set_yticks(range(B), row_labels, fontsize=7)
        ax.set_xlabel("caption (text)")
        ax.set_ylabel("image")
        ax.set_title(name, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_joint_embedding(image_features: torch.Tensor, image_labels: torch.Tensor, text_features: torch.Tensor,
                         text_labels: torch.Tensor, seed: int = 0, tsne: bool = True,
                         title: Optional[str] = None) -> "Figure":
    """The joint image-text space in 2-D: PCA (linear, keeps the gap between the modalities) and,
    optionally, t-SNE (neighbourhoods), both fitted on images and texts together.

    Images are dots coloured by class; texts (e.g. the prompt-ensembled class embeddings) are
    numbered stars.

    Shapes: image_features (n, E), image_labels (n,), text_features (m, E), text_labels (m,).
    """
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = torch.cat([F.normalize(image_features.float(), dim=-1), F.normalize(text_features.float(), dim=-1)]).numpy()
    n = image_features.shape[0]  # (n + m, E): images first
    panels = [("PCA", PCA(n_components=2, random_state=seed).fit_transform(x))]
    if tsne:
        perplexity = float(min(30, max(2, (x.shape[0] - 1) // 3)))
        panels.append(("t-SNE", TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (name, y) in zip(axes[0], panels):
        ax.scatter(y[:n, 0], y[:n, 1], c=[cmap(int(k) % 10) for k in image_labels], s=9, alpha=0.6)
        ax.scatter(y[n:, 0], y[n:, 1], c=[cmap(int(k) % 10) for k in text_labels], s=260, marker="*",
                   edgecolors="black", linewidths=0.8)
        for (px, py), k in zip(y[n:], text_labels):
            ax.annotate(str(int(k)), (px, py), fontsize=9, fontweight="bold", xytext=(5, 5), textcoords="offset points")
        ax.set_title(f"{name}: images (dots) and class prompts (stars)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
