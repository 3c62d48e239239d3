"""Fast paths of neighbourhood attention: the tiled kernel, and natten where natten can run.

Both compute exactly what :func:`survey_lib.models.nat.gather_attention` defines (NAT, Hassani et
al. 2023, arXiv:2204.07143, Eq. 2-4; DiNAT, arXiv:2209.15001, Sec. 3.2), to float rounding;
``tests/test_nat.py`` checks them against it and against ``natten.functional.na2d``.

* :func:`tiled_neighborhood_attention`: the queries are cut into t x t tiles; because NA windows
  only slide inward, the windows of a tile lie inside one (t + k - 1)^2 key region, so each tile is
  one small dense attention with a mask that keeps each query's window: larger matmuls, no
  per-query copies of the keys (3-7x faster backward and ~3x less memory than the gather here).
  Dilation runs NA on each dilation group.
* :func:`natten_na2d`: ``natten.functional.na2d``, used by :func:`survey_lib.models.nat.na2d`
  wherever :func:`natten_can_run` says natten can run the call: on CUDA forward and backward, on
  CPU forward only (no gradient needed), without a relative position bias (natten has none) and,
  on CPU, with a head_dim that is a power of two in [8, 512] (its flex backend's limit). Caveat,
  measured with ``benchmarks/bench_nat.py``: natten 0.21.7 on CPU runs ``flex_attention`` without
  ``torch.compile``, which (its own warning says) materialises the full N x N score matrix, so
  there it is 4-60x slower than the pure-PyTorch paths and quadratic in memory.

natten is optional: this module imports without it.
"""
from __future__ import annotations

import functools
import importlib.util
from typing import Optional, Tuple

import torch

__all__ = ["HAS_NATTEN", "tiled_neighborhood_attention", "natten_can_run", "natten_refusal", "natten_na2d"]

#: True if natten is installed. natten is optional (used to check our implementation and to run
#: fast on CUDA) and imported only when a call needs it: importing it costs about a quarter of
#: ``import torch``.
HAS_NATTEN = importlib.util.find_spec("natten") is not None


def _natten():
    import natten.functional

    return natten.functional


# ---------------------------------------------------------------------------------------------
# The tiled kernel (dilation 1 per tile; dilation by groups)
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
def _tile_mask(H: int, W: int, kernel_h: int, kernel_w: int, t: int) -> torch.Tensor:
    """Additive mask (nt_h, nt_w, t_h*t_w, R_h*R_w): 0 inside a query's window, -inf outside."""
    _, _, mh, _, _, _, _ = _axis_tiles(H, kernel_h, t, kernel_h)
    _, _, mw, _, _, _, _ = _axis_tiles(W, kernel_w, t, kernel_w)
    inside = mh[:, None, :, None, :, None] & mw[None, :, None, :, None, :]  # (nt_h, nt_w, t_h, t_w, R_h, R_w)
    nth, ntw, th, tw, Rh, Rw = inside.shape
    inside = inside.reshape(nth, ntw, th * tw, Rh * Rw)  # (nt_h, nt_w, t_h*t_w, R_h*R_w)
    return torch.zeros(inside.shape).masked_fill_(~inside, float("-inf"))


def _tiled_na(q, k, v, kernel, rpb, scale, return_attention, tile: int = 8):
    """NA with dilation 1: attention of every t x t query tile to its key region, masked to each window."""
    B, H, W, h, head_dim = q.shape
    kernel_h, kernel_w = kernel
    rpb_kernel_h = (rpb.shape[1] + 1) // 2 if rpb is not None else kernel_h  # rpb's own kernel (>= kernel when shrunk)
    rpb_kernel_w = (rpb.shape[2] + 1) // 2 if rpb is not None else kernel_w
    rows_h, reg_h, _, rel_h, tile_h, off_h, win_h = _axis_tiles(H, kernel_h, tile, rpb_kernel_h)
    rows_w, reg_w, _, rel_w, tile_w, off_w, win_w = _axis_tiles(W, kernel_w, tile, rpb_kernel_w)
    nth, th = rows_h.shape
    ntw, tw = rows_w.shape
    Rh, Rw = reg_h.shape[1], reg_w.shape[1]
    dev = q.device

    def tiles(x, r_h, r_w, n_h, n_w):  # (B, H, W, h, d) -> (B, h, nt_h, nt_w, n_h*n_w, d)
        x = x.permute(0, 3, 1, 2, 4)  # (B, h, H, W, d_head)
        x = x[:, :, r_h.to(dev)][:, :, :, :, r_w.to(dev)]  # (B, h, nt_h, n_h, nt_w, n_w, d_head)
        return x.permute(0, 1, 2, 4, 3, 5, 6).reshape(B, h, nth, ntw, n_h * n_w, head_dim)

    qt = tiles(q * scale, rows_h, rows_w, th, tw)  # (B, h, nt_h, nt_w, t_h*t_w, d_head)
    kt = tiles(k, reg_h, reg_w, Rh, Rw)  # (B, h, nt_h, nt_w, R_h*R_w, d_head)
    vt = tiles(v, reg_h, reg_w, Rh, Rw)  # (B, h, nt_h, nt_w, R_h*R_w, d_head)
    bias = _tile_mask(H, W, kernel_h, kernel_w, tile).to(dev, q.dtype)  # (nt_h, nt_w, t_h*t_w, R_h*R_w)
    if rpb is not None:
        b = rpb[:, rel_h.to(dev)[:, None, :, None, :, None], rel_w.to(dev)[None, :, None, :, None, :]]  # (h, nt_h, nt_w, t_h, t_w, R_h, R_w)
        bias = bias + b.reshape(h, nth, ntw, th * tw, Rh * Rw)  # (h, nt_h, nt_w, t_h*t_w, R_h*R_w)
    logits = (qt @ kt.transpose(-1, -2)).add_(bias)  # (B, h, nt_h, nt_w, t_h*t_w, R_h*R_w)
    attn = logits.softmax(dim=-1)  # zero outside each query's window
    out = (attn @ vt).view(B, h, nth, ntw, th, tw, head_dim)  # (B, h, nt_h, nt_w, t_h, t_w, d_head)
    ti, tj = tile_h.to(dev)[:, None], tile_w.to(dev)[None, :]  # (H, 1), (1, W)
    oi, oj = off_h.to(dev)[:, None], off_w.to(dev)[None, :]
    out = out[:, :, ti, tj, oi, oj].permute(0, 2, 3, 1, 4)  # (B, H, W, h, d_head)
    if not return_attention:
        return out
    col = win_h.to(dev)[:, None, :, None] * Rw + win_w.to(dev)[None, :, None, :]  # (H, W, kh, kw) region column
    qi = (oi * tw + oj)[..., None]  # (H, W, 1) query index inside its tile
    weights = attn[:, :, ti[..., None], tj[..., None], qi, col.reshape(H, W, kernel_h * kernel_w)]  # (B, h, H, W, kh*kw)
    return out, weights.permute(0, 2, 3, 1, 4)  # (B, H, W, h, kh*kw)


def tiled_neighborhood_attention(q, k, v, kernel, dilation, rpb, scale, return_attention):
    """NA by tiles, without argument checks (see the module docstring); DiNA = NA with dilation 1
    on each dilation group (DiNAT Sec. 3.2).

    Shapes: q, k, v (B, H, W, heads, head_dim) -> (B, H, W, heads, head_dim), and with
    ``return_attention`` the weights (B, H, W, heads, kernel_h * kernel_w).
    """
    dilation_h, dilation_w = dilation
    if (dilation_h, dilation_w) == (1, 1):
        return _tiled_na(q, k, v, kernel, rpb, scale, return_attention)
    out = torch.empty_like(q)
    weights = q.new_empty(*q.shape[:4], kernel[0] * kernel[1]) if return_attention else None
    for group_h in range(dilation_h):
        for group_w in range(dilation_w):
            sub = (slice(None), slice(group_h, None, dilation_h), slice(group_w, None, dilation_w))  # (B, H_g, W_g, h, d)
            res = _tiled_na(q[sub], k[sub], v[sub], kernel, rpb, scale, return_attention)
            if return_attention:
                out[sub], weights[sub] = res
            else:
                out[sub] = res
    return (out, weights) if return_attention else out


# ---------------------------------------------------------------------------------------------
# natten
# ---------------------------------------------------------------------------------------------
def natten_can_run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: Optional[torch.Tensor]) -> bool:
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


def natten_refusal(q: torch.Tensor, rpb: Optional[torch.Tensor]) -> str:
    """Why natten cannot run a call (for the error of ``backend="natten"``)."""
    head_dim = q.shape[-1]
    if not HAS_NATTEN:
        return "natten is not installed"
    if rpb is not None:
        return "natten has no relative position bias (rpb)"
    if not (8 <= head_dim <= 512 and head_dim & (head_dim - 1) == 0):
        return f"natten's CPU backend needs a head_dim that is a power of two in [8, 512], got {head_dim}"
    return "natten 0.21.7 has no backward on CPU; call under torch.no_grad()"


def natten_na2d(q, k, v, kernel: Tuple[int, int], dilation: Tuple[int, int], scale: Optional[float]) -> torch.Tensor:
    """``natten.functional.na2d`` (natten's layout, no checks: call :func:`natten_can_run` first).

    Shapes: q, k, v (B, H, W, heads, head_dim) -> (B, H, W, heads, head_dim).
    """
    return _natten().na2d(q, k, v, kernel_size=kernel, dilation=dilation, scale=scale)
