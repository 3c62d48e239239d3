"""Neighborhood Attention (NA), its dilated form (DiNA), SASA for comparison, and a small NAT.

Sources:
    Hassani, Walton, Li, Li, Shi 2023, "Neighborhood Attention Transformer", CVPR 2023,
    arXiv:2204.07143. Sec. 3.1 defines NA (Eq. 2-4: each query attends to its k x k nearest
    neighbours; at the borders the window is shifted inward so every query sees exactly k x k keys;
    Eq. 4 adds the relative position bias B(i, j)); Sec. 3.2 and Fig. 4 the architecture (an
    overlapping tokenizer of two 3x3 stride-2 convolutions, NA blocks, 3x3 stride-2 convolutional
    downsamplers, average pooling).
    Hassani, Shi 2022, "Dilated Neighborhood Attention Transformer", arXiv:2209.15001, Sec. 3.2
    (DiNA: the neighbourhood of a query is taken inside its dilation group, i.e. every ``dilation``-th
    token along each axis, and is shifted inward at the group's borders exactly like NA).
    Ramachandran et al. 2019, "Stand-Alone Self-Attention in Vision Models", arXiv:1906.05909, Sec. 2.2
    (SASA: a k x k window centred on the query with zero padding, so border queries see fewer real
    pixels; NAT Sec. 3.1 contrasts it with NA).

The window rule, one axis of length L, kernel k, dilation d (both axes are independent, so a 2-D
neighbourhood is the cartesian product of a row window and a column window)::

    g     = i mod d                   dilation group of token i
    j     = i div d                   position of i inside its group
    L_g   = ceil((L - g) / d)         length of the group
    start = clamp(j - k//2, 0, L_g - k)        NA: the window slides inward at the borders
    keys  = g + d * (start + t),  t = 0..k-1

    SASA: keys = i + d * (t - k//2); keys outside [0, L) are zero padding.

This file is the definition a student reads beside the paper: the window rule
(:func:`axis_window`, :func:`window_indices`), the computation by its definition
(:func:`gather_attention`: the k*k key and value vectors of every query are gathered with
``index_select``, memory ``O(N k^2 d)``, linear in the number of tokens N, the N x N matrix never
built; autograd gives the backward pass, so it trains on CPU, where natten 0.21.7 has none) and
the modules (:class:`NeighborhoodAttention2D`, :class:`NATBlock`, :class:`NAT`). The fast paths
that compute the same numbers live in :mod:`survey_lib.models.nat_fast`: the tiled kernel (the
default of the modules) and the dispatch to natten (:func:`na2d`).

Deviations from the paper:
    * the training presets (``survey_lib.recipes.nat``) are CPU-sized: 2 levels instead of 4,
      widths 16-96 instead of 64-512; dilations follow DiNAT's alternation where the grid allows it.
    * the tokenizer has no activation between its two convolutions and a LayerNorm after them, as
      the paper's Fig. 4 describes it.
    * when an input is smaller than the neighbourhood (e.g. a DINO local crop), the module shrinks
      the window to what fits (first the dilation, then the kernel, up to the whole axis, i.e. global
      attention along that axis, which is what NA tends to as the window grows, NAT Sec. 3.1).
      The functions :func:`neighborhood_attention_2d` and :func:`na2d` raise ValueError instead.
"""

from __future__ import annotations

import functools
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Attention, AttentionLayout, DropPath, LayerScale, Mlp, to_2tuple
from .nat_fast import HAS_NATTEN, natten_can_run, natten_na2d, natten_refusal, tiled_neighborhood_attention

__all__ = [
    "HAS_NATTEN",
    "axis_window",
    "window_indices",
    "neighborhood_mask",
    "gather_attention",
    "neighborhood_attention_2d",
    "sasa_attention_2d",
    "na2d",
    "attention_to_dense",
    "NeighborhoodAttention2D",
    "NATBlock",
    "ConvTokenizer",
    "ConvDownsampler",
    "NAT",
]

IntOrPair = Union[int, Tuple[int, int]]


# ---------------------------------------------------------------------------------------------
# Which keys does each query see? (the window rule)
# ---------------------------------------------------------------------------------------------
def axis_window(L: int, k: int, d: int, kind: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Key positions along one axis for every query, and their relative-bias indices.

    Returns ``keys`` (L, k) int64 (SASA: -1 marks padding) and ``rel`` (L, k) int64 in [0, 2k-2]:
    ``(key - query) / d + k - 1``, the index into a bias table of length 2k - 1.
    """
    i = torch.arange(L)
    t = torch.arange(k)
    if kind == "na":
        g, j = i % d, i // d  # dilation group, position inside the group
        group_len = (L - g + d - 1) // d
        start = torch.minimum((j - k // 2).clamp(min=0), group_len - k)  # shifted inward at borders
        keys = g[:, None] + d * (start[:, None] + t[None, :])  # (L, k)
    elif kind == "sasa":
        keys = i[:, None] + d * (t[None, :] - k // 2)  # (L, k), centred, may leave the grid
    else:
        raise ValueError(f"kind must be 'na' or 'sasa', got {kind!r}")
    rel = torch.div(keys - i[:, None], d, rounding_mode="floor") + k - 1  # (L, k)
    if kind == "sasa":
        keys = torch.where((keys >= 0) & (keys < L), keys, torch.full_like(keys, -1))
    return keys, rel


@functools.lru_cache(maxsize=64)
def _window_index_cpu(H: int, W: int, kernel_h: int, kernel_w: int, dilation_h: int, dilation_w: int, kind: str):
    rows, rel_h = axis_window(H, kernel_h, dilation_h, kind)  # (H, kernel_h)
    cols, rel_w = axis_window(W, kernel_w, dilation_w, kind)  # (W, kernel_w)
    idx = rows[:, None, :, None] * W + cols[None, :, None, :]  # (H, W, kernel_h, kernel_w) flat key index
    if kind == "sasa":  # padding -> index N, a zero token appended after the grid
        pad = (rows[:, None, :, None] < 0) | (cols[None, :, None, :] < 0)
        idx = torch.where(pad, torch.full_like(idx, H * W), idx)
    return idx.reshape(H * W, kernel_h * kernel_w), rel_h, rel_w


def window_indices(
    H: int, W: int, kernel_size: IntOrPair, dilation: IntOrPair = 1, kind: str = "na", device=None
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat key index of every query's window on an H x W grid (row-major token order).

    Args:
        kind: ``"na"`` (window shifted inward at borders) or ``"sasa"`` (centred, zero padded).

    Shapes:
        returns ``idx`` (N, kh*kw) int64 with N = H*W (SASA: padding is the index N), and the
        relative-position-bias indices ``rel_h`` (H, kh), ``rel_w`` (W, kw) in [0, 2k-2].
    """
    kernel_h, kernel_w = to_2tuple(kernel_size)
    dilation_h, dilation_w = to_2tuple(dilation)
    idx, rel_h, rel_w = _window_index_cpu(H, W, kernel_h, kernel_w, dilation_h, dilation_w, kind)
    if device is not None:
        idx, rel_h, rel_w = idx.to(device), rel_h.to(device), rel_w.to(device)
    return idx, rel_h, rel_w


def neighborhood_mask(H: int, W: int, kernel_size: IntOrPair, dilation: IntOrPair = 1, kind: str = "na") -> torch.Tensor:
    """Dense boolean mask of the neighbourhoods: ``mask[n, m]`` is True if query n attends to key m.

    For teaching and testing only (it is N x N). SASA's padding positions are not grid tokens and
    do not appear, so a SASA corner row has fewer than k*k True entries.

    Shapes: returns (N, N) bool, N = H*W.
    """
    idx, _, _ = window_indices(H, W, kernel_size, dilation, kind)
    N = H * W
    mask = torch.zeros(N, N + 1, dtype=torch.bool)
    mask.scatter_(1, idx, True)
    return mask[:, :N]


# ---------------------------------------------------------------------------------------------
# Checks shared by the functional forms
# ---------------------------------------------------------------------------------------------
def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.ndim != 5:
        raise ValueError(
            f"expected q, k, v of shape (B, H, W, heads, head_dim) (natten's layout), got q {tuple(q.shape)}; "
            "reshape a token sequence (B, N, C) with x.view(B, H, W, heads, C // heads)"
        )
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must have the same shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")


def _check_window(grid: Tuple[int, int], kernel: Tuple[int, int], dilation: Tuple[int, int], kind: str = "na") -> None:
    for axis, G, k, d in (("height", grid[0], kernel[0], dilation[0]), ("width", grid[1], kernel[1], dilation[1])):
        if k < 1:
            raise ValueError(f"kernel_size {k} must be a positive odd number such as 3, 5 or 7")
        if k % 2 == 0:
            raise ValueError(
                f"kernel_size {k} is even; the window is centred on the query, so use an odd kernel_size "
                f"such as {k - 1} or {k + 1}"
            )
        if d < 1:
            raise ValueError(f"dilation must be >= 1, got {d}; use dilation=1 for plain neighbourhood attention")
        if kind != "na":
            continue
        if k > G:
            fit = G if G % 2 else G - 1
            raise ValueError(
                f"kernel_size {k} is larger than the token grid {axis} {G} (grid {grid[0]}x{grid[1]}); "
                f"use kernel_size <= {fit} (the largest odd size that fits) or a larger input"
            )
        if k * d > G:
            raise ValueError(
                f"dilation {d} x kernel_size {k} = {k * d} exceeds the token grid {axis} {G} "
                f"(grid {grid[0]}x{grid[1]}); use dilation <= {G // k} with this kernel_size, or a smaller kernel_size"
            )


def _check_rpb(rpb: Optional[torch.Tensor], heads: int, kernel: Tuple[int, int]) -> None:
    if rpb is None:
        return
    want = (heads, 2 * kernel[0] - 1, 2 * kernel[1] - 1)
    if tuple(rpb.shape) != want:
        raise ValueError(f"rpb must have shape (heads, 2k-1, 2k-1) = {want}, got {tuple(rpb.shape)}")


# ---------------------------------------------------------------------------------------------
# The computation by its definition: gather the window, attend, weight the values
# ---------------------------------------------------------------------------------------------
def gather_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel: Tuple[int, int],
    dilation: Tuple[int, int],
    rpb: Optional[torch.Tensor],
    scale: Optional[float],
    return_attention: bool,
    kind: str = "na",
    sasa_padding: str = "zeros",
):
    B, H, W, h, head_dim = q.shape
    N, kk = H * W, kernel[0] * kernel[1]
    scale = head_dim**-0.5 if scale is None else scale
    idx, rel_h, rel_w = window_indices(H, W, kernel, dilation, kind, device=q.device)  # (N, kk), (H, kh), (W, kw)
    if rpb is not None:
        # rpb's own kernel may exceed ``kernel`` when the module shrank the window to a small grid.
        rh, rw = (rpb.shape[1] + 1) // 2 - kernel[0], (rpb.shape[2] + 1) // 2 - kernel[1]
        rel_h, rel_w = rel_h + rh, rel_w + rw

    q_flat = (q * scale).permute(0, 3, 1, 2, 4).reshape(B, h, N, 1, head_dim)  # (B, h, N, 1, d_head)
    k_flat = k.permute(0, 3, 1, 2, 4).reshape(B, h, N, head_dim)  # (B, h, N, d_head)
    v_flat = v.permute(0, 3, 1, 2, 4).reshape(B, h, N, head_dim)  # (B, h, N, d_head)
    if kind == "sasa":  # token N is the zero padding
        k_flat = F.pad(k_flat, (0, 0, 0, 1))  # (B, h, N + 1, d_head)
        v_flat = F.pad(v_flat, (0, 0, 0, 1))  # (B, h, N + 1, d_head)
    flat = idx.reshape(-1)  # (N * kk,)
    k_win = k_flat.index_select(2, flat).view(B, h, N, kk, head_dim)  # (B, h, N, kk, d_head): keys of each window
    v_win = v_flat.index_select(2, flat).view(B, h, N, kk, head_dim)  # (B, h, N, kk, d_head)

    logits = q_flat @ k_win.transpose(-1, -2)  # (B, h, N, 1, kk)
    if rpb is not None:
        bias = rpb[:, rel_h[:, None, :, None], rel_w[None, :, None, :]]  # (h, H, W, kh, kw): B(i, j), NAT Eq. 4
        logits = logits + bias.reshape(h, N, 1, kk)  # (B, h, N, 1, kk)
    if kind == "sasa" and sasa_padding == "mask":
        logits = logits.masked_fill((idx == N).view(1, 1, N, 1, kk), float("-inf"))
    attn = logits.softmax(dim=-1)  # (B, h, N, 1, kk), each row sums to 1 over the window
    out = attn @ v_win  # (B, h, N, 1, d_head)
    out = out.view(B, h, H, W, head_dim).permute(0, 2, 3, 1, 4)  # (B, H, W, h, d_head)
    if return_attention:
        weights = attn.view(B, h, H, W, kk).permute(0, 2, 3, 1, 4)  # (B, H, W, h, kk)
        return out, weights
    return out


def _neighborhood_attention(q, k, v, kernel, dilation, rpb, scale, return_attention, method: str = "tiled"):
    """NA without argument checks: the definition (``"gather"``) or the tiled fast path (``"tiled"``,
    :func:`survey_lib.models.nat_fast.tiled_neighborhood_attention`), which gives the same numbers."""
    if method == "gather":
        return gather_attention(q, k, v, kernel, dilation, rpb, scale, return_attention, "na")
    if method != "tiled":
        raise ValueError(f"method must be 'tiled' or 'gather', got {method!r}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return tiled_neighborhood_attention(q, k, v, kernel, dilation, rpb, scale, return_attention)


# ---------------------------------------------------------------------------------------------
# Public functional forms
# ---------------------------------------------------------------------------------------------
def neighborhood_attention_2d(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: IntOrPair,
    dilation: IntOrPair = 1,
    rpb: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    return_attention: bool = False,
    method: str = "tiled",
):
    """2-D (dilated) neighbourhood attention in pure PyTorch (NAT Eq. 2-4; DiNAT Sec. 3.2).

    Query (i, j) attends to exactly ``kernel_size x kernel_size`` keys: its nearest neighbours inside
    its dilation group, with the window shifted inward at the borders (not zero padded). With
    ``kernel_size`` equal to an odd grid side (and dilation 1) this is full self-attention.
    Forward and backward run through autograd on any device; memory is linear in the tokens.

    Args:
        q, k, v: natten's layout. ``q`` is not pre-scaled.
        kernel_size: odd int or (kh, kw) pair.
        dilation: int or pair; ``kernel_size * dilation`` must fit in the grid.
        rpb: optional relative position bias (NAT Eq. 4), added to the scaled logits:
            ``rpb[head, (key_row - query_row) / dilation + kh - 1, (key_col - query_col) / dilation + kw - 1]``.
        scale: logit scale; default ``head_dim ** -0.5``.
        return_attention: also return the post-softmax weights over each window.
        method: ``"gather"`` is the definition, step by step (:func:`gather_attention`); ``"tiled"``
            (default, the same numbers to float rounding) is the fast path of
            :func:`survey_lib.models.nat_fast.tiled_neighborhood_attention`.

    Shapes:
        q, k, v: (B, H, W, heads, head_dim) -> out (B, H, W, heads, head_dim).
        rpb: (heads, 2*kh - 1, 2*kw - 1).
        attention (if asked): (B, H, W, heads, kh*kw); window entry ``a * kw + b`` is the key at row
        ``window_indices(...)[0]`` order (row offset a, column offset b). See :func:`attention_to_dense`.

    Raises:
        ValueError: q, k, v not 5-D or of different shapes; kernel size even or < 1; kernel larger
            than the grid; dilation * kernel larger than the grid; dilation < 1; rpb of wrong shape.
    """
    _check_qkv(q, k, v)
    kernel, dil = to_2tuple(kernel_size), to_2tuple(dilation)
    _check_window((q.shape[1], q.shape[2]), kernel, dil, "na")
    _check_rpb(rpb, q.shape[3], kernel)
    return _neighborhood_attention(q, k, v, kernel, dil, rpb, scale, return_attention, method)


def sasa_attention_2d(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: IntOrPair,
    dilation: IntOrPair = 1,
    rpb: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    return_attention: bool = False,
    padding: str = "zeros",
):
    """SASA-style sliding-window attention (Ramachandran et al. 2019, Sec. 2.2), for comparison with NA.

    The window is always centred on the query; positions outside the grid are padding. With
    ``padding="zeros"`` (the paper's zero padding) a padded key is a zero vector: its logit is 0
    (plus the bias) and it contributes a zero value, so border queries spend attention on nothing;
    with ``padding="mask"`` padded keys are excluded and border queries simply see fewer real keys.
    Either way a corner query sees only ``(k//2 + 1)^2`` real pixels (NAT Sec. 3.1, Fig. 3).

    Shapes: as :func:`neighborhood_attention_2d`.

    Raises:
        ValueError: bad shapes, even kernel size, dilation < 1, rpb of wrong shape, unknown padding.
    """
    if padding not in ("zeros", "mask"):
        raise ValueError(f"padding must be 'zeros' (SASA) or 'mask', got {padding!r}")
    _check_qkv(q, k, v)
    kernel, dil = to_2tuple(kernel_size), to_2tuple(dilation)
    _check_window((q.shape[1], q.shape[2]), kernel, dil, "sasa")
    _check_rpb(rpb, q.shape[3], kernel)
    return gather_attention(q, k, v, kernel, dil, rpb, scale, return_attention, "sasa", padding)


def na2d(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: IntOrPair,
    dilation: IntOrPair = 1,
    rpb: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Neighbourhood attention through natten where natten can run it, else :func:`neighborhood_attention_2d`.

    Args:
        backend: ``"auto"``: natten where :func:`survey_lib.models.nat_fast.natten_can_run` says it
            can (CUDA forward and backward; CPU forward only, a power-of-two head_dim in [8, 512];
            never with ``rpb``), ours otherwise, so training on CPU always runs ours. On CPU natten
            0.21.7 is 4-60x slower than ours. ``"torch"``: always ours. ``"natten"``: natten or an error.

    Shapes: q, k, v (B, H, W, heads, head_dim) -> (B, H, W, heads, head_dim).

    Raises:
        ValueError: everything :func:`neighborhood_attention_2d` raises; an unknown backend; or
            ``backend="natten"`` where natten cannot run (not installed, rpb given, CPU with grad).
    """
    if backend not in ("auto", "torch", "natten"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'natten', got {backend!r}")
    _check_qkv(q, k, v)
    kernel, dil = to_2tuple(kernel_size), to_2tuple(dilation)
    _check_window((q.shape[1], q.shape[2]), kernel, dil, "na")
    _check_rpb(rpb, q.shape[3], kernel)
    use_natten = backend != "torch" and natten_can_run(q, k, v, rpb)  # "auto" or "natten"
    if backend == "natten" and not use_natten:
        raise ValueError(f"backend='natten' cannot run this call: {natten_refusal(q, rpb)}; use backend='torch' or 'auto'")
    if use_natten:
        return natten_na2d(q, k, v, kernel, dil, scale)
    return _neighborhood_attention(q, k, v, kernel, dil, rpb, scale, False)


def attention_to_dense(
    attn: torch.Tensor, kernel_size: IntOrPair, dilation: IntOrPair = 1, kind: str = "na"
) -> torch.Tensor:
    """Scatter window weights into a dense N x N matrix (zeros outside each window), for figures and tests.

    Shapes: attn (B, H, W, heads, kh*kw) -> (B, heads, N, N), N = H*W; row n is what query n attends to.
    SASA's padding columns are dropped, so a SASA row with zero padding may sum to less than 1.
    """
    B, H, W, h, kk = attn.shape
    N = H * W
    idx, _, _ = window_indices(H, W, kernel_size, dilation, kind, device=attn.device)  # (N, kk)
    a = attn.permute(0, 3, 1, 2, 4).reshape(B, h, N, kk)  # (B, h, N, kk)
    dense = attn.new_zeros(B, h, N, N + 1)
    dense.scatter_(-1, idx.expand(B, h, N, kk), a)
    return dense[..., :N]  # (B, h, N, N)


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------
def _fit_axis(G: int, k: int, d: int) -> Tuple[int, int]:
    """Largest window of one axis that fits a grid side G: shrink dilation first, then the kernel."""
    if k * d <= G:
        return k, d
    if k <= G:
        return k, max(1, G // k)
    return G, 1  # the whole axis: global attention along it


class NeighborhoodAttention2D(Attention):
    """Multi-head neighbourhood attention with NAT's relative position bias (NAT Sec. 3.1, Eq. 4).

    It is :class:`survey_lib.layers.Attention` (the same ``qkv``, heads, ``proj``, dropouts) on
    channels-last tokens, where each query attends only to its ``kernel_size`` x ``kernel_size``
    neighbourhood (:func:`neighborhood_attention_2d`) plus the learned bias ``rpb``.

    Args:
        dim: C, token width.  num_heads: heads (``dim`` divisible by it).
        kernel_size: odd window side k.  dilation: DiNA dilation (DiNAT Sec. 3.2).
        qkv_bias: bias on the joint Q, K, V projection.
        rel_pos_bias: learn ``rpb`` of shape (heads, 2k-1, 2k-1) (NAT Eq. 4); natten's modules no
            longer have it, so with it on this module always runs the pure-PyTorch path (without
            it, ``backend="auto"`` runs natten where :func:`na2d` can).
        proj_drop: dropout after the output projection.
        backend: passed to :func:`na2d` (``"auto"``, ``"torch"``, ``"natten"``).

    Shapes:
        x: (B, H, W, C) channels-last tokens -> (B, H, W, C); with ``return_attention`` also the
        weights (B, H, W, heads, kh*kw). A grid smaller than ``kernel_size * dilation`` shrinks the
        window to fit (see the module docstring); the weights then have that window's size.

    Raises:
        ValueError: ``dim`` not divisible by ``num_heads``; even or non-positive kernel; dilation < 1.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: int = 7,
        dilation: int = 1,
        qkv_bias: bool = True,
        rel_pos_bias: bool = True,
        proj_drop: float = 0.0,
        backend: str = "auto",
    ) -> None:
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size {kernel_size} must be odd and positive, e.g. 3, 5 or 7")
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}")
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, proj_drop=proj_drop)  # qkv, heads, proj
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.backend = backend
        self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1)) if rel_pos_bias else None
        if self.rpb is not None:
            nn.init.trunc_normal_(self.rpb, std=0.02)

    def window(self, H: int, W: int) -> Tuple[Tuple[int, int], Tuple[int, int]]:
        """The (kernel, dilation) pairs used on an H x W grid (shrunk if the grid is too small)."""
        (kernel_h, dilation_h) = _fit_axis(H, self.kernel_size, self.dilation)
        (kernel_w, dilation_w) = _fit_axis(W, self.kernel_size, self.dilation)
        return (kernel_h, kernel_w), (dilation_h, dilation_w)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        if x.ndim != 4:
            raise ValueError(f"NeighborhoodAttention2D expects channels-last tokens (B, H, W, C), got {tuple(x.shape)}")
        B, H, W, C = x.shape
        qkv = self.qkv(x).reshape(B, H, W, 3, self.num_heads, self.head_dim)  # (B, H, W, 3, h, d_head)
        q, k, v = qkv.unbind(3)  # 3 x (B, H, W, h, d_head)
        kernel, dilation = self.window(H, W)
        exact = kernel == (self.kernel_size,) * 2 and dilation == (self.dilation,) * 2
        if return_attention or not exact or self.backend == "torch":
            res = _neighborhood_attention(q, k, v, kernel, dilation, self.rpb, self.scale, return_attention)
        else:
            res = na2d(q, k, v, kernel, dilation, rpb=self.rpb, scale=self.scale, backend=self.backend)
        out, attn = res if return_attention else (res, None)
        out = out.reshape(B, H, W, C)  # (B, H, W, C): heads concatenated
        out = self.proj_drop(self.proj(out))
        return (out, attn) if return_attention else out

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, kernel_size={self.kernel_size}, dilation={self.dilation}, rpb={self.rpb is not None}"


class NATBlock(nn.Module):
    """Pre-norm NA transformer block: ``x + NA(LN(x))`` then ``x + MLP(LN(x))`` (NAT Sec. 3.2).

    Args:
        dim, num_heads, kernel_size, dilation, qkv_bias, rel_pos_bias, backend: see
            :class:`NeighborhoodAttention2D`.  mlp_ratio: MLP width / dim.  drop_path: stochastic
            depth.  init_values: LayerScale init value, or None (NAT uses it only for its largest models;
            natten calls it ``layer_scale``, timm's ViT ``init_values``).

    Shapes: x (B, H, W, C) -> (B, H, W, C); with ``return_attention`` also (B, H, W, heads, kh*kw).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: int = 7,
        dilation: int = 1,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        rel_pos_bias: bool = True,
        drop_path: float = 0.0,
        init_values: Optional[float] = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = NeighborhoodAttention2D(dim, num_heads, kernel_size, dilation, qkv_bias, rel_pos_bias, backend=backend)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        if return_attention:
            y, attn = self.attn(self.norm1(x), return_attention=True)
        else:
            y = self.attn(self.norm1(x))
        x = x + self.drop_path1(self.ls1(y))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return (x, attn) if return_attention else x


class ConvTokenizer(nn.Module):
    """NAT's overlapping tokenizer: two 3x3 stride-2 convolutions (C -> D/2 -> D), then LayerNorm.

    Shapes: (B, C, H, W) -> (B, ceil(H/4), ceil(W/4), D) channels last.
    """

    def __init__(self, in_chans: int = 3, embed_dim: int = 64) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim // 2, kernel_size=3, stride=2, padding=1),
            nn.Conv2d(embed_dim // 2, embed_dim, kernel_size=3, stride=2, padding=1),
        )
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"ConvTokenizer expects (B, {self.in_chans}, H, W) images, got {tuple(x.shape)}")
        x = self.proj(x).permute(0, 2, 3, 1)  # (B, H/4, W/4, D)
        return self.norm(x)


class ConvDownsampler(nn.Module):
    """NAT's downsampler between levels: 3x3 stride-2 convolution doubling the width, then LayerNorm.

    Shapes: (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, H/2, W/2, 2C)
        return self.norm(x)


def _per_level(value, levels: int, name: str) -> list:
    if isinstance(value, (int, float)):
        return [value] * levels
    value = list(value)
    if len(value) != levels:
        raise ValueError(f"{name} has {len(value)} entries but there are {levels} levels (len(depths))")
    return value


class NAT(nn.Module):
    """A small Neighborhood Attention Transformer (NAT Sec. 3.2, Fig. 4) with DiNAT dilations.

    Tokenizer (/4) -> level 1 (D) -> downsample (/2, 2D) -> level 2 (2D) -> ... -> LayerNorm ->
    average pool -> linear head.

    Args:
        img_size: nominal input side (used to check that every level's window fits).
        in_chans: C.  num_classes: K (0: no head, ``forward`` returns pooled features).
        embed_dim: width D of level 1; level l has ``D * 2**l``.
        depths: blocks per level.  num_heads: heads per level (int or per level).
        kernel_size: odd window side (int or per level).
        dilations: None (all 1) or per level a sequence of per-block dilations, e.g.
            ``((1, 2), (1, 1))`` (DiNAT alternates NA and DiNA blocks).
        mlp_ratio, qkv_bias, rel_pos_bias: per block.  drop_path_rate: stochastic depth, linear over
        all blocks.  init_values: LayerScale init or None.  backend: see :func:`na2d`.

    Shapes:
        x: (B, C, H, W) -> logits (B, K).  ``forward_features``: (B, H/2^(L+1), W/2^(L+1), D_last)
        normalised.  ``embed``: (B, D_last) pooled feature (``num_features`` = D_last).
        ``get_attention_maps``: list (one per block) of (B, H_l, W_l, heads, k*k) window weights.

    Raises:
        ValueError: mismatched per-level lists; widths not divisible by heads; an even kernel; a
            kernel or ``kernel * dilation`` that does not fit a level's grid at ``img_size``.
    """

    def __init__(
        self,
        img_size: int = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 64,
        depths: Sequence[int] = (3, 4, 6, 5),
        num_heads: Union[int, Sequence[int]] = (2, 4, 8, 16),
        kernel_size: Union[int, Sequence[int]] = 7,
        dilations: Optional[Sequence[Sequence[int]]] = None,
        mlp_ratio: float = 3.0,
        qkv_bias: bool = True,
        rel_pos_bias: bool = True,
        drop_path_rate: float = 0.0,
        init_values: Optional[float] = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        levels = len(depths)
        heads = _per_level(num_heads, levels, "num_heads")
        kernels = _per_level(kernel_size, levels, "kernel_size")
        dils = [[1] * d for d in depths] if dilations is None else [list(d) for d in _per_level(dilations, levels, "dilations")]
        for lvl, (d, dl) in enumerate(zip(depths, dils)):
            if len(dl) != d:
                raise ValueError(f"dilations of level {lvl} has {len(dl)} entries but depths[{lvl}] = {d}")
        self.config = dict(img_size=img_size, in_chans=in_chans, num_classes=num_classes, embed_dim=embed_dim,
                           depths=tuple(depths), num_heads=tuple(heads), kernel_size=tuple(kernels),
                           dilations=tuple(tuple(d) for d in dils), mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                           rel_pos_bias=rel_pos_bias, init_values=init_values)
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        dims = [embed_dim * 2**i for i in range(levels)]
        self.num_features = dims[-1]

        # Check every level's window against its grid at the nominal size (clear error, not a shrink).
        g = math.ceil(math.ceil(img_size / 2) / 2)
        for lvl in range(levels):
            for dil in dils[lvl]:
                _check_window((g, g), (kernels[lvl], kernels[lvl]), (dil, dil), "na")
            g = math.ceil(g / 2)

        self.patch_embed = ConvTokenizer(in_chans, embed_dim)
        dpr = [r.item() for r in torch.linspace(0, drop_path_rate, sum(depths))]
        self.levels = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        b = 0
        for lvl in range(levels):
            self.levels.append(nn.ModuleList(
                NATBlock(dims[lvl], heads[lvl], kernels[lvl], dils[lvl][i], mlp_ratio, qkv_bias, rel_pos_bias,
                         drop_path=dpr[b + i], init_values=init_values, backend=backend)
                for i in range(depths[lvl])
            ))
            b += depths[lvl]
            self.downsamples.append(ConvDownsampler(dims[lvl]) if lvl < levels - 1 else nn.Identity())
        self.norm = nn.LayerNorm(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """The relative position biases are not decayed (as in NAT and Swin)."""
        return {"rpb"}

    def _run(self, x: torch.Tensor, return_attention: bool):
        x = self.patch_embed(x)  # (B, H/4, W/4, D)
        maps = []
        for blocks, down in zip(self.levels, self.downsamples):
            for blk in blocks:
                if return_attention:
                    x, a = blk(x, return_attention=True)
                    maps.append(a)
                else:
                    x = blk(x)
            x = down(x)  # (B, H_l/2, W_l/2, 2 D_l) except after the last level
        return self.norm(x), maps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: (B, C, H, W) -> (B, H_L, W_L, D_last), after the final LayerNorm."""
        return self._run(x, False)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Average-pool the token map and classify. Shapes: (B, H_L, W_L, D_last) -> (B, K)."""
        x = x.mean(dim=(1, 2))  # (B, D_last)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled feature for probes and DINO heads. Shapes: (B, C, H, W) -> (B, num_features)."""
        return self.forward_head(self.forward_features(x), pre_logits=True)

    @torch.no_grad()
    def get_attention_maps(self, x: torch.Tensor, dense: bool = False) -> List[torch.Tensor]:
        """Attention weights of every block (no hooks).

        Args:
            dense: False: each block's window weights (B, H_l, W_l, heads, k*k). True: the
                attention-map contract of every model (:class:`survey_lib.layers.AttentionLayout`):
                one (B, heads, N, N) map per block over its level's grid, zero outside each
                neighbourhood (:func:`attention_to_dense` with the window the block really used).

        Shapes: (B, C, H, W) -> list of (B, H_l, W_l, heads, k*k), or (B, heads, N_l, N_l) with ``dense``.
        """
        maps = self._run(x, True)[1]
        if dense:
            blocks = [blk for level in self.levels for blk in level]
            maps = [attention_to_dense(a, *blk.attn.window(a.shape[1], a.shape[2])) for a, blk in zip(maps, blocks)]
        return maps

    def attention_layout(self, img_size: Optional[IntOrPair] = None) -> List[AttentionLayout]:
        """One :class:`~survey_lib.layers.AttentionLayout` per block for ``img_size`` (default the
        model's): its level, its token grid (the tokenizer halves the image twice, rounding up, each
        downsampler once more), no prefix token."""
        H, W = to_2tuple(img_size if img_size is not None else self.config["img_size"])
        grid = [math.ceil(math.ceil(H / 2) / 2), math.ceil(math.ceil(W / 2) / 2)]  # ConvTokenizer: two stride-2 convs
        out = []
        for level, blocks in enumerate(self.levels):
            out += [AttentionLayout(level, (grid[0], grid[1]), 0) for _ in blocks]
            grid = [math.ceil(g / 2) for g in grid]  # ConvDownsampler: one stride-2 convolution
        return out
