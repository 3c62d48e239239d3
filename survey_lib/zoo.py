"""The survey's model zoo: which vision transformers timm provides, what each changed, what they cost.

Three things live here, used by ``notebooks/08_cnn_vs_vit.ipynb`` and ``notebooks/09_survey_tables.ipynb``:

1. :data:`VARIANTS` - the architectures named by the review documents (SOURCES.md S3 Tables 1-2, the
   S4 thesis survey) and a few the survey needs for context, each with its paper, arXiv id, parent,
   the axis along which it changed ViT (tokenisation, locality, hierarchy, depth scaling,
   convolution hybrid, ...) and the timm models that implement it (none where timm has no such model).
2. Cost measurement with one protocol for every model: parameters (``sum(p.numel())``), forward
   FLOPs (``torch.utils.flop_counter.FlopCounterMode``, via :func:`survey_lib.evaluate.count_flops`),
   peak memory (:func:`forward_peak_memory`: PyTorch's own CPU-allocator events, see its docstring),
   batch-1 latency (:func:`survey_lib.evaluate.latency`: same thread count, warm-up, median and p90).
   :func:`meta_cost` counts parameters and FLOPs of models too large to build (SwinV2-G, ViT-g)
   on PyTorch's ``meta`` device: shapes only, no memory, no arithmetic.
3. :data:`PUBLISHED_TOP1` - ImageNet top-1 figures as published (paper and table) next to the
   numbers the review quotes, each discrepancy flagged and explained. These are QUOTES typed by hand
   with their citations; every parameter and FLOP column next to them is computed.

FLOP convention: FlopCounterMode counts a multiply-accumulate as 2 FLOPs. Papers' "FLOPs" tables
(ViT, DeiT, Swin) usually count multiply-accumulates, so their "17.6 GFLOPs" for ViT-B/16 is our
35.1 GFLOPs; this module reports ``gmacs = flops / 2`` for comparison with papers. FlopCounterMode
counts only matrix products and convolutions (``mm``, ``addmm``, ``bmm``, ``baddbmm``, convolution,
scaled-dot-product attention); element-wise work (GELU, softmax, LayerNorm/BatchNorm, additions,
pooling, interpolation, the window shifts of Swin) is not counted. That work is small in FLOPs but
not in time on a CPU, which is one reason FLOPs predict latency poorly (see the notebook).

Also here: the small timm ResNet of the CNN-vs-ViT study (:func:`build_resnet`), loading a local
pretrained checkpoint into it (:func:`load_backbone_checkpoint`), per-frame stream timing
(:func:`stream_latency`, :func:`read_video_frames`), and the figures (:func:`plot_cost_scatter`,
:func:`plot_family_tree`, :func:`plot_latency_distribution`).

Sources: the papers cited in :data:`VARIANTS` and :data:`PUBLISHED_TOP1`; He et al. 2016, "Deep
Residual Learning for Image Recognition", arXiv:1512.03385 (ResNet).

Deviations: every model is built by timm with ``pretrained=False`` (no network); latencies are
those of this machine's CPU in PyTorch eager mode at batch 1, not the GPU throughputs the papers
report, so they rank models differently than the papers' speed columns do.
"""
from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

__all__ = [
    "AXES",
    "Variant",
    "VARIANTS",
    "variant_table",
    "timm_models_for",
    "SURVEY_MODELS_SMOKE",
    "SURVEY_MODELS_CPU",
    "environment",
    "format_environment",
    "forward_peak_memory",
    "measure_model",
    "measure_models",
    "meta_cost",
    "Quote",
    "PUBLISHED_TOP1",
    "published_table",
    "build_resnet",
    "load_backbone_checkpoint",
    "stream_latency",
    "read_video_frames",
    "plot_cost_scatter",
    "plot_family_tree",
    "plot_latency_distribution",
]

# ---------------------------------------------------------------------------------------------
# 1. the variants
# ---------------------------------------------------------------------------------------------
#: The axes along which a variant changed ViT (one lane each in the family-tree figure).
AXES: Tuple[str, ...] = (
    "CNN reference",
    "baseline",
    "training recipe",
    "tokenisation",
    "locality",
    "hierarchy",
    "depth scaling",
    "convolution hybrid",
    "efficiency",
    "scale",
)


@dataclass(frozen=True)
class Variant:
    """One architecture of the survey.

    Attributes:
        key: short name used in tables and figures (``"Swin"``).
        paper: first author, year, title and venue.
        arxiv: arXiv identifier; its YYMM prefix dates the variant in the timeline.
        parent: the ``key`` it most directly builds on (None for roots).
        axis: the main way it changed ViT, one of :data:`AXES`.
        change: one line: what it changed.
        timm_models: timm model names implementing it (empty: timm 1.0.31 has none).
        cited_by: which source lists it: ``"S3"`` (the review), ``"S4"`` (the thesis survey),
            ``"brief"`` (added for the survey tables), or several joined by ``+``.
    """

    key: str
    paper: str
    arxiv: str
    parent: Optional[str]
    axis: str
    change: str
    timm_models: Tuple[str, ...] = ()
    cited_by: str = "brief"

    @property
    def date(self) -> float:
        """Year + (month - 0.5) / 12 of the arXiv v1 submission, from the identifier's YYMM."""
        yymm = self.arxiv.split(".")[0]
        return 2000 + int(yymm[:2]) + (int(yymm[2:]) - 0.5) / 12


VARIANTS: Tuple[Variant, ...] = (
    Variant("ResNet", "He et al. 2016, Deep Residual Learning for Image Recognition, CVPR", "1512.03385",
            None, "CNN reference", "convolutions + residual connections (not a transformer)",
            ("resnet18", "resnet50"), "brief"),
    Variant("ViT", "Dosovitskiy et al. 2021, An Image is Worth 16x16 Words, ICLR", "2010.11929",
            None, "baseline", "16x16 patches as tokens, global self-attention, CLS token",
            ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224"), "S3+S4"),
    Variant("DeiT", "Touvron et al. 2021, Training data-efficient image transformers & distillation through "
            "attention, ICML", "2012.12877", "ViT", "training recipe",
            "ImageNet-1k-only recipe + distillation token (same network as ViT)",
            ("deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224",
             "deit_base_distilled_patch16_224"), "S3+S4"),
    Variant("T2T-ViT", "Yuan et al. 2021, Tokens-to-Token ViT, ICCV", "2101.11986", "ViT", "tokenisation",
            "overlapping soft split: neighbouring tokens merged progressively", (), "S4"),
    Variant("TNT", "Han et al. 2021, Transformer in Transformer, NeurIPS", "2103.00112", "ViT", "tokenisation",
            "an inner transformer over sub-patches inside each patch", ("tnt_s_patch16_224",), "S4"),
    Variant("PVT", "Wang et al. 2021, Pyramid Vision Transformer: A Versatile Backbone for Dense Prediction "
            "without Convolutions, ICCV", "2102.12122", "ViT", "hierarchy",
            "4-stage pyramid with spatial-reduction attention: the first hierarchical ViT", (), "brief"),
    Variant("PVT v2", "Wang et al. 2022, PVT v2: Improved Baselines with Pyramid Vision Transformer, CVMJ",
            "2106.13797", "PVT", "hierarchy", "overlapping patch embedding, convolutional FFN, linear SRA",
            ("pvt_v2_b0", "pvt_v2_b2"), "brief"),
    Variant("CvT", "Wu et al. 2021, CvT: Introducing Convolutions to Vision Transformers, ICCV", "2103.15808",
            "ViT", "convolution hybrid", "convolutional token embedding and convolutional Q/K/V projection",
            (), "brief"),
    Variant("Swin", "Liu et al. 2021, Swin Transformer: Hierarchical Vision Transformer using Shifted Windows, ICCV",
            "2103.14030", "ViT", "locality", "attention in local windows shifted every other block; patch merging",
            ("swin_tiny_patch4_window7_224", "swin_base_patch4_window7_224"), "S3+S4"),
    Variant("ConViT", "d'Ascoli et al. 2021, ConViT: Improving Vision Transformers with Soft Convolutional "
            "Inductive Biases, ICML", "2103.10697", "ViT", "locality",
            "gated positional self-attention initialised as a soft convolution", ("convit_tiny", "convit_base"),
            "S4"),
    Variant("DeepViT", "Zhou et al. 2021, DeepViT: Towards Deeper Vision Transformer", "2103.11886", "ViT",
            "depth scaling", "re-attention mixes heads' maps to keep deep layers diverse", (), "S4"),
    Variant("CaiT", "Touvron et al. 2021, Going deeper with Image Transformers, ICCV", "2103.17239", "DeiT",
            "depth scaling", "LayerScale + class-attention layers: trains 24-48 blocks stably",
            ("cait_xxs24_224", "cait_s24_224"), "S4"),
    Variant("LeViT", "Graham et al. 2021, LeViT: a Vision Transformer in ConvNet's Clothing for Faster "
            "Inference, ICCV", "2104.01136", "DeiT", "convolution hybrid",
            "conv stem, shrinking attention stages, BatchNorm: built for inference speed",
            ("levit_128s", "levit_256"), "brief"),
    Variant("Twins", "Chu et al. 2021, Twins: Revisiting the Design of Spatial Attention in Vision "
            "Transformers, NeurIPS", "2104.13840", "PVT", "locality",
            "local window attention interleaved with global sub-sampled attention",
            ("twins_svt_small", "twins_pcpvt_small"), "brief"),
    Variant("DVT", "Wang et al. 2021, Not All Images are Worth 16x16 Words: Dynamic Transformers, NeurIPS",
            "2105.15075", "ViT", "tokenisation", "cascade of coarse-to-fine token grids chosen per image", (), "S4"),
    Variant("CoAtNet", "Dai et al. 2021, CoAtNet: Marrying Convolution and Attention for All Data Sizes, NeurIPS",
            "2106.04803", "ViT", "convolution hybrid", "MBConv stages first, relative-attention stages later",
            ("coatnet_0_224",), "S4"),
    Variant("Shuffle T.", "Huang et al. 2021, Shuffle Transformer: Rethinking Spatial Shuffle for Vision "
            "Transformer", "2106.03650", "Swin", "locality",
            "spatial shuffle between windows instead of shifting + depth-wise conv", (), "S4"),
    Variant("XCiT", "El-Nouby et al. 2021, XCiT: Cross-Covariance Image Transformers, NeurIPS", "2106.09681",
            "CaiT", "efficiency", "attention over channels (d x d), linear in the number of tokens",
            ("xcit_tiny_12_p16_224",), "brief"),
    Variant("MobileViT", "Mehta & Rastegari 2022, MobileViT: Light-weight, General-purpose, and Mobile-friendly "
            "Vision Transformer, ICLR", "2110.02178", "ViT", "convolution hybrid",
            "MobileNetV2 blocks + transformers as global 'convolutions' on unfolded patches",
            ("mobilevit_xxs", "mobilevit_xs", "mobilevit_s"), "S3"),
    Variant("Swin V2", "Liu et al. 2022, Swin Transformer V2: Scaling Up Capacity and Resolution, CVPR",
            "2111.09883", "Swin", "scale", "post-norm, cosine attention, log-spaced continuous position bias",
            ("swinv2_tiny_window8_256", "swinv2_cr_tiny_224", "swinv2_cr_base_224"), "S3"),
    Variant("UViT", "Chen et al. 2022, A Simple Single-Scale Vision Transformer for Object Localization and "
            "Instance Segmentation, ECCV", "2112.09747", "ViT", "hierarchy",
            "single scale, constant width: drops the pyramid for detection", (), "S4"),
    Variant("MobileViT v2", "Mehta & Rastegari 2022, Separable Self-attention for Mobile Vision Transformers",
            "2206.02680", "MobileViT", "efficiency", "separable self-attention, linear in tokens",
            ("mobilevitv2_075", "mobilevitv2_100"), "S3"),
    Variant("EfficientViT", "Liu et al. 2023, EfficientViT: Memory Efficient Vision Transformer with Cascaded "
            "Group Attention, CVPR", "2305.07027", "LeViT", "efficiency",
            "sandwich layout, cascaded group attention (each head sees a split of the channels)",
            ("efficientvit_m0", "efficientvit_m2"), "S3"),
    Variant("ViT-22B", "Dehghani et al. 2023, Scaling Vision Transformers to 22 Billion Parameters, ICML",
            "2302.05442", "ViT", "scale", "parallel blocks, QK-norm; 22B parameters", (), "S3"),
    Variant("SAM", "Kirillov et al. 2023, Segment Anything, ICCV", "2304.02643", "ViT", "scale",
            "ViT-H image encoder (windowed + global attention) for promptable segmentation",
            ("samvit_huge_patch16",), "S3"),
    Variant("DINOv2", "Oquab et al. 2023, DINOv2: Learning Robust Visual Features without Supervision",
            "2304.07193", "ViT", "scale", "self-supervised ViT-g/14 on 142M curated images",
            ("vit_giant_patch14_dinov2",), "S3"),
    Variant("LaViT", "Zhang et al. 2024, You Only Need Less Attention at Each Stage in Vision Transformers, CVPR",
            "2406.00427", "Swin", "efficiency", "computes attention in few layers, re-uses transformed scores",
            (), "S3"),
    Variant("big.LITTLE ViT", "Guo et al. 2024, big.LITTLE Vision Transformer for Efficient Visual Recognition",
            "2410.10267", "ViT", "efficiency", "important tokens to a big block, the rest to a little one", (),
            "S3"),
)
_BY_KEY = {v.key: v for v in VARIANTS}


@functools.lru_cache(maxsize=1)
def _timm_names() -> frozenset:
    import timm

    return frozenset(timm.list_models())


def timm_models_for(variant: Variant) -> List[str]:
    """The variant's timm model names that this timm actually provides (``timm.list_models``)."""
    return [m for m in variant.timm_models if m in _timm_names()]


def variant_table(variants: Sequence[Variant] = VARIANTS):
    """A pandas DataFrame of the variants: key, date, axis, parent, change, paper, arXiv, timm models
    (those present in the installed timm) and ``in_timm``."""
    import pandas as pd

    rows = []
    for v in variants:
        present = timm_models_for(v)
        rows.append(dict(key=v.key, date=round(v.date, 2), axis=v.axis, parent=v.parent or "", change=v.change,
                         paper=v.paper, arxiv=v.arxiv, cited_by=v.cited_by, timm_models=", ".join(present),
                         in_timm=bool(present)))
    return pd.DataFrame(rows)


#: Models measured by notebook 09 under the smoke profile: two small ones, low resolution.
SURVEY_MODELS_SMOKE: Tuple[str, ...] = ("deit_tiny_patch16_224", "levit_128s")

#: Models measured under the cpu profile: every timm model listed in :data:`VARIANTS` that is
#: buildable on this machine (the giants SAM ViT-H and DINOv2 ViT-g are counted on the meta device only).
SURVEY_MODELS_CPU: Tuple[str, ...] = tuple(
    m for v in VARIANTS for m in v.timm_models if m not in ("samvit_huge_patch16", "vit_giant_patch14_dinov2")
)


# ---------------------------------------------------------------------------------------------
# 2. measuring cost
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
    from .evaluate import count_flops, count_parameters, latency

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
# 3. published numbers vs the review's quotes (QUOTES, typed with their citations)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Quote:
    """One published ImageNet figure next to what a review document says about it.

    Every number here is quoted, not measured. ``timm_model`` and ``img_size`` say which
    architecture and resolution the computed parameter/FLOP columns of :func:`published_table` use.

    Attributes:
        model: the paper's name for the model and setting.
        timm_model: timm name of the same architecture ("" if timm lacks it).
        img_size: evaluation resolution of the published figure.
        pretrain: training data before ImageNet-1k evaluation.
        top1: published ImageNet-1k validation top-1 in %, None if the row is about something else.
        source: paper, arXiv id and table (or abstract) where the figure is printed.
        review_quote: what the review document says (None: not quoted).
        review_doc: which source document (SOURCES.md id).
        review_params_m: parameters (millions) the review states, checked against the computed count.
        discrepancy: True if the review's figure does not belong to the model/setting it names.
        explanation: why, or what the quote leaves out.
    """

    model: str
    timm_model: str
    img_size: int
    pretrain: str
    top1: Optional[float]
    source: str
    review_quote: Optional[str]
    review_doc: str
    review_params_m: Optional[float]
    discrepancy: bool
    explanation: str


VIT_PAPER = "Dosovitskiy et al. 2021, arXiv:2010.11929, Table 5 (appendix)"
DEIT_PAPER = "Touvron et al. 2021, arXiv:2012.12877, Table 5 and abstract; facebookresearch/deit model zoo"
SWIN_PAPER = "Liu et al. 2021, arXiv:2103.14030, Table 1(a)/(b)"

#: QUOTED ImageNet figures (not measured here), with their citations; see :class:`Quote`.
PUBLISHED_TOP1: Tuple[Quote, ...] = (
    Quote("ViT-B/16, fine-tuned at 384 px", "vit_base_patch16_384", 384, "JFT-300M", 84.15, VIT_PAPER,
          "~84% (JFT-300M, then ImageNet)", "S3 Table 1", 86.0, False,
          "Matches; the review omits that it is at 384 px fine-tuning resolution (3.2x the FLOPs of 224 px) "
          "and on a private 300M-image dataset."),
    Quote("ViT-B/16, fine-tuned at 384 px", "vit_base_patch16_384", 384, "ImageNet-1k only", 77.91, VIT_PAPER,
          None, "S3 Table 1", None, False,
          "Context: the same network trained on ImageNet-1k alone; the gap to 84.15 is what DeiT closed."),
    Quote("DeiT-B", "deit_base_patch16_224", 224, "ImageNet-1k only", 81.8, DEIT_PAPER,
          "83.1%", "S3 Table 1", 86.0, True,
          "The review's 83.1% is DeiT-B fine-tuned at 384 px (DeiT-B↑384); DeiT-B at 224 px is 81.8%."),
    Quote("DeiT-B↑384", "deit_base_patch16_384", 384, "ImageNet-1k only", 83.1, DEIT_PAPER,
          "83.1% (as DeiT-B)", "S3 Table 1", 86.0, True,
          "Where the review's 83.1% comes from: resolution 384 px, not stated by the review. (The released "
          "checkpoint of this model scores 82.9% in the DeiT repository.)"),
    Quote("DeiT-B⚗ (distilled)", "deit_base_distilled_patch16_224", 224, "ImageNet-1k + RegNetY-16GF teacher",
          83.4, DEIT_PAPER, None, "S3 Table 1", None, False,
          "Context: the distilled model at 224 px and 300 epochs."),
    Quote("DeiT-B⚗↑384, 1000 epochs", "deit_base_distilled_patch16_384", 384,
          "ImageNet-1k + RegNetY-16GF teacher", 85.2, DEIT_PAPER, "85.2% (distilled)", "S3 Table 1", 86.0, True,
          "Correct number, missing conditions: 384 px, 1000 training epochs and a convnet teacher."),
    Quote("Swin-B", "swin_base_patch4_window7_224", 224, "ImageNet-1k only", 83.5, SWIN_PAPER,
          "87.3% (ImageNet-1K)", "S3 Table 1", 88.0, True,
          "Swin-B trained on ImageNet-1K is 83.5% at 224 px (84.5% at 384 px); 87.3% belongs to another model "
          "and data (Swin-L, ImageNet-22K pre-training, 384 px)."),
    Quote("Swin-B, 384 px", "swin_base_patch4_window12_384", 384, "ImageNet-1k only", 84.5, SWIN_PAPER,
          None, "S3 Table 1", None, False, "Context: the best ImageNet-1K-only Swin-B."),
    Quote("Swin-L, 384 px", "swin_large_patch4_window12_384", 384, "ImageNet-22k", 87.3, SWIN_PAPER,
          "87.3% (attributed to Swin-B)", "S3 Table 1", 88.0, True,
          "Where the review's 87.3% comes from: 197M parameters, not ~88M, and ImageNet-22K pre-training."),
    Quote("SwinV2-G (3.0B)", "swinv2_cr_giant_224", 640, "ImageNet-22k-ext (70M images) + SimMIM", 90.17,
          "Liu et al. 2022, arXiv:2111.09883, Table 2", "~84% (ImageNet)", "S3 Table 2", 3000.0, True,
          "84.0% is SwinV2-G on ImageNet-V2 (a harder re-collected test set); on ImageNet-1K val it is 90.17%. "
          "The computed columns are timm's swinv2_cr_giant, a re-implementation whose giant configuration "
          "has 2.6B parameters, not the paper's 3.0B, and timm's window size: not the paper's network."),
    Quote("MobileViTv2-0.75", "mobilevitv2_075", 256, "ImageNet-1k only", 75.6,
          "Mehta & Rastegari 2022, arXiv:2206.02680, abstract", "75.6%, ~3M, 3.2x faster", "S3 Table 2", 3.0, False,
          "Matches; '3.2x faster' is measured on a mobile device against MobileViT v1, not in general; "
          "notebook 09 measures the ratio on this CPU."),
    Quote("EfficientViT-M2 vs MobileViT-XXS", "efficientvit_m2", 224, "ImageNet-1k only", None,
          "Liu et al. 2023, arXiv:2305.07027, abstract", "+1.8%, 5.8x faster", "S3 Table 2", 10.0, False,
          "Matches the abstract (+1.8 points), but 5.8x is V100 GPU throughput; the same abstract gives 3.7x on "
          "CPU. Beware the name: timm also has MIT's unrelated EfficientViT (efficientvit_b*, arXiv:2205.14756)."),
    Quote("CLIP ViT-L/14@336px, zero-shot", "vit_large_patch14_clip_336", 336, "400M image-text pairs", 76.2,
          "Radford et al. 2021, arXiv:2103.00020, Table 1", "76.2% zero-shot", "S3", None, False,
          "Matches; zero-shot (no ImageNet training images), image tower only in the computed columns."),
    Quote("SAM image encoder (ViT-H)", "samvit_huge_patch16", 1024, "SA-1B (segmentation)", None,
          "Kirillov et al. 2023, arXiv:2304.02643", "~600M ViT-H", "S3 Table 2", 600.0, False,
          "Parameter claim only; the encoder runs at 1024 px (computed FLOPs)."),
    Quote("DINOv2 ViT-g/14", "vit_giant_patch14_dinov2", 518, "LVD-142M (self-supervised)", None,
          "Oquab et al. 2023, arXiv:2304.07193", "1B", "S3 Table 2", 1000.0, False,
          "Parameter claim only (ViT-g/14 is about 1.1B)."),
)


def published_table(quotes: Sequence[Quote] = PUBLISHED_TOP1, compute: bool = True, params_tolerance: float = 0.10):
    """The quotes as a pandas DataFrame, with computed parameters and FLOPs beside them.

    Computed columns (:func:`meta_cost`, meta device, at the quote's resolution where timm's model
    accepts it): ``params_m`` and ``gmacs``. ``params_flag`` is True where the review's parameter
    claim differs from the computed count by more than ``params_tolerance`` (relative), or, for
    upper bounds such as "<10M", where the computed count exceeds it.
    """
    import pandas as pd

    rows = []
    cache: Dict[Tuple[str, int], Dict[str, float]] = {}
    for q in quotes:
        row = asdict(q)
        if compute and q.timm_model:
            key = (q.timm_model, q.img_size)
            if key not in cache:
                try:
                    cache[key] = meta_cost(q.timm_model, q.img_size)
                except Exception:  # noqa: BLE001 - e.g. a window size that does not divide this resolution
                    cache[key] = meta_cost(q.timm_model)
            c = cache[key]
            row.update(params_m=c["params"] / 1e6, gmacs=c["gmacs"], computed_at=int(c["img_size"]))
            if q.review_params_m is not None:
                ratio = row["params_m"] / q.review_params_m
                upper_bound = q.model.startswith("EfficientViT")  # quoted as "<10M"
                row["params_flag"] = bool(ratio > 1.0) if upper_bound else bool(abs(ratio - 1) > params_tolerance)
            else:
                row["params_flag"] = False
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# the CNN of the CNN-vs-ViT study
# ---------------------------------------------------------------------------------------------
def build_resnet(num_classes: int, in_chans: int = 1, arch: str = "small", checkpoint: Union[str, Path, None] = None,
                 channels: Tuple[int, ...] = (16, 32, 64, 128), layers: Tuple[int, ...] = (1, 1, 1, 1)) -> nn.Module:
    """A timm ResNet for small images, from scratch, or a timm ResNet fine-tuned from a local checkpoint.

    ``arch="small"``: timm's ``ResNet`` with BasicBlocks ``layers`` and widths ``channels`` (about
    0.3M parameters and 7M multiply-adds at 32 px by default), sized for 32-48 px inputs by dropping
    the stem's max-pool: the 7x7 stride-2 stem convolution alone takes a 32 px image to 16 x 16, and
    the four stages end on 2 x 2 maps (with the max-pool they would end on 1 x 1).

    Any other ``arch`` is a timm model name (e.g. ``"resnet50"``, the source's CNN), built with
    ``pretrained=False``; with ``checkpoint``, its weights are loaded from that local file by
    :func:`load_backbone_checkpoint` (the classifier is re-initialised for ``num_classes``; a
    3-channel stem is summed to ``in_chans``).

    Shapes: (B, in_chans, H, W) -> logits (B, num_classes).

    Raises:
        ValueError: ``checkpoint`` with ``arch="small"`` (no pretrained small ResNet exists).
        FileNotFoundError: ``checkpoint`` does not exist.
    """
    import timm
    from timm.models.resnet import BasicBlock, ResNet

    if arch == "small":
        if checkpoint is not None:
            raise ValueError("arch='small' has no pretrained weights; pass arch='resnet50' (or another timm "
                             "ResNet) together with checkpoint=...")
        model = ResNet(BasicBlock, layers=list(layers), channels=tuple(channels), num_classes=num_classes,
                       in_chans=in_chans)
        model.maxpool = nn.Identity()  # total stride 16 instead of 32: a 32 px image ends on 2 x 2 maps
        return model
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    if checkpoint is not None:
        load_backbone_checkpoint(model, checkpoint)
    return model


def load_backbone_checkpoint(model: nn.Module, checkpoint: Union[str, Path]) -> Dict[str, List[str]]:
    """Load a local checkpoint into ``model`` for fine-tuning; returns what was adapted or skipped.

    Accepts a plain state dict, a dict holding it under ``state_dict`` or ``model`` (timm training
    and :func:`survey_lib.train.fit` checkpoints), or a ``.safetensors`` file. Tensors whose shape
    differs only in input channels of the first convolution are adapted with timm's
    ``adapt_input_conv`` (RGB summed to grey); other mismatches (the classifier of another number of
    classes) are skipped and keep their fresh initialisation.

    Returns:
        ``{"adapted": [...], "skipped": [...], "missing": [...]}`` key lists.

    Raises:
        FileNotFoundError: no file at ``checkpoint``.
        ValueError: nothing in the checkpoint matches the model (wrong architecture).
    """
    from timm.models import adapt_input_conv

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; pass the path of a local state dict "
                                f"(.pth/.pt/.bin or .safetensors), or checkpoint=None to train from scratch")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=False)
        for k in ("state_dict", "model"):
            if isinstance(state, dict) and k in state and isinstance(state[k], dict):
                state = state[k]
                break
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    own = model.state_dict()
    load, adapted, skipped = {}, [], []
    for k, v in state.items():
        if k not in own:
            skipped.append(k)
        elif v.shape == own[k].shape:
            load[k] = v
        elif v.ndim == 4 and v.shape[0] == own[k].shape[0] and v.shape[2:] == own[k].shape[2:]:
            load[k] = adapt_input_conv(own[k].shape[1], v)  # (O, I, kh, kw) with I -> in_chans
            adapted.append(k)
        else:
            skipped.append(k)
    if not load:
        raise ValueError(f"{path}: none of its {len(state)} tensors match {type(model).__name__}; is it a "
                         f"checkpoint of this architecture?")
    missing = [k for k in own if k not in load]
    model.load_state_dict(load, strict=False)
    return {"adapted": adapted, "skipped": skipped, "missing": missing}


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


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------
def plot_cost_scatter(df, x: str, y: str, hue: Optional[str] = "axis", label: str = "model", logx: bool = True,
                      logy: bool = True, xlabel: Optional[str] = None, ylabel: Optional[str] = None,
                      title: Optional[str] = None, ax=None):
    """A seaborn scatter of two cost columns of a measurement table, every point labelled.

    Returns:
        the matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    d = df.dropna(subset=[x, y])
    if ax is None:
        fig, ax = plt.subplots(figsize=(8.5, 6))
    else:
        fig = ax.figure
    sns.scatterplot(data=d, x=x, y=y, hue=hue if hue in d.columns else None, s=60, ax=ax)
    # labels of points that nearly coincide (the Base-size cluster) are stacked instead of overprinted
    lx = np.log10(d[x].to_numpy(dtype=float)) if logx else d[x].to_numpy(dtype=float)
    ly = np.log10(d[y].to_numpy(dtype=float)) if logy else d[y].to_numpy(dtype=float)
    span = np.array([np.ptp(lx) or 1.0, np.ptp(ly) or 1.0])
    placed: List[np.ndarray] = []
    for i, (_, r) in enumerate(d.iterrows()):
        p = np.array([lx[i], ly[i]]) / span
        k = sum(np.abs(p - q).max() < 0.045 for q in placed)
        placed.append(p)
        ax.annotate(str(r[label]), (r[x], r[y]), fontsize=7, xytext=(4, 2 - 8 * k), textcoords="offset points")
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    ax.grid(alpha=0.3, which="both")
    if title:
        ax.set_title(title)
    if ax.get_legend() is not None:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_family_tree(variants: Optional[Sequence[Variant]] = None, in_timm: Optional[Dict[str, bool]] = None):
    """Family tree as a timeline: one row per variant in order of arXiv date, one column per axis of
    change, arrows from the variant each builds on, and what it changed written beside it.

    Args:
        variants: default :data:`VARIANTS` without the CNN reference (ResNet).
        in_timm: key -> bool; filled markers are in timm, hollow ones are not (default: looked up in
            the installed timm).

    Returns:
        the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    if variants is None:
        variants = [v for v in VARIANTS if v.key != "ResNet"]
    if in_timm is None:
        in_timm = {v.key: bool(timm_models_for(v)) for v in variants}
    rows = sorted(variants, key=lambda v: (v.date, v.key))
    lanes = [a for a in AXES if any(v.axis == a for v in rows)]
    pos = {v.key: (lanes.index(v.axis), -i) for i, v in enumerate(rows)}
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(14, 0.34 * len(rows) + 1.6))
    text_x = len(lanes) - 0.3
    for i, v in enumerate(rows):  # guide lines and year separators
        ax.plot([-0.5, text_x], [-i, -i], color="0.92", lw=0.6, zorder=0)
        year = int(v.date)
        if i == 0 or year != int(rows[i - 1].date):
            ax.axhline(-i + 0.5, color="0.55", lw=0.8, zorder=0)
            ax.text(-0.65, -i + 0.3, str(year), ha="right", va="top", fontsize=9, weight="bold", color="0.35")
    for v in rows:
        if v.parent in pos:
            (x0, y0), (x1, y1) = pos[v.parent], pos[v.key]
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=1,
                        arrowprops=dict(arrowstyle="-|>", color="0.55", lw=0.7, shrinkA=5, shrinkB=5,
                                        connectionstyle="arc3,rad=-0.25" if x1 != x0 else "arc3,rad=0.5"))
    for v in rows:
        x, y = pos[v.key]
        c = cmap(AXES.index(v.axis) % 10)
        ax.scatter([x], [y], s=55, color=c if in_timm.get(v.key) else "white", edgecolors=c, linewidths=1.6,
                   zorder=3)
        month = int(round((v.date % 1) * 12 + 0.5))
        ax.text(text_x, y, f"{v.key}", va="center", fontsize=8.5, weight="bold")
        ax.text(text_x + 1.55, y, f"{int(v.date)}-{month:02d}  {v.change}" + ("" if in_timm.get(v.key) else "  [not in timm]"),
                va="center", fontsize=7.5, color="0.2")
    ax.set_xticks(range(len(lanes)))
    ax.set_xticklabels(lanes, rotation=35, ha="left", fontsize=9)
    ax.xaxis.tick_top()
    ax.set_yticks([])
    ax.set_xlim(-1.3, text_x + 9.5)
    ax.set_ylim(-len(rows) + 0.4, 0.7)
    for side in ("right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.set_title("ViT variants: what each changed (column), when (row, by arXiv date), what it builds on (arrow);"
                 " hollow = not in timm", fontsize=10, pad=12)
    fig.tight_layout()
    return fig


def plot_latency_distribution(per_model_ms: Dict[str, np.ndarray], budget_ms: Optional[float] = 1000 / 30,
                              title: Optional[str] = None):
    """Per-frame latency of several models on the same stream: histogram (log x) and ECDF.

    Args:
        per_model_ms: model name -> per-frame milliseconds.
        budget_ms: a frame budget to draw (default 33.3 ms, i.e. 30 frames per second).

    Returns:
        the matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    df = pd.concat([pd.DataFrame({"model": k, "ms": np.asarray(v)}) for k, v in per_model_ms.items()],
                   ignore_index=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    sns.histplot(data=df, x="ms", hue="model", bins=40, log_scale=True, element="step", ax=axes[0])
    sns.ecdfplot(data=df, x="ms", hue="model", log_scale=True, ax=axes[1])
    for ax in axes:
        if budget_ms:
            ax.axvline(budget_ms, color="red", ls="--", lw=1)
        ax.set_xlabel("per-frame latency (ms, log scale)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_title("distribution")
    axes[1].set_title("cumulative (red: 30 fps budget)" if budget_ms else "cumulative")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
