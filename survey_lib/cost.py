"""What a model costs: parameters, FLOPs, latency, throughput, peak memory, and the attention cost study.

One protocol for every model, ours or timm's:

* parameters: ``sum(p.numel())`` (:func:`count_parameters`);
* forward FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` (:func:`count_flops`), no hand counting;
* batch-1 latency and throughput: same thread count, warm-up, median and p90 (:func:`latency`,
  :func:`throughput`), and per-frame timing of a stream (:func:`stream_latency`);
* peak memory: PyTorch's CPU-allocator events (:func:`forward_peak_memory`) or the tensors alive at
  once (:class:`PeakMemory`, any device);
* :func:`meta_cost`: parameters and FLOPs of models too large to build, on PyTorch's ``meta`` device;
* :func:`attention_cost_study`: time and memory of global, window and neighbourhood attention as
  the token grid grows, and :func:`fit_growth_exponent` for the slope of the growth;
* :func:`environment`: the machine the numbers were measured on.

FLOP convention: FlopCounterMode counts a multiply-accumulate as 2 FLOPs. Papers' "FLOPs" tables
(ViT, DeiT, Swin) usually count multiply-accumulates, so their "17.6 GFLOPs" for ViT-B/16 is our
35.1 GFLOPs; :func:`measure_model` reports ``gmacs = flops / 2`` for comparison with papers.
FlopCounterMode counts only matrix products and convolutions (``mm``, ``addmm``, ``bmm``,
``baddbmm``, convolution, scaled-dot-product attention); element-wise work (GELU, softmax,
LayerNorm/BatchNorm, additions, pooling, interpolation, the window shifts of Swin) is not counted.
That work is small in FLOPs but not in time on a CPU, which is one reason FLOPs predict latency
poorly (notebook 09).

Deviations: timm models are built with ``pretrained=False`` (no network); latencies are those of
this machine's CPU in PyTorch eager mode, not the GPU throughputs the papers report.
"""
from __future__ import annotations

import contextlib
import functools
import statistics
import time
from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode as _TorchDispatchMode

__all__ = [
    "count_parameters",
    "count_flops",
    "latency",
    "throughput",
    "PeakMemory",
    "peak_memory",
    "forward_peak_memory",
    "fit_growth_exponent",
    "attention_cost_study",
    "environment",
    "format_environment",
    "measure_model",
    "measure_models",
    "meta_cost",
    "stream_latency",
]


# ---------------------------------------------------------------------------------------------
# parameters, FLOPs, latency, throughput
# ---------------------------------------------------------------------------------------------
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
# memory
# ---------------------------------------------------------------------------------------------
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


def _example(example: Union[torch.Tensor, Sequence[int]]) -> torch.Tensor:
    return example if isinstance(example, torch.Tensor) else torch.zeros(tuple(example))


@torch.no_grad()
def forward_peak_memory(model: nn.Module, example: Union[torch.Tensor, Sequence[int]]) -> Dict[str, float]:
    """Peak CPU memory of one forward pass in eval mode, from PyTorch's allocator events.

    Method: run the forward once under ``torch.profiler.profile(profile_memory=True)``, which
    records every allocation and free made through PyTorch's CPU allocator (every tensor's storage,
    including intermediate activations and scratch tensors); replay those events in time order and
    keep the maximum of the running sum. That is the peak of memory allocated *during* the
    forward on top of what existed before it. Parameters, buffers and the input already exist, so
    they are added: ``peak_mb = params_mb + input_mb + activations_peak_mb``.

    Cross-check: :func:`survey_lib.evaluate.peak_memory` counts tensors at the operator level
    instead. Both give the same peak for transformer blocks; for convolutions this function is
    higher, because it also sees the scratch buffers a kernel allocates through PyTorch's allocator
    without returning them as tensors.

    Not included: memory that libraries allocate outside PyTorch's allocator (oneDNN / BLAS
    workspaces), the Python interpreter and imported code, and allocator caching or fragmentation.
    A process RSS measurement would include them, but on CPU it cannot be reset per model inside
    one process and freed memory is often not returned to the OS, so RSS over-states later models.

    Shapes: example (B, C, H, W) (or its shape; zeros are used).

    Returns:
        ``{"peak_mb", "activations_peak_mb", "params_mb", "input_mb"}`` in MiB (2**20 bytes).

    Raises:
        RuntimeError: this PyTorch's profiler does not expose its memory events.
    """
    from torch.profiler import ProfilerActivity, profile

    x = _example(example)
    was_training = model.training
    model.eval()
    try:
        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            model(x)
    finally:
        model.train(was_training)
    try:
        events = prof.profiler.kineto_results.events()
        mem = [(e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]"]
    except AttributeError as e:  # the profiler's result API moved
        raise RuntimeError(f"this torch {torch.__version__} profiler exposes no memory events ({e}); "
                           f"forward_peak_memory needs torch.profiler with profile_memory=True") from e
    mem.sort(key=lambda t: t[0])  # stable: events at the same instant keep their recorded order
    current = peak = 0
    for _, nbytes in mem:
        current += nbytes
        peak = max(peak, current)
    mib = float(2 ** 20)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    params += sum(b.numel() * b.element_size() for b in model.buffers())
    inp = x.numel() * x.element_size()
    return {"peak_mb": (params + inp + peak) / mib, "activations_peak_mb": peak / mib,
            "params_mb": params / mib, "input_mb": inp / mib}


# ---------------------------------------------------------------------------------------------
# the machine
# ---------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment(device: Union[str, torch.device] = "cpu") -> Dict[str, object]:
    """What a timing depends on, to print next to it: hardware, software and thread settings.

    Returns:
        ``device``, ``cpu`` (model name), ``logical_cpus`` (``os.cpu_count()``), ``usable_cpus``
        (this process's CPU affinity), ``load_avg_1min`` (other work on the machine), ``os``,
        ``python``, ``torch``, ``torch_threads`` (intra-op, the number every latency here uses),
        ``torch_interop_threads``, ``omp_num_threads`` (the environment variable), ``mkldnn``
        (oneDNN available), ``cuda`` (available, and the GPU name when ``device`` is CUDA), ``timm``
        and ``numpy`` versions.
    """
    import os
    import platform
    import sys

    dev = torch.device(device)
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    try:
        load = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        load = None
    try:
        import timm

        timm_version = timm.__version__
    except ImportError:
        timm_version = "not installed"
    env: Dict[str, object] = {
        "device": str(dev),
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "load_avg_1min": load,
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "cuda": bool(torch.cuda.is_available()),
        "timm": timm_version,
        "numpy": np.__version__,
    }
    if dev.type == "cuda" and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(dev)
    return env


def format_environment(env: Optional[Dict[str, object]] = None) -> str:
    """:func:`environment` as aligned ``key: value`` lines, for printing above a table of timings."""
    env = environment() if env is None else env
    width = max(len(k) for k in env)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in env.items())


# ---------------------------------------------------------------------------------------------
# timm models measured with one protocol
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 for a moment: the profiler's C++ back-end (Kineto) logs
    "profiler_start" lines and, without a GPU, "gpuGetDeviceCount failed" there. Python exceptions
    are unaffected."""
    import os
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (some embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def _frozen(model: nn.Module):
    """Temporarily set ``requires_grad=False`` on every parameter.

    FlopCounterMode's module tracker hooks the autograd graph of module inputs that require grad; a
    view of a parameter taken under ``torch.no_grad`` (CaiT's class token entering its class-attention
    blocks) requires grad but has no grad function, and the tracker fails with "Expected gradient
    function to be set". With frozen parameters no input requires grad, and the count is unchanged.
    """
    flags = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        yield model
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)


def _build_timm(name: str, img_size: Optional[int] = None, **kwargs) -> nn.Module:
    """``timm.create_model(name, pretrained=False)``, at ``img_size`` where the model takes one."""
    import timm

    if img_size is not None:
        try:
            return timm.create_model(name, pretrained=False, img_size=img_size, **kwargs)
        except TypeError:  # models without an img_size argument (CNNs, MobileViT, LeViT ...)
            pass
    return timm.create_model(name, pretrained=False, **kwargs)


def measure_model(model: Union[str, nn.Module], img_size: int = 224, in_chans: int = 3, warmup: int = 2,
                  repeats: int = 10, num_threads: Optional[int] = None, memory: bool = True,
                  seed: int = 0) -> Dict[str, float]:
    """Parameters, FLOPs, peak memory and batch-1 latency of one model, with one protocol.

    Args:
        model: a module, or a timm model name (built with ``pretrained=False`` at ``img_size`` where
            the architecture takes an ``img_size`` argument).
        img_size, in_chans: the input is a zero tensor (1, in_chans, img_size, img_size).
        warmup, repeats: forward passes before timing and timed passes (median and p90 reported).
        num_threads: torch intra-op threads while timing (default: the current setting).
        memory: also measure :func:`forward_peak_memory` (one profiled forward).

    Returns:
        ``params``, ``flops`` (per image, FlopCounterMode: 1 MAC = 2 FLOPs), ``gmacs``, ``median_ms``,
        ``p90_ms``, ``threads``, ``peak_mb``, ``activations_peak_mb``, ``build_s`` and ``measure_s``.
    """
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    m = _build_timm(model, img_size) if isinstance(model, str) else model
    m.eval()
    build_s = time.perf_counter() - t0
    x = torch.zeros(1, in_chans, img_size, img_size)
    t1 = time.perf_counter()
    with _frozen(m):
        flops = count_flops(m, x)  # batch 1, so per image; also the first warm-up pass
    row: Dict[str, float] = {"params": float(count_parameters(m)), "flops": float(flops), "gmacs": flops / 2e9}
    if memory:
        mem = forward_peak_memory(m, x)
        row.update(peak_mb=mem["peak_mb"], activations_peak_mb=mem["activations_peak_mb"])
    lat = latency(m, x, warmup=warmup, repeats=repeats, num_threads=num_threads)
    row.update(median_ms=lat["median_ms"], p90_ms=lat["p90_ms"], threads=float(lat["threads"]))
    row.update(build_s=build_s, measure_s=time.perf_counter() - t1)
    return row


def measure_models(names: Sequence[str], img_size: int = 224, warmup: int = 2, repeats: int = 10,
                   num_threads: Optional[int] = None, memory: bool = True, on_error: str = "record",
                   progress: bool = True):
    """:func:`measure_model` over timm names; a pandas DataFrame with one row per model.

    Each model is built, measured and deleted before the next (memory stays bounded). A model that
    fails to build or run at ``img_size`` is retried at its own default input size (recorded in the
    ``img_size`` column), and if that fails too its error is kept in the ``error`` column
    (``on_error="raise"`` re-raises instead).
    """
    import gc

    import pandas as pd
    import timm

    rows = []
    for name in names:
        row: Dict[str, object] = {"model": name, "img_size": img_size, "error": ""}
        try:
            row.update(measure_model(name, img_size, warmup=warmup, repeats=repeats, num_threads=num_threads,
                                     memory=memory))
        except Exception:  # noqa: BLE001 - retried at the native size, then recorded or re-raised
            native = timm.get_pretrained_cfg_value(name, "input_size") or (3, img_size, img_size)
            try:
                if native[-1] == img_size:
                    raise
                row.update(measure_model(name, native[-1], warmup=warmup, repeats=repeats,
                                         num_threads=num_threads, memory=memory), img_size=native[-1])
            except Exception as e:  # noqa: BLE001
                if on_error == "raise":
                    raise
                row["error"] = f"{type(e).__name__}: {e}"[:200]
        if progress:
            msg = row["error"] or f"{row['params'] / 1e6:7.1f} M params {row['gmacs']:7.2f} GMACs " \
                                  f"{row['median_ms']:8.1f} ms"
            print(f"  {name:<34} {msg}", flush=True)
        rows.append(row)
        gc.collect()
    return pd.DataFrame(rows)


def meta_cost(name: str, img_size: Optional[int] = None) -> Dict[str, float]:
    """Parameters and FLOPs of a timm model built on the ``meta`` device (no memory, no arithmetic).

    Works for models far too large for this machine (SwinV2-G 2.6B, ViT-g/14 1.1B): tensors have
    shapes but no data, and FlopCounterMode counts from shapes alone.

    Args:
        name: timm model name.  img_size: input side (default: the model's own ``input_size``).

    Returns:
        ``{"params", "flops", "gmacs", "img_size"}`` (FLOPs for one image; cached per name and size).
    """
    import timm

    native = timm.get_pretrained_cfg_value(name, "input_size") or (3, 224, 224)
    return dict(_meta_cost(name, int(img_size or native[-1]), int(native[-1]), int(native[0])))


@functools.lru_cache(maxsize=64)
@torch.no_grad()
def _meta_cost(name: str, size: int, native_size: int, in_chans: int) -> Dict[str, float]:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = _build_timm(name, size if size != native_size else None)
    model.eval()
    x = torch.zeros(1, in_chans, size, size, device="meta")
    counter = FlopCounterMode(display=False)
    with _frozen(model), counter:
        model(x)
    flops = float(counter.get_total_flops())
    return {"params": float(sum(p.numel() for p in model.parameters())), "flops": flops, "gmacs": flops / 2e9,
            "img_size": float(size)}


# ---------------------------------------------------------------------------------------------
# real-time check: per-frame latency on a stream
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def stream_latency(model: nn.Module, frames: Iterable[torch.Tensor],
                   preprocess: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                   warmup: int = 3, num_threads: Optional[int] = None) -> Dict[str, object]:
    """Process a stream one frame at a time, as a live video would, and time every frame.

    Each frame's time covers ``preprocess`` (frame -> (1, C, H, W) batch), the forward pass and the
    arg-max; the first ``warmup`` frames are processed but not timed.

    Returns:
        ``{"ms": np.ndarray of per-frame milliseconds, "fps": frames / total seconds,
        "median_ms", "p90_ms", "p99_ms", "predictions": list of ints, "threads"}``.

    Raises:
        ValueError: the stream has no frame after the warm-up.
    """
    old = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    was_training = model.training
    model.eval()
    times, preds = [], []
    try:
        for i, frame in enumerate(frames):
            t0 = time.perf_counter()
            x = preprocess(frame) if preprocess is not None else frame.unsqueeze(0)
            pred = int(model(x).argmax(-1)[0])
            dt = (time.perf_counter() - t0) * 1000.0
            if i >= warmup:
                times.append(dt)
                preds.append(pred)
    finally:
        threads = torch.get_num_threads()
        torch.set_num_threads(old)
        model.train(was_training)
    if not times:
        raise ValueError(f"the stream yielded no frame after {warmup} warm-up frames")
    ms = np.asarray(times)
    return {"ms": ms, "fps": 1000.0 * len(ms) / ms.sum(), "median_ms": float(np.median(ms)),
            "p90_ms": float(np.percentile(ms, 90)), "p99_ms": float(np.percentile(ms, 99)),
            "predictions": preds, "threads": threads}


# ---------------------------------------------------------------------------------------------
# cost of attention as the token grid grows: global vs Swin windows vs neighbourhoods
# ---------------------------------------------------------------------------------------------
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
