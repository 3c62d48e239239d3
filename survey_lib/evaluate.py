"""Evaluation: accuracy, confusion matrix, probes on frozen features, and cost (params, FLOPs, speed).

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (no hand counting); confusion matrices
and the linear probe from scikit-learn. The weighted k-NN follows DINO (Caron et al. 2021,
arXiv:2104.14294, Sec. 4.1 / ``eval_knn.py``): cosine similarity, k = 20, votes weighted by
``exp(sim / T)`` with T = 0.07.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "predict",
    "evaluate_classifier",
    "accuracy",
    "confusion_matrix",
    "count_parameters",
    "count_flops",
    "throughput",
    "latency",
    "extract_features",
    "knn_classify",
    "linear_probe",
    "probe_accuracies",
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


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_flops(model: nn.Module, example: Union[torch.Tensor, Sequence[int]]) -> int:
    """Forward FLOPs of ``model`` on ``example`` counted by ``torch.utils.flop_counter.FlopCounterMode``.

    Counts multiply and add separately (one multiply-accumulate = 2 FLOPs), for the whole batch;
    divide by the batch size for per-image FLOPs. Pitfall (measured with torch 2.14 on CPU):
    FlopCounterMode does not count the CPU flash kernel of ``scaled_dot_product_attention``, so a
    fused ViT would appear to spend nothing on ``Q K^T`` and ``A V``. The count therefore runs
    attention with the MATH backend (``sdpa_kernel(SDPBackend.MATH)``), whose matmuls are counted;
    ``tests/test_tools.py`` checks the total against the analytic count.

    Args:
        example: an input tensor, or its shape (a zero tensor of that shape is used).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    x = example if isinstance(example, torch.Tensor) else torch.zeros(tuple(example))
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


@torch.no_grad()
def latency(model: nn.Module, example: Union[torch.Tensor, Sequence[int]], warmup: int = 5, repeats: int = 30,
            num_threads: Optional[int] = None) -> Dict[str, float]:
    """Wall-clock time of one forward pass in eval mode, in milliseconds, after ``warmup`` passes.

    Returns ``{"median_ms", "p90_ms", "mean_ms", "threads"}``; every repeat is timed separately with
    ``time.perf_counter``.
    """
    x = example if isinstance(example, torch.Tensor) else torch.zeros(tuple(example))
    old = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    was_training = model.training
    model.eval()
    try:
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1000.0)
    finally:
        model.train(was_training)
        threads = torch.get_num_threads()
        torch.set_num_threads(old)
    times_sorted = sorted(times)
    return {
        "median_ms": statistics.median(times),
        "p90_ms": times_sorted[min(len(times) - 1, int(0.9 * len(times)))],
        "mean_ms": statistics.fmean(times),
        "threads": threads,
    }


def throughput(model: nn.Module, input_shape: Sequence[int], warmup: int = 3, repeats: int = 10,
               num_threads: Optional[int] = None) -> float:
    """Inference throughput in images per second: batch size / median forward time.

    Args:
        input_shape: (B, C, H, W) of the timed batch.
    """
    t = latency(model, tuple(input_shape), warmup=warmup, repeats=repeats, num_threads=num_threads)
    return input_shape[0] / (t["median_ms"] / 1000.0)


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
                 num_classes: Optional[int] = None) -> float:
    """Weighted k-NN accuracy on L2-normalised features, as in DINO (Wu et al. 2018 weighting).

    Each test feature's k nearest training features (cosine similarity s_i) vote for their class
    with weight ``exp(s_i / temperature)``; the class with the largest total wins.

    Shapes: *_features (n, D), *_labels (n,). Returns accuracy in [0, 1].

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
    return float((votes.argmax(1) == test_labels).float().mean())


def linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, C: float = 1.0, max_iter: int = 2000) -> float:
    """Accuracy of a logistic-regression classifier (scikit-learn) on standardised frozen features.

    Shapes: *_features (n, D), *_labels (n,). Returns accuracy in [0, 1].
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    clf.fit(train_features.numpy(), train_labels.numpy())
    return float(clf.score(test_features.numpy(), test_labels.numpy()))


# ---------------------------------------------------------------------------------------------
# Cost of attention as the token grid grows: global vs Swin windows vs neighbourhoods
# ---------------------------------------------------------------------------------------------
__all__ += ["PeakMemory", "peak_memory", "fit_growth_exponent", "attention_cost_study"]

from torch.utils._python_dispatch import TorchDispatchMode as _TorchDispatchMode  # noqa: E402


class PeakMemory(_TorchDispatchMode):
    """Peak bytes of tensor storage alive at once inside a ``with`` block, on any device (CPU too).

    CPU PyTorch keeps no allocator statistics and ``tracemalloc`` does not see torch's allocations,
    so this counts them at the operator level: every aten operator that runs inside the block
    (forward and, on CPU, autograd's backward) is intercepted; each output storage that is new
    (not an input's storage, i.e. not a view or an in-place result) adds its ``nbytes`` to the live
    total, and a ``weakref.finalize`` on the storage subtracts them when it is freed. Tensors that
    existed before the block (inputs, parameters) are not counted. What it misses: allocator
    rounding and caching, and scratch memory inside a kernel that never becomes a tensor.

    Attributes:
        peak_bytes: the largest live total seen.  live_bytes: what is still alive (e.g. ``.grad``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._alive: Dict[int, int] = {}

    def _release(self, key: int, nbytes: int) -> None:
        if self._alive.pop(key, None) is not None:
            self.live_bytes -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        import weakref

        from torch.utils._pytree import tree_flatten

        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor) and not t.is_meta}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.is_meta:
                continue
            storage = t.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0 or key in inputs or key in self._alive:
                continue
            self._alive[key] = nbytes
            self.live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
            weakref.finalize(storage, self._release, key, nbytes)
        return out


def peak_memory(fn: Callable[[], object]) -> int:
    """Peak bytes of tensors alive at once while ``fn()`` runs (see :class:`PeakMemory`); the result is dropped."""
    with PeakMemory() as tracker:
        out = fn()
        del out
    return tracker.peak_bytes


def fit_growth_exponent(tokens: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of ``log(values)`` against ``log(tokens)``: ``values ~ c * tokens**slope``.

    A slope near 2 means quadratic growth in the number of tokens, near 1 linear.

    Raises:
        ValueError: fewer than two points, different lengths, or non-positive numbers.
    """
    t, v = np.asarray(tokens, dtype=float), np.asarray(values, dtype=float)
    if t.shape != v.shape or t.ndim != 1 or len(t) < 2:
        raise ValueError(f"need two 1-D sequences of equal length >= 2, got {t.shape} and {v.shape}")
    if (t <= 0).any() or (v <= 0).any():
        raise ValueError("tokens and values must be positive to take logarithms")
    if len(np.unique(t)) < 2:
        raise ValueError("need at least two different token counts to fit a slope")
    slope, _ = np.polyfit(np.log(t), np.log(v), 1)
    return float(slope)


def _attention_layers(dim: int, num_heads: int, window_size: int, kernel_size: int) -> Dict[str, Tuple[nn.Module, Callable]]:
    """One layer per mechanism and how to call it on channels-last tokens (B, H, W, C) -> (B, H, W, C)."""
    from .layers import Attention
    from .models.nat import NeighborhoodAttention2D
    from .models.swin import WindowAttention, window_partition, window_reverse

    glob = Attention(dim, num_heads)
    win = WindowAttention(dim, window_size, num_heads)
    nat = NeighborhoodAttention2D(dim, num_heads, kernel_size, backend="torch")

    def run_global(x):  # explicit path: the (B, h, N, N) weights are materialised
        B, H, W, C = x.shape
        return glob(x.reshape(B, H * W, C), return_attention=True)[0].reshape(B, H, W, C)

    def run_global_fused(x):  # scaled_dot_product_attention: no N x N tensor is returned
        B, H, W, C = x.shape
        return glob(x.reshape(B, H * W, C)).reshape(B, H, W, C)

    def run_window(x):  # explicit path inside each window: (B*nW, h, M^2, M^2) weights
        B, H, W, C = x.shape
        w = window_partition(x, window_size)  # (B*nW, M, M, C)
        y = win(w.reshape(-1, window_size * window_size, C), return_attention=True)[0]  # (B*nW, M^2, C)
        return window_reverse(y.reshape(-1, window_size, window_size, C), window_size, H, W)  # (B, H, W, C)

    def run_na(x):  # pure-PyTorch NA: (B, H, W, h, k^2) weights
        return nat(x, return_attention=True)[0]

    return {"global": (glob, run_global), "global_fused": (glob, run_global_fused),
            "window": (win, run_window), "neighborhood": (nat, run_na)}


def attention_cost_study(
    grid_sizes: Sequence[int] = (8, 16, 32, 64),
    dim: int = 64,
    num_heads: int = 2,
    window_size: int = 8,
    kernel_size: int = 7,
    repeats: int = 3,
    batch_size: int = 1,
    mechanisms: Sequence[str] = ("global", "global_fused", "window", "neighborhood"),
    passes: Sequence[str] = ("forward", "forward+backward"),
    num_threads: Optional[int] = None,
    seed: int = 0,
):
    """Time and peak memory of one attention layer per mechanism as the token grid grows.

    Mechanisms (each a single layer with qkv and output projections, on a ``g x g`` token grid):

    * ``global``: :class:`survey_lib.layers.Attention` on its explicit path (``return_attention=True``),
      so the (B, h, N, N) attention matrix is materialised: memory ~ N^2.
    * ``global_fused``: the same layer through ``scaled_dot_product_attention`` (on CPU a
      flash-style kernel that never stores the N x N matrix; its time is still ~ N^2).
    * ``window``: Swin's ``WindowAttention`` on ``window_size`` x ``window_size`` windows
      (``window_partition`` / ``window_reverse``), explicit path, no shift (Liu et al. 2021, Sec. 3.2).
    * ``neighborhood``: :class:`survey_lib.models.nat.NeighborhoodAttention2D` (pure PyTorch,
      ``kernel_size`` x ``kernel_size`` windows with relative position bias).

    For each grid and pass, the mechanisms are timed interleaved (one call of each in turn, after a
    warm-up call), and the median of ``repeats`` is reported. ``forward`` runs under
    ``torch.no_grad()``; ``forward+backward`` runs the forward with autograd and ``out.sum().backward()``.
    Peak memory is measured in a separate, untimed call with :class:`PeakMemory`: the largest total
    of tensor storage alive at once during the call, inputs and parameters excluded (gradients of
    parameters and input included). ``attn_bytes`` is the analytic size of one layer's attention
    weights (float32): ``4 B h N^2`` (global), ``4 B h N M^2`` (window), ``4 B h N k^2`` (neighbourhood),
    0 for ``global_fused`` (it materialises none), a cross-check on the measured peaks.

    Args:
        grid_sizes: token grid sides; each must be a multiple of ``window_size`` and >= ``kernel_size``.
        num_threads: torch threads during the study (restored afterwards); None keeps the current.

    Returns:
        pandas DataFrame, one row per (mechanism, grid, pass), columns ``mechanism, grid, tokens,
        pass, ms, peak_mem_bytes, attn_bytes, threads``.

    Raises:
        ValueError: an unknown mechanism or pass, or a grid that does not fit the windows.
    """
    import pandas as pd

    known = ("global", "global_fused", "window", "neighborhood")
    bad = [m for m in mechanisms if m not in known] + [p for p in passes if p not in ("forward", "forward+backward")]
    if bad:
        raise ValueError(f"unknown mechanism/pass {bad}; mechanisms: {known}, passes: ('forward', 'forward+backward')")
    for g in grid_sizes:
        if g % window_size or g < kernel_size:
            raise ValueError(f"grid {g} must be a multiple of window_size {window_size} and >= kernel_size {kernel_size}")
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    torch.manual_seed(seed)
    layers = {m: f for m, f in _attention_layers(dim, num_heads, window_size, kernel_size).items() if m in mechanisms}

    def one_call(layer: nn.Module, fn: Callable, x: torch.Tensor, pass_: str) -> None:
        if pass_ == "forward":
            with torch.no_grad():
                fn(x)
        else:
            layer.zero_grad(set_to_none=True)
            x.grad = None
            fn(x).sum().backward()

    rows = []
    try:
        for g in grid_sizes:
            x = torch.randn(batch_size, g, g, dim)
            N = g * g
            for pass_ in passes:
                xin = x.clone().requires_grad_(pass_ != "forward")
                times: Dict[str, list] = {m: [] for m in layers}
                for m, (layer, fn) in layers.items():  # warm-up
                    one_call(layer, fn, xin, pass_)
                for _ in range(repeats):
                    for m, (layer, fn) in layers.items():
                        t0 = time.perf_counter()
                        one_call(layer, fn, xin, pass_)
                        times[m].append((time.perf_counter() - t0) * 1000.0)
                for m, (layer, fn) in layers.items():
                    layer.zero_grad(set_to_none=True)
                    xin.grad = None
                    peak = peak_memory(lambda: one_call(layer, fn, xin, pass_))
                    layer.zero_grad(set_to_none=True)
                    per_query = {"global": N, "global_fused": 0, "window": window_size**2, "neighborhood": kernel_size**2}[m]
                    rows.append(dict(mechanism=m, grid=g, tokens=N, **{"pass": pass_}, ms=statistics.median(times[m]),
                                     peak_mem_bytes=peak, attn_bytes=4 * batch_size * num_heads * N * per_query,
                                     threads=torch.get_num_threads()))
    finally:
        torch.set_num_threads(old_threads)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# probes of a frozen encoder in one call (used per epoch by self-supervised methods)
# ---------------------------------------------------------------------------------------------
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
