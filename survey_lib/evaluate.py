"""Evaluation: accuracy, confusion matrices, probes on frozen features, agreement, zero-shot, retrieval.

Evaluation reads predictions and features; it knows no architecture (any model with ``forward``,
``embed``, ``encode_image`` / ``encode_text`` works). Cost measurement is in :mod:`survey_lib.cost`.

* classifiers: :func:`predict`, :func:`evaluate_classifier`, :func:`accuracy`, :func:`confusion_matrix`
  (scikit-learn), :func:`teacher_agreement` (how often two classifiers agree, DeiT Table 4);
* frozen features: :func:`extract_features`, the weighted :func:`knn_classify` of DINO (Caron et
  al. 2021, arXiv:2104.14294, Sec. 4.1 / ``eval_knn.py``: cosine similarity, k = 20, votes weighted
  by ``exp(sim / T)`` with T = 0.07), :func:`linear_probe` (scikit-learn's logistic regression),
  :func:`probe_accuracies`, :func:`probe_eval_fn`;
* CLIP-like models: :func:`zero_shot_weights` / :func:`zero_shot_accuracy` (prompt ensembling,
  Radford et al. 2021, arXiv:2103.00020, Sec. 3.1.4) and :func:`retrieval_recall` (recall@k);
* comparisons: :func:`compare_seeds` (a paired t-test over seeds, ``scipy.stats``),
  :func:`mcnemar` (one model pair on the same test images) and the :func:`verdict` computed from them.

Deviation (retrieval): the digit captions carry only the class, so many captions are identical;
:func:`retrieval_recall` with labels counts a hit when the retrieved item shows (or describes) the
same digit, over the distinct captions. Without labels it computes the instance version.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .data.captions import HELDOUT_TEMPLATES, check_templates, fill_template
from .data.digits import DIGIT_NAMES

__all__ = [
    "predict",
    "evaluate_classifier",
    "accuracy",
    "confusion_matrix",
    "teacher_predictions",
    "teacher_agreement",
    "agreement_eval_fn",
    "extract_features",
    "knn_classify",
    "linear_probe",
    "probe_accuracies",
    "probe_eval_fn",
    "encode_captions",
    "encode_images",
    "zero_shot_weights",
    "zero_shot_accuracy",
    "retrieval_recall",
    "clip_eval_fn",
]


def _loader(data: Union[Dataset, DataLoader], batch_size: int) -> DataLoader:
    return data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size, shuffle=False)


@torch.no_grad()
def predict(model: nn.Module, data: Union[Dataset, DataLoader], batch_size: int = 256) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` in eval mode over ``data``.

    Shapes: returns logits (n, K) and labels (n,).
    """
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for x, y in _loader(data, batch_size):
        logits.append(model(x))
        labels.append(torch.as_tensor(y))
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def evaluate_classifier(model: nn.Module, data: Union[Dataset, DataLoader], batch_size: int = 256) -> Tuple[float, float]:
    """Mean cross-entropy and accuracy (a fraction in [0, 1]) of ``model`` on ``data``."""
    logits, labels = predict(model, data, batch_size)
    return float(F.cross_entropy(logits, labels)), float((logits.argmax(-1) == labels).float().mean())


def accuracy(model: nn.Module, data: Union[Dataset, DataLoader], batch_size: int = 256) -> float:
    """Top-1 accuracy as a fraction in [0, 1]."""
    return evaluate_classifier(model, data, batch_size)[1]


def confusion_matrix(model: nn.Module, data: Union[Dataset, DataLoader], num_classes: Optional[int] = None) -> np.ndarray:
    """Confusion matrix (rows: true class, columns: predicted), via scikit-learn.

    Shapes: returns (K, K) int counts.
    """
    from sklearn.metrics import confusion_matrix as sk_cm

    logits, labels = predict(model, data)
    k = num_classes or logits.shape[-1]
    return sk_cm(labels.numpy(), logits.argmax(-1).numpy(), labels=list(range(k)))


# ---------------------------------------------------------------------------------------------
# agreement between two classifiers (DeiT's student and teacher)
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def teacher_predictions(model: nn.Module, data: Union[Dataset, DataLoader], batch_size: int = 256) -> torch.Tensor:
    """Argmax predictions of ``model`` (eval mode) over ``data``. Shapes: returns (n,) int64."""
    logits, _ = predict(model, data, batch_size)
    return logits.argmax(-1)


def teacher_agreement(student: nn.Module, teacher: Union[nn.Module, torch.Tensor],
                      data: Union[Dataset, DataLoader], batch_size: int = 256) -> float:
    """Fraction of ``data`` on which the student's argmax equals the teacher's (both in eval mode).

    Args:
        teacher: a model, or its precomputed predictions (n,) from :func:`teacher_predictions`.
    """
    t = teacher if isinstance(teacher, torch.Tensor) else teacher_predictions(teacher, data, batch_size)
    s = teacher_predictions(student, data, batch_size)
    if s.shape != t.shape:
        raise ValueError(f"{len(t)} teacher predictions for {len(s)} samples")
    return float((s == t).float().mean())


def agreement_eval_fn(val_set: Dataset, teacher: nn.Module, batch_size: int = 256) -> Callable[[nn.Module], Dict[str, float]]:
    """An ``eval_fn`` for :func:`survey_lib.train.fit`: ``val_loss``, ``val_acc`` and ``val_agree``.

    The teacher's predictions on ``val_set`` are computed once, here.
    """
    t = teacher_predictions(teacher, val_set, batch_size)

    def eval_fn(model: nn.Module) -> Dict[str, float]:
        logits, labels = predict(model, val_set, batch_size)
        pred = logits.argmax(-1)
        return {
            "val_loss": float(F.cross_entropy(logits, labels)),
            "val_acc": float((pred == labels).float().mean()),
            "val_agree": float((pred == t).float().mean()),
        }

    return eval_fn


# ---------------------------------------------------------------------------------------------
# probes on frozen features
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def extract_features(encoder: Callable[[torch.Tensor], torch.Tensor], data: Union[Dataset, DataLoader],
                     batch_size: int = 256) -> Tuple[torch.Tensor, torch.Tensor]:
    """Features of a frozen encoder over a dataset.

    Args:
        encoder: images (B, C, H, W) -> features (B, D), e.g. ``model.embed``.

    Shapes: returns features (n, D) and labels (n,).
    """
    module = getattr(encoder, "__self__", encoder)
    was_training = getattr(module, "training", False)
    if isinstance(module, nn.Module):
        module.eval()
    feats, labels = [], []
    for x, y in _loader(data, batch_size):
        feats.append(encoder(x).float())
        labels.append(torch.as_tensor(y))
    if isinstance(module, nn.Module):
        module.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def knn_classify(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, k: int = 20, temperature: float = 0.07,
                 num_classes: Optional[int] = None, return_correct: bool = False) -> Union[float, np.ndarray]:
    """Weighted k-NN accuracy on L2-normalised features, as in DINO (Wu et al. 2018 weighting).

    Each test feature's k nearest training features (cosine similarity s_i) vote for their class
    with weight ``exp(s_i / temperature)``; the class with the largest total wins.

    Shapes: *_features (n, D), *_labels (n,). Returns accuracy in [0, 1]; with ``return_correct``
    the ``(n_test,)`` boolean array of correctly classified test samples instead (its mean is the
    accuracy), for a paired test such as :func:`mcnemar`.

    Raises:
        ValueError: if k is not in [1, number of training samples].
    """
    n = train_features.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be between 1 and the number of training samples ({n})")
    K = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    tr = F.normalize(train_features.float(), dim=1)
    te = F.normalize(test_features.float(), dim=1)
    sim = te @ tr.T  # (n_test, n_train) cosine similarities
    top_sim, top_idx = sim.topk(k, dim=1)  # (n_test, k)
    weights = (top_sim / temperature).exp()  # (n_test, k)
    votes = torch.zeros(te.shape[0], K)
    votes.scatter_add_(1, train_labels[top_idx], weights)  # (n_test, K)
    correct = votes.argmax(1) == test_labels  # (n_test,)
    return correct.numpy() if return_correct else float(correct.float().mean())


def linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, C: float = 1.0, max_iter: int = 2000,
                 return_correct: bool = False) -> Union[float, np.ndarray]:
    """Accuracy of a logistic-regression classifier (scikit-learn) on standardised frozen features.

    Shapes: *_features (n, D), *_labels (n,). Returns accuracy in [0, 1]; with ``return_correct``
    the ``(n_test,)`` boolean array of correctly classified test samples instead (its mean is the
    accuracy), for a paired test such as :func:`mcnemar`.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    clf.fit(train_features.numpy(), train_labels.numpy())
    if return_correct:
        return clf.predict(test_features.numpy()) == test_labels.numpy()  # (n_test,)
    return float(clf.score(test_features.numpy(), test_labels.numpy()))


def probe_accuracies(encoder: Callable[[torch.Tensor], torch.Tensor], train_data: Union[Dataset, DataLoader],
                     test_data: Union[Dataset, DataLoader], k: int = 20, temperature: float = 0.07,
                     linear: bool = True, C: float = 1.0) -> Dict[str, float]:
    """Weighted k-NN (and linear-probe) accuracy of a frozen encoder: :func:`extract_features` on both
    splits, then :func:`knn_classify` and :func:`linear_probe`.

    Args:
        encoder: images (B, C, H, W) -> features (B, D), e.g. ``model.embed`` or a DINO teacher's.
        train_data, test_data: un-augmented ``(image, label)`` data.
        k, temperature: of the weighted k-NN.  linear: also fit the logistic-regression probe.  C: its
            inverse regularisation strength.

    Returns: ``{"knn_acc": float, "linear_acc": float}`` (fractions in [0, 1]; ``linear_acc`` only if
    ``linear``).
    """
    tr_x, tr_y = extract_features(encoder, train_data)
    te_x, te_y = extract_features(encoder, test_data)
    out = {"knn_acc": knn_classify(tr_x, tr_y, te_x, te_y, k=k, temperature=temperature)}
    if linear:
        out["linear_acc"] = linear_probe(tr_x, tr_y, te_x, te_y, C=C)
    return out


def probe_eval_fn(encoder: Callable[[nn.Module], Callable[[torch.Tensor], torch.Tensor]], train_set: Dataset,
                  test_set: Dataset, k: int = 20, linear: bool = True, prefix: str = "") -> Callable[[nn.Module], Dict[str, float]]:
    """An ``eval_fn`` for ``fit``: weighted k-NN (and linear-probe) accuracy of frozen features.

    Args:
        encoder: ``model -> (images -> features)``, e.g. ``lambda m: m.teacher_embed``.
        train_set, test_set: un-augmented ``(image, label)`` datasets.
        k: neighbours of the weighted k-NN (DINO: 20).  linear: also fit the logistic-regression probe.
        prefix: prepended to the metric names (``knn_acc``, ``linear_acc``).
    """
    def eval_fn(model: nn.Module) -> Dict[str, float]:
        res = probe_accuracies(encoder(model), train_set, test_set, k=k, linear=linear)
        return {f"{prefix}{name}": v for name, v in res.items()}

    return eval_fn


# ---------------------------------------------------------------------------------------------
# zero-shot classification and retrieval (CLIP-like models)
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
# comparisons with their uncertainty, and the verdict computed from them
# ---------------------------------------------------------------------------------------------
__all__ += ["VERDICTS", "mean_std", "compare_seeds", "mcnemar", "verdict"]

#: What a computed verdict can say about a claim.
VERDICTS = ("holds", "does not hold", "cannot tell")


def mean_std(values: Sequence[float]) -> Tuple[float, Optional[float], int]:
    """Mean, sample standard deviation (``ddof=1``; None for one value) and count of ``values``."""
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        raise ValueError("no values")
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None), int(v.size)


def verdict(diff: float, p_value: Optional[float], alpha: float = 0.05, margin: float = 0.0) -> str:
    """The verdict on the claim "A is better than B by more than ``margin``".

    ``holds`` when the mean difference ``diff`` (A - B) exceeds ``margin`` and the test rejects
    "no difference" at level ``alpha``; ``does not hold`` when the test finds B better (``diff`` <= 0
    with p < alpha); ``cannot tell`` otherwise (the difference is within the noise of the seeds).
    """
    if p_value is None or not math.isfinite(p_value):
        return "cannot tell"
    if p_value < alpha:
        if diff > margin:
            return "holds"
        if diff <= 0:
            return "does not hold"
    return "cannot tell"


def compare_seeds(a: Sequence[float], b: Sequence[float], alpha: float = 0.05, paired: bool = True,
                  margin: float = 0.0) -> Dict[str, object]:
    """Compare a metric of method A with method B over seeds, and compute the verdict on "A > B".

    With ``paired`` (the same seeds, so the same data order and initialisation where the methods
    share them) a paired t-test on the per-seed differences (``scipy.stats.ttest_rel``); otherwise
    Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``). Two-sided p-values.

    Returns:
        ``{"mean_a", "std_a", "mean_b", "std_b", "n", "diff", "diff_std", "pooled_std", "t", "p_value",
        "test", "verdict"}``; ``pooled_std`` is ``sqrt((std_a^2 + std_b^2) / 2)`` (None with one seed).

    Raises:
        ValueError: no values, or ``paired`` with different numbers of seeds.
    """
    from scipy import stats

    a_, b_ = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    if a_.size == 0 or b_.size == 0:
        raise ValueError("compare_seeds needs at least one value per method")
    if paired and a_.size != b_.size:
        raise ValueError(f"paired comparison needs the same seeds for both methods, got {a_.size} and {b_.size} values")
    mean_a, std_a, n = mean_std(a_)
    mean_b, std_b, _ = mean_std(b_)
    diff = mean_a - mean_b
    t = p = None
    if min(a_.size, b_.size) > 1:
        d = a_ - b_ if paired else None
        if paired and np.allclose(d, d[0]):  # identical differences: the t statistic is undefined
            t, p = (math.inf if d[0] > 0 else -math.inf if d[0] < 0 else 0.0), (0.0 if d[0] != 0 else 1.0)
        else:
            res = stats.ttest_rel(a_, b_) if paired else stats.ttest_ind(a_, b_, equal_var=False)
            t, p = float(res.statistic), float(res.pvalue)
    diff_std = float(np.std(a_ - b_, ddof=1)) if paired and a_.size > 1 else None
    pooled = math.sqrt((std_a ** 2 + std_b ** 2) / 2) if std_a is not None and std_b is not None else None
    return {"mean_a": mean_a, "std_a": std_a, "mean_b": mean_b, "std_b": std_b, "n": n, "diff": diff,
            "diff_std": diff_std, "pooled_std": pooled, "t": t, "p_value": p,
            "test": "paired t-test over seeds" if paired else "Welch's t-test", "verdict": verdict(diff, p, alpha, margin)}


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool], alpha: float = 0.05) -> Dict[str, object]:
    """McNemar's exact test on one pair of models scored on the same test images: of the images
    exactly one model gets right (``n01`` only B, ``n10`` only A), is the split 50/50? The p-value is
    the two-sided binomial test of ``n10`` out of ``n01 + n10`` (``scipy.stats.binomtest``).

    Returns: ``{"n10", "n01", "acc_a", "acc_b", "diff", "p_value", "test", "verdict"}`` (the verdict
    on "A is more accurate than B").

    Raises:
        ValueError: lists of different lengths.
    """
    from scipy import stats

    a, b = np.asarray(list(correct_a), dtype=bool), np.asarray(list(correct_b), dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"McNemar's test needs both models on the same images, got {a.size} and {b.size}")
    n10, n01 = int((a & ~b).sum()), int((~a & b).sum())
    p = float(stats.binomtest(n10, n10 + n01, 0.5).pvalue) if n10 + n01 else 1.0
    diff = float(a.mean() - b.mean())
    return {"n10": n10, "n01": n01, "acc_a": float(a.mean()), "acc_b": float(b.mean()), "diff": diff,
            "p_value": p, "test": "McNemar's exact test", "verdict": verdict(diff, p, alpha)}
