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

Implementation: the k*k key and value vectors of every query are gathered with ``index_select``
(memory ``O(N k^2 d)``, linear in the number of tokens N; the N x N matrix is never built), then two
small batched matmuls give the logits and the output. Autograd provides the backward pass, so it
trains on CPU, where natten 0.21.7 has no backward.

natten: :func:`na2d` runs ``natten.functional.na2d`` wherever natten can run the call: on CUDA
forward and backward, on CPU forward only (no gradient needed), in both cases without a relative
position bias (natten has none) and, on CPU, with a head_dim that is a power of two in [8, 512]
(its flex backend's limit); everywhere else it runs the pure-PyTorch path. Caveat, measured with
``benchmarks/bench_nat.py``: natten 0.21.7 on CPU runs ``flex_attention`` without ``torch.compile``,
which (its own warning says) materialises the full N x N score matrix, so there it is 4-60x slower
than the pure-PyTorch path and quadratic in memory; pass ``backend="torch"`` for fast CPU inference.
natten is optional: this module imports without it.

Deviations from the paper:
    * CPU-sized presets (:data:`NAT_CONFIGS`) for 32 x 32 digits: 2 levels (8 x 8 and 4 x 4 token
      grids) instead of 4, widths 16-96 instead of 64-512, kernel 3 instead of 7; dilations follow
      DiNAT's alternation where the grid allows it.
    * the tokenizer has no activation between its two convolutions and a LayerNorm after them, as
      the paper's Fig. 4 describes it.
    * when an input is smaller than the neighbourhood (e.g. a DINO local crop), the module shrinks
      the window to what fits (first the dilation, then the kernel, up to the whole axis, i.e. global
      attention along that axis, which is what NA tends to as the window grows, NAT Sec. 3.1).
      The functions :func:`neighborhood_attention_2d` and :func:`na2d` raise ValueError instead.
"""
from __future__ import annotations

import functools
import importlib.util
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..layers import DropPath, LayerScale, Mlp, to_2tuple

__all__ = [
    "HAS_NATTEN",
    "window_indices",
    "neighborhood_mask",
    "neighborhood_attention_2d",
    "sasa_attention_2d",
    "na2d",
    "attention_to_dense",
    "NeighborhoodAttention2D",
    "NATBlock",
    "ConvTokenizer",
    "ConvDownsampler",
    "NAT",
    "NAT_CONFIGS",
    "nat_for_profile",
    "NAT_TRAIN",
    "train_nat",
    "plot_neighborhoods",
    "plot_neighborhood_attention",
]

#: True if natten is installed. natten is optional (used to check our implementation and to run
#: fast on CUDA) and imported only when a call needs it: importing it costs about a quarter of
#: ``import torch``.
HAS_NATTEN = importlib.util.find_spec("natten") is not None


def _natten():
    import natten.functional

    return natten.functional

IntOrPair = Union[int, Tuple[int, int]]


# ---------------------------------------------------------------------------------------------
# Which keys does each query see?
# ---------------------------------------------------------------------------------------------
def _axis_window(L: int, k: int, d: int, kind: str) -> Tuple[torch.Tensor, torch.Tensor]:
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
def _window_index_cpu(H: int, W: int, kh: int, kw: int, dh: int, dw: int, kind: str):
    rows, rel_h = _axis_window(H, kh, dh, kind)  # (H, kh)
    cols, rel_w = _axis_window(W, kw, dw, kind)  # (W, kw)
    idx = rows[:, None, :, None] * W + cols[None, :, None, :]  # (H, W, kh, kw) flat key index
    if kind == "sasa":  # padding -> index N, a zero token appended after the grid
        pad = (rows[:, None, :, None] < 0) | (cols[None, :, None, :] < 0)
        idx = torch.where(pad, torch.full_like(idx, H * W), idx)
    return idx.reshape(H * W, kh * kw), rel_h, rel_w


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
    kh, kw = to_2tuple(kernel_size)
    dh, dw = to_2tuple(dilation)
    idx, rel_h, rel_w = _window_index_cpu(H, W, kh, kw, dh, dw, kind)
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
# The computation (no checks): gather the window, attend, weight the values
# ---------------------------------------------------------------------------------------------
def _windowed_attention(
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
    B, H, W, h, dh = q.shape
    N, kk = H * W, kernel[0] * kernel[1]
    scale = dh**-0.5 if scale is None else scale
    idx, rel_h, rel_w = window_indices(H, W, kernel, dilation, kind, device=q.device)  # (N, kk), (H, kh), (W, kw)
    if rpb is not None:
        # rpb's own kernel may exceed ``kernel`` when the module shrank the window to a small grid.
        rh, rw = (rpb.shape[1] + 1) // 2 - kernel[0], (rpb.shape[2] + 1) // 2 - kernel[1]
        rel_h, rel_w = rel_h + rh, rel_w + rw

    qh = (q * scale).permute(0, 3, 1, 2, 4).reshape(B, h, N, 1, dh)  # (B, h, N, 1, d_head)
    kh_ = k.permute(0, 3, 1, 2, 4).reshape(B, h, N, dh)  # (B, h, N, d_head)
    vh = v.permute(0, 3, 1, 2, 4).reshape(B, h, N, dh)  # (B, h, N, d_head)
    if kind == "sasa":  # token N is the zero padding
        kh_ = F.pad(kh_, (0, 0, 0, 1))  # (B, h, N + 1, d_head)
        vh = F.pad(vh, (0, 0, 0, 1))  # (B, h, N + 1, d_head)
    flat = idx.reshape(-1)  # (N * kk,)
    k_win = kh_.index_select(2, flat).view(B, h, N, kk, dh)  # (B, h, N, kk, d_head): keys of each window
    v_win = vh.index_select(2, flat).view(B, h, N, kk, dh)  # (B, h, N, kk, d_head)

    logits = qh @ k_win.transpose(-1, -2)  # (B, h, N, 1, kk)
    if rpb is not None:
        bias = rpb[:, rel_h[:, None, :, None], rel_w[None, :, None, :]]  # (h, H, W, kh, kw): B(i, j), NAT Eq. 4
        logits = logits + bias.reshape(h, N, 1, kk)  # (B, h, N, 1, kk)
    if kind == "sasa" and sasa_padding == "mask":
        logits = logits.masked_fill((idx == N).view(1, 1, N, 1, kk), float("-inf"))
    attn = logits.softmax(dim=-1)  # (B, h, N, 1, kk), each row sums to 1 over the window
    out = attn @ v_win  # (B, h, N, 1, d_head)
    out = out.view(B, h, H, W, dh).permute(0, 2, 3, 1, 4)  # (B, H, W, h, d_head)
    if return_attention:
        weights = attn.view(B, h, H, W, kk).permute(0, 2, 3, 1, 4)  # (B, H, W, h, kk)
        return out, weights
    return out


# ---------------------------------------------------------------------------------------------
# The same computation, tiled: fast path for NA (big matmuls instead of per-query gathers)
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _axis_tiles(L: int, k: int, t: int, k_rpb: int):
    """Cut one axis into query tiles of t rows and the key region each tile's windows need.

    Because NA windows only slide inward, the windows of t consecutive queries lie inside
    R = t + k - 1 consecutive keys, so a t x t tile of queries needs one R x R region of keys.
    Tile starts are ``min(j * t, L - t)`` (the last tile may overlap its neighbour).

    Returns rows (nt, t), region (nt, R), in_window (nt, t, R) bool, rel (nt, t, R) bias index
    in [0, 2 k_rpb - 2], and for every axis position its tile (L,) and offset in the tile (L,), and
    its window's key positions relative to its tile's region (L, k).
    """
    t = min(t, L)
    R = min(t + k - 1, L)
    nt = -(-L // t)
    r0 = (torch.arange(nt) * t).clamp(max=L - t)  # (nt,) tile starts
    rows = r0[:, None] + torch.arange(t)  # (nt, t) query positions
    start = (rows - k // 2).clamp(min=0).clamp(max=L - k)  # (nt, t) window start of each query
    reg0 = start[:, 0].clamp(max=L - R)  # (nt,) region start
    region = reg0[:, None] + torch.arange(R)  # (nt, R) key positions
    in_window = (region[:, None, :] >= start[:, :, None]) & (region[:, None, :] < start[:, :, None] + k)  # (nt, t, R)
    rel = (region[:, None, :] - rows[:, :, None] + k_rpb - 1).clamp(0, 2 * k_rpb - 2)  # (nt, t, R)
    i = torch.arange(L)
    tile = (i // t).clamp(max=nt - 1)  # (L,)
    offset = i - r0[tile]  # (L,)
    s_i = (i - k // 2).clamp(min=0).clamp(max=L - k)  # (L,)
    win_in_region = s_i[:, None] + torch.arange(k) - reg0[tile][:, None]  # (L, k)
    return rows, region, in_window, rel, tile, offset, win_in_region


@functools.lru_cache(maxsize=64)
def _tile_mask(H: int, W: int, kh: int, kw: int, t: int) -> torch.Tensor:
    """Additive mask (nt_h, nt_w, t_h*t_w, R_h*R_w): 0 inside a query's window, -inf outside."""
    _, _, mh, _, _, _, _ = _axis_tiles(H, kh, t, kh)
    _, _, mw, _, _, _, _ = _axis_tiles(W, kw, t, kw)
    inside = mh[:, None, :, None, :, None] & mw[None, :, None, :, None, :]  # (nt_h, nt_w, t_h, t_w, R_h, R_w)
    nth, ntw, th, tw, Rh, Rw = inside.shape
    inside = inside.reshape(nth, ntw, th * tw, Rh * Rw)  # (nt_h, nt_w, t_h*t_w, R_h*R_w)
    return torch.zeros(inside.shape).masked_fill_(~inside, float("-inf"))


def _tiled_na(q, k, v, kernel, rpb, scale, return_attention, tile: int = 8):
    """NA with dilation 1: attention of every t x t query tile to its key region, masked to each window."""
    B, H, W, h, dh = q.shape
    kh, kw = kernel
    Kh = (rpb.shape[1] + 1) // 2 if rpb is not None else kh  # rpb's own kernel (>= kernel when shrunk)
    Kw = (rpb.shape[2] + 1) // 2 if rpb is not None else kw
    rows_h, reg_h, _, rel_h, tile_h, off_h, win_h = _axis_tiles(H, kh, tile, Kh)
    rows_w, reg_w, _, rel_w, tile_w, off_w, win_w = _axis_tiles(W, kw, tile, Kw)
    nth, th = rows_h.shape
    ntw, tw = rows_w.shape
    Rh, Rw = reg_h.shape[1], reg_w.shape[1]
    dev = q.device

    def tiles(x, r_h, r_w, n_h, n_w):  # (B, H, W, h, d) -> (B, h, nt_h, nt_w, n_h*n_w, d)
        x = x.permute(0, 3, 1, 2, 4)  # (B, h, H, W, d_head)
        x = x[:, :, r_h.to(dev)][:, :, :, :, r_w.to(dev)]  # (B, h, nt_h, n_h, nt_w, n_w, d_head)
        return x.permute(0, 1, 2, 4, 3, 5, 6).reshape(B, h, nth, ntw, n_h * n_w, dh)

    qt = tiles(q * scale, rows_h, rows_w, th, tw)  # (B, h, nt_h, nt_w, t_h*t_w, d_head)
    kt = tiles(k, reg_h, reg_w, Rh, Rw)  # (B, h, nt_h, nt_w, R_h*R_w, d_head)
    vt = tiles(v, reg_h, reg_w, Rh, Rw)  # (B, h, nt_h, nt_w, R_h*R_w, d_head)
    bias = _tile_mask(H, W, kh, kw, tile).to(dev, q.dtype)  # (nt_h, nt_w, t_h*t_w, R_h*R_w)
    if rpb is not None:
        b = rpb[:, rel_h.to(dev)[:, None, :, None, :, None], rel_w.to(dev)[None, :, None, :, None, :]]  # (h, nt_h, nt_w, t_h, t_w, R_h, R_w)
        bias = bias + b.reshape(h, nth, ntw, th * tw, Rh * Rw)  # (h, nt_h, nt_w, t_h*t_w, R_h*R_w)
    logits = (qt @ kt.transpose(-1, -2)).add_(bias)  # (B, h, nt_h, nt_w, t_h*t_w, R_h*R_w)
    attn = logits.softmax(dim=-1)  # zero outside each query's window
    out = (attn @ vt).view(B, h, nth, ntw, th, tw, dh)  # (B, h, nt_h, nt_w, t_h, t_w, d_head)
    ti, tj = tile_h.to(dev)[:, None], tile_w.to(dev)[None, :]  # (H, 1), (1, W)
    oi, oj = off_h.to(dev)[:, None], off_w.to(dev)[None, :]
    out = out[:, :, ti, tj, oi, oj].permute(0, 2, 3, 1, 4)  # (B, H, W, h, d_head)
    if not return_attention:
        return out
    col = win_h.to(dev)[:, None, :, None] * Rw + win_w.to(dev)[None, :, None, :]  # (H, W, kh, kw) region column
    qi = (oi * tw + oj)[..., None]  # (H, W, 1) query index inside its tile
    weights = attn[:, :, ti[..., None], tj[..., None], qi, col.reshape(H, W, kh * kw)]  # (B, h, H, W, kh*kw)
    return out, weights.permute(0, 2, 3, 1, 4)  # (B, H, W, h, kh*kw)


def _neighborhood_attention(q, k, v, kernel, dilation, rpb, scale, return_attention, method: str = "tiled"):
    """NA without argument checks. DiNA = NA with dilation 1 on each dilation group (DiNAT Sec. 3.2)."""
    if method == "gather":
        return _windowed_attention(q, k, v, kernel, dilation, rpb, scale, return_attention, "na")
    if method != "tiled":
        raise ValueError(f"method must be 'tiled' or 'gather', got {method!r}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    dh, dw = dilation
    if (dh, dw) == (1, 1):
        return _tiled_na(q, k, v, kernel, rpb, scale, return_attention)
    out = torch.empty_like(q)
    weights = q.new_empty(*q.shape[:4], kernel[0] * kernel[1]) if return_attention else None
    for gh in range(dh):
        for gw in range(dw):
            sub = (slice(None), slice(gh, None, dh), slice(gw, None, dw))  # group (gh, gw): (B, H_g, W_g, h, d)
            res = _tiled_na(q[sub], k[sub], v[sub], kernel, rpb, scale, return_attention)
            if return_attention:
                out[sub], weights[sub] = res
            else:
                out[sub] = res
    return (out, weights) if return_attention else out


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
        method: ``"gather"`` is the definition, step by step: gather each query's k*k keys and
            values (``index_select``), dot products, softmax, weighted sum; memory ~ N k^2 d.
            ``"tiled"`` (default, same numbers to float rounding) cuts the queries into 8 x 8 tiles;
            the windows of a tile lie inside one (8 + k - 1)^2 key region, so each tile is one small
            dense attention with a mask that keeps each query's window: larger matmuls, no per-query
            copies of the keys, 3-7x faster backward and ~3x less memory here. Dilation runs NA on
            each dilation group.

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
    return _windowed_attention(q, k, v, kernel, dil, rpb, scale, return_attention, "sasa", padding)


def _natten_runs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: Optional[torch.Tensor]) -> bool:
    """Whether natten 0.21.7 can run this call: installed, no bias, and on CPU no gradient needed."""
    if not HAS_NATTEN or rpb is not None:
        return False
    if q.is_cuda:
        return True
    d = q.shape[-1]
    if not (8 <= d <= 512 and d & (d - 1) == 0):  # natten's CPU (flex) backend only takes these
        return False
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    return not needs_grad


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
        backend: ``"auto"``: natten when it is installed and can run this call (CUDA: forward and
            backward; CPU: forward only, i.e. no input needs a gradient, and a head_dim that is a
            power of two in [8, 512]; never with ``rpb``, which natten lacks), the pure-PyTorch path
            otherwise (so training on CPU always runs ours). On CPU natten 0.21.7 is unfused flex
            attention that builds the N x N scores: 4-60x slower than ours (module docstring).
            ``"torch"``: always ours (the fast choice for CPU inference). ``"natten"``: natten or an
            error.

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
    use_natten = backend != "torch" and _natten_runs(q, k, v, rpb)  # "auto" or "natten"
    if backend == "natten" and not use_natten:
        d = q.shape[-1]
        why = ("natten is not installed" if not HAS_NATTEN else "natten has no relative position bias (rpb)"
               if rpb is not None else f"natten's CPU backend needs a head_dim that is a power of two in [8, 512], got {d}"
               if not (8 <= d <= 512 and d & (d - 1) == 0) else
               "natten 0.21.7 has no backward on CPU; call under torch.no_grad()")
        raise ValueError(f"backend='natten' cannot run this call: {why}; use backend='torch' or 'auto'")
    if use_natten:
        return _natten().na2d(q, k, v, kernel_size=kernel, dilation=dil, scale=scale)
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


class NeighborhoodAttention2D(nn.Module):
    """Multi-head neighbourhood attention with NAT's relative position bias (NAT Sec. 3.1, Eq. 4).

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
        super().__init__()
        if num_heads <= 0 or dim % num_heads != 0:
            raise ValueError(
                f"dim {dim} is not divisible by num_heads {num_heads}; "
                f"use num_heads in {[h for h in range(1, 17) if dim % h == 0]} or change dim"
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size {kernel_size} must be odd and positive, e.g. 3, 5 or 7")
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.backend = backend
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1)) if rel_pos_bias else None
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if self.rpb is not None:
            nn.init.trunc_normal_(self.rpb, std=0.02)

    def window(self, H: int, W: int) -> Tuple[Tuple[int, int], Tuple[int, int]]:
        """The (kernel, dilation) pairs used on an H x W grid (shrunk if the grid is too small)."""
        (kh, dh), (kw, dw) = _fit_axis(H, self.kernel_size, self.dilation), _fit_axis(W, self.kernel_size, self.dilation)
        return (kh, kw), (dh, dw)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        if x.ndim != 4:
            raise ValueError(f"NeighborhoodAttention2D expects channels-last tokens (B, H, W, C), got {tuple(x.shape)}")
        B, H, W, C = x.shape
        qkv = self.qkv(x).reshape(B, H, W, 3, self.num_heads, self.head_dim)  # (B, H, W, 3, h, d_head)
        q, k, v = qkv.unbind(3)  # 3 x (B, H, W, h, d_head)
        kernel, dil = self.window(H, W)
        exact = kernel == (self.kernel_size,) * 2 and dil == (self.dilation,) * 2
        if return_attention or not exact or self.backend == "torch":
            res = _neighborhood_attention(q, k, v, kernel, dil, self.rpb, self.scale, return_attention)
        else:
            res = na2d(q, k, v, kernel, dil, rpb=self.rpb, scale=self.scale, backend=self.backend)
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
            depth.  layer_scale: LayerScale init value, or None (NAT uses it only for its largest models).

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
        layer_scale: Optional[float] = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = NeighborhoodAttention2D(dim, num_heads, kernel_size, dilation, qkv_bias, rel_pos_bias, backend=backend)
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale else nn.Identity()
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
        all blocks.  layer_scale: LayerScale init or None.  backend: see :func:`na2d`.

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
        layer_scale: Optional[float] = None,
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
                           rel_pos_bias=rel_pos_bias, layer_scale=layer_scale)
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
                         drop_path=dpr[b + i], layer_scale=layer_scale, backend=backend)
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
    def get_attention_maps(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Window weights of every block (no hooks). Shapes: list of (B, H_l, W_l, heads, k*k);
        turn one into a dense (B, heads, N, N) map with :func:`attention_to_dense`."""
        return self._run(x, True)[1]


#: CPU-sized presets for the 32 x 32 digits (1 channel, 10 classes), by profile. The tokenizer gives
#: an 8 x 8 grid, the downsampler 4 x 4; DiNA blocks (dilation 2) alternate with NA blocks on 8 x 8.
#: head_dim is 8, 16 or 32 (a power of two), so natten's CPU backend can run every block too.
NAT_CONFIGS: Dict[str, dict] = {
    "smoke": dict(img_size=32, in_chans=1, num_classes=10, embed_dim=16, depths=(1, 1), num_heads=(1, 2),
                  kernel_size=3, mlp_ratio=2.0),
    "cpu": dict(img_size=32, in_chans=1, num_classes=10, embed_dim=48, depths=(2, 2), num_heads=(3, 6),
                kernel_size=3, dilations=((1, 2), (1, 1)), mlp_ratio=2.0),
    "full": dict(img_size=32, in_chans=1, num_classes=10, embed_dim=96, depths=(3, 4), num_heads=(3, 6),
                 kernel_size=3, dilations=((1, 2, 1), (1, 1, 1, 1)), mlp_ratio=3.0, drop_path_rate=0.1),
}


def nat_for_profile(profile: str, **overrides) -> NAT:
    """Build the digits NAT preset of a profile (``smoke``, ``cpu`` or ``full``), with overrides.

    Raises:
        ValueError: unknown profile.
    """
    if profile not in NAT_CONFIGS:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(NAT_CONFIGS)}")
    return NAT(**{**NAT_CONFIGS[profile], **overrides})


#: Training recipes of the digits NAT (:data:`NAT_CONFIGS`) by profile (``survey_lib.train.TrainConfig`` fields).
#: cpu (30 epochs, one thread, ~4.3 s per epoch): 97.2% / 96.9% test accuracy for seeds 0 / 1 (2026-12-01).
NAT_TRAIN: Dict[str, dict] = {
    "smoke": dict(epochs=2, batch_size=128, lr=2e-3, warmup_epochs=0.5),
    "cpu": dict(epochs=30, batch_size=64, lr=2e-3, warmup_epochs=3, weight_decay=0.05, label_smoothing=0.1),
    "full": dict(epochs=100, batch_size=128, lr=1e-3, warmup_epochs=5, weight_decay=0.05, label_smoothing=0.1),
}


def train_nat(profile: str = "cpu", checkpoint: Optional[str] = None, seed: int = 0) -> dict:
    """Train the digits NAT of ``profile`` (32 px, random shifts) and report its test accuracy.

    Returns ``{"model", "history", "test_acc", "seconds"}`` (``survey_lib.methods`` convention).

    Raises:
        ValueError: unknown profile.
    """
    from ..data import DigitsDataset
    from ..evaluate import accuracy
    from ..train import TrainConfig, fit, seed_everything

    if profile not in NAT_TRAIN:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(NAT_TRAIN)}")
    seed_everything(seed)
    model = nat_for_profile(profile)
    train_set, test_set = DigitsDataset(train=True, augment=True), DigitsDataset(train=False)
    cfg = TrainConfig(**NAT_TRAIN[profile], seed=seed, checkpoint_path=checkpoint, desc=f"nat [{profile}]")
    history = fit(model, train_set, test_set, cfg)
    return {"model": model, "history": history, "test_acc": accuracy(model, test_set), "seconds": history.seconds}


# ---------------------------------------------------------------------------------------------
# Figures (each returns a matplotlib Figure)
# ---------------------------------------------------------------------------------------------
def plot_neighborhoods(
    grid: Tuple[int, int] = (9, 9),
    kernel_size: int = 5,
    queries: Sequence[Tuple[int, int]] = ((0, 0), (4, 4)),
    dilation: int = 1,
    kinds: Sequence[str] = ("na", "sasa"),
):
    """Which keys each query sees: one row per kind (NA, SASA), one column per query (NAT Fig. 3).

    Red: the query; blue: keys inside the grid; orange: SASA's zero-padding positions, drawn in the
    margin around the grid (light grey), where they are not real tokens.

    Shapes: grid (H, W); queries are (row, col) grid positions.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    H, W = grid
    p = (kernel_size // 2) * dilation
    cmap = ListedColormap(["#e6e6e6", "white", "#4c72b0", "#c44e52", "#dd8452"])
    fig, axes = plt.subplots(len(kinds), len(queries), figsize=(2.4 * len(queries), 2.5 * len(kinds)), squeeze=False)
    names = {"na": "NA (shifted window)", "sasa": "SASA (zero padding)"}
    for r, kind in enumerate(kinds):
        keys_h, _ = _axis_window(H, kernel_size, dilation, kind)  # (H, k), -1 for padding (SASA)
        keys_w, _ = _axis_window(W, kernel_size, dilation, kind)
        for c, (qi, qj) in enumerate(queries):
            canvas = torch.zeros(H + 2 * p, W + 2 * p)
            canvas[p:p + H, p:p + W] = 1
            n_real = 0
            for a in range(kernel_size):
                for b in range(kernel_size):
                    if kind == "na":
                        i, j = int(keys_h[qi, a]), int(keys_w[qj, b])
                    else:  # centred offsets, padding drawn in the margin
                        i, j = qi + dilation * (a - kernel_size // 2), qj + dilation * (b - kernel_size // 2)
                    inside = 0 <= i < H and 0 <= j < W
                    n_real += inside
                    canvas[i + p, j + p] = 2 if inside else 4
            canvas[qi + p, qj + p] = 3
            ax = axes[r, c]
            ax.imshow(canvas.numpy(), cmap=cmap, vmin=0, vmax=4)
            ax.set_xticks(np.arange(-0.5, W + 2 * p, 1), minor=True)
            ax.set_yticks(np.arange(-0.5, H + 2 * p, 1), minor=True)
            ax.grid(which="minor", color="#bbbbbb", linewidth=0.4)
            ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
            ax.add_patch(plt.Rectangle((p - 0.5, p - 0.5), W, H, fill=False, edgecolor="black", linewidth=1.2))
            ax.set_title(f"{names.get(kind, kind)}\nquery {qi, qj}: {n_real} real keys", fontsize=8)
    fig.suptitle(f"{kernel_size}x{kernel_size} neighbourhoods, dilation {dilation}, on a {H}x{W} grid", fontsize=10)
    fig.tight_layout()
    return fig


def plot_neighborhood_attention(
    img: torch.Tensor,
    attn: torch.Tensor,
    kernel_size: IntOrPair,
    dilation: IntOrPair = 1,
    queries: Sequence[Tuple[int, int]] = ((0, 0),),
    title: Optional[str] = None,
):
    """Attention of chosen query tokens over the image, one panel per (query, head).

    Args:
        img: (C, H_img, W_img) the input image.
        attn: (H, W, heads, k*k) window weights of one image and one block (e.g.
            ``model.get_attention_maps(x)[block][b]``).
        queries: (row, col) token positions; each is marked with a cyan dot.

    Shapes: each panel is the query's dense row (H, W), zero outside its window.
    """
    import matplotlib.pyplot as plt

    from ..viz import _overlay, show_image

    H, W, heads, _ = attn.shape
    dense = attention_to_dense(attn[None].detach().float(), kernel_size, dilation)[0]  # (heads, N, N)
    fig, axes = plt.subplots(len(queries), heads + 1, figsize=(1.9 * (heads + 1), 2.0 * len(queries)), squeeze=False)
    sy, sx = img.shape[1] / H, img.shape[2] / W
    for r, (qi, qj) in enumerate(queries):
        show_image(axes[r, 0], img, "input" if r == 0 else None)
        axes[r, 0].plot((qj + 0.5) * sx - 0.5, (qi + 0.5) * sy - 0.5, "o", color="cyan", markersize=5)
        for hd in range(heads):
            heat = dense[hd, qi * W + qj].reshape(H, W)  # (H, W)
            _overlay(axes[r, hd + 1], img, heat, f"query {qi, qj}, head {hd}")
            axes[r, hd + 1].plot((qj + 0.5) * sx - 0.5, (qi + 0.5) * sy - 0.5, "o", color="cyan", markersize=4)
    fig.suptitle(title or f"neighbourhood attention, kernel {kernel_size}, dilation {dilation}", fontsize=10)
    fig.tight_layout()
    return fig
