"""Swin's window geometry: windows, their relative positions and the shifted-window mask.

Liu et al. 2021, "Swin Transformer", arXiv:2103.14030, Sec. 3.2 and Fig. 4. A (B, H, W, C) token
grid is cut into non-overlapping M x M windows (:func:`window_partition`, :func:`window_reverse`);
inside a window every (query, key) pair reads one row of a learned bias table
(:func:`relative_position_index`, Eq. 4); shifted windows are ordinary windows of the grid rolled
by ``-shift``, with a mask (:func:`shifted_window_mask`) that keeps wrapped-around tokens apart;
:func:`window_token_index` maps every window token back to its image position (figures, dense maps).
The attention and the model are in :mod:`survey_lib.models.swin`.
"""
from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch

from ..layers import to_2tuple

__all__ = ["window_partition", "window_reverse", "relative_position_index", "shifted_window_mask",
           "shifted_window_labels", "window_token_index"]

IntOrPair = Union[int, Tuple[int, int]]


# ---------------------------------------------------------------------------------------------
# Windows (Sec. 3.2): cut a (B, H, W, C) token grid into non-overlapping M x M windows and back
# ---------------------------------------------------------------------------------------------
def _divisors(n: int) -> List[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def window_partition(x: torch.Tensor, window_size: IntOrPair) -> torch.Tensor:
    """Cut a token grid into non-overlapping windows, numbered row-major over the grid.

    Window ``w = i * (W / M_w) + j`` holds tokens ``x[:, i*M_h:(i+1)*M_h, j*M_w:(j+1)*M_w]``; windows
    of image b come before those of image b + 1.

    Args:
        x: tokens laid out as an image.
        window_size: M, or (M_h, M_w).

    Shapes:
        x: (B, H, W, C) -> (B * nW, M_h, M_w, C), nW = (H / M_h) * (W / M_w).

    Raises:
        ValueError: if ``x`` is not 4-D or H, W are not multiples of the window size.
    """
    if x.ndim != 4:
        raise ValueError(f"window_partition expects tokens laid out as (B, H, W, C), got shape {tuple(x.shape)}")
    mh, mw = to_2tuple(window_size)
    B, H, W, C = x.shape
    if H % mh or W % mw:
        raise ValueError(
            f"a {H}x{W} token grid is not divisible into {mh}x{mw} windows; use a window_size dividing "
            f"both sides (height: {_divisors(H)}, width: {_divisors(W)}) or pad the grid"
        )
    x = x.view(B, H // mh, mh, W // mw, mw, C)  # (B, H/M_h, M_h, W/M_w, M_w, C)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, H/M_h, W/M_w, M_h, M_w, C)
    return x.reshape(-1, mh, mw, C)  # (B * nW, M_h, M_w, C)


def window_reverse(windows: torch.Tensor, window_size: IntOrPair, H: int, W: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``window_reverse(window_partition(x, M), M, H, W) == x``.

    Args:
        windows: window tokens, ordered as :func:`window_partition` returns them.
        window_size: M, or (M_h, M_w).
        H, W: the token grid the windows were cut from.

    Shapes:
        windows: (B * nW, M_h, M_w, C) -> (B, H, W, C).

    Raises:
        ValueError: if the sizes do not fit together.
    """
    mh, mw = to_2tuple(window_size)
    if H % mh or W % mw:
        raise ValueError(f"a {H}x{W} grid is not divisible into {mh}x{mw} windows")
    if windows.ndim != 4 or tuple(windows.shape[1:3]) != (mh, mw):
        raise ValueError(f"window_reverse expects (B*nW, {mh}, {mw}, C) windows, got shape {tuple(windows.shape)}")
    nW = (H // mh) * (W // mw)
    if windows.shape[0] % nW:
        raise ValueError(f"{windows.shape[0]} windows are not a whole number of {H}x{W} grids ({nW} windows each)")
    C = windows.shape[-1]
    x = windows.view(-1, H // mh, W // mw, mh, mw, C)  # (B, H/M_h, W/M_w, M_h, M_w, C)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, H/M_h, M_h, W/M_w, M_w, C)
    return x.reshape(-1, H, W, C)  # (B, H, W, C)


# ---------------------------------------------------------------------------------------------
# Relative position bias (Sec. 3.2, Eq. 4) and the shifted-window mask (Sec. 3.2, Fig. 4)
# ---------------------------------------------------------------------------------------------
def relative_position_index(window_size: IntOrPair) -> torch.Tensor:
    """Row of the bias table used by each (query, key) pair of a window (Eq. 4's B = B_hat[index]).

    Token n of an M_h x M_w window sits at (r, c) = divmod(n, M_w). The offset of query i to key j,
    ``(r_i - r_j, c_i - c_j)``, lies in [-(M_h-1), M_h-1] x [-(M_w-1), M_w-1]; shifted to start at
    0 and read row-major it gives ``(r_i - r_j + M_h - 1) * (2 M_w - 1) + (c_i - c_j + M_w - 1)``, a
    row of the ``(2 M_h - 1) * (2 M_w - 1)``-row table. Pairs with the same offset share a bias.

    Shapes: returns (N, N) int64 with N = M_h * M_w.
    """
    mh, mw = to_2tuple(window_size)
    rows, cols = torch.meshgrid(torch.arange(mh), torch.arange(mw), indexing="ij")  # 2 x (M_h, M_w)
    coords = torch.stack([rows.flatten(), cols.flatten()])  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N): query minus key
    return (rel[0] + mh - 1) * (2 * mw - 1) + (rel[1] + mw - 1)  # (N, N)


def shifted_window_mask(
    grid_size: IntOrPair,
    window_size: IntOrPair,
    shift_size: IntOrPair,
    dtype: torch.dtype = torch.float32,
    device: Optional[torch.device] = None,
) -> torch.Tensor:
    """Additive attention mask of the shifted windows after the cyclic shift (Sec. 3.2, Fig. 4).

    SW-MSA moves the window grid by ``shift_size`` (M // 2 in the paper). Instead of cutting more,
    smaller windows, the tokens are rolled by ``-shift`` (towards the top left, ``torch.roll``), so
    the shifted windows become ordinary M x M windows again. Windows along the bottom and right
    edges then hold tokens that were far apart before the roll (wrapped around). Build the mask the
    same way: label every token of the *unrolled* grid with the shifted window it belongs to, roll
    the labels like the tokens, partition them into windows; a pair of tokens in a window whose
    labels differ gets -100 (exp(-100) ~ 4e-44: zero after the softmax, still finite), others 0.

    Args:
        grid_size: (H, W) token grid, divisible by the window size.
        window_size: M, or (M_h, M_w).
        shift_size: s, or (s_h, s_w), each in [0, M).

    Shapes:
        returns (nW, N, N), nW = (H / M_h) * (W / M_w), N = M_h * M_w; window order as in
        :func:`window_partition` of the rolled grid.

    Raises:
        ValueError: a shift outside [0, M), or a grid not divisible by the window.
    """
    mh, mw = to_2tuple(window_size)
    labels = shifted_window_labels(grid_size, window_size, shift_size, device=device)  # (H, W), unrolled
    labels = torch.roll(labels, shifts=tuple(-s for s in to_2tuple(shift_size)), dims=(0, 1))  # (H, W): rolled like the tokens
    windows = window_partition(labels[None, :, :, None], (mh, mw)).reshape(-1, mh * mw)  # (nW, N)
    different = windows[:, :, None] != windows[:, None, :]  # (nW, N, N): pair from two regions
    mask = torch.zeros(different.shape, dtype=dtype, device=device)
    return mask.masked_fill(different, -100.0)


def shifted_window_labels(
    grid_size: IntOrPair, window_size: IntOrPair, shift_size: IntOrPair, device: Optional[torch.device] = None
) -> torch.Tensor:
    """Id of the shifted window each token of the (unrolled) grid belongs to.

    The shifted windows' borders are at s, s + M, s + 2M, ...: rows [0, s) form window row 0,
    rows [s, s + M) window row 1, and so on; the last one is cut by the grid edge. Used by
    :func:`shifted_window_mask` and the figures.

    Shapes: returns (H, W) int64.

    Raises:
        ValueError: a shift outside [0, M).
    """
    H, W = to_2tuple(grid_size)
    mh, mw = to_2tuple(window_size)
    sh, sw = to_2tuple(shift_size)
    if not (0 <= sh < mh and 0 <= sw < mw):
        raise ValueError(f"shift_size {(sh, sw)} must lie in [0, window_size) = [0, {(mh, mw)})")
    row_id = (torch.arange(H, device=device) + mh - sh) // mh  # (H,)
    col_id = (torch.arange(W, device=device) + mw - sw) // mw  # (W,)
    return row_id[:, None] * (W // mw + 2) + col_id[None, :]  # (H, W): one id per shifted window


def _fit_window(grid: Tuple[int, int], window: Tuple[int, int], shift: Tuple[int, int]):
    """A window no smaller than the grid becomes the whole grid, without shift (paper's code, timm)."""
    win = tuple(g if g <= w else w for g, w in zip(grid, window))
    sh = tuple(0 if g <= w else s for g, w, s in zip(grid, window, shift))
    return win, sh


# ---------------------------------------------------------------------------------------------
# Window positions on the grid, for figures and the attention-map contract
# ---------------------------------------------------------------------------------------------
def window_token_index(grid: IntOrPair, window_size: IntOrPair, shift_size: IntOrPair = 0) -> torch.Tensor:
    """Flat grid position (row-major, image coordinates) of every token of every window.

    Windows and their tokens are in :func:`window_partition` order on the grid rolled by
    ``-shift_size`` (a shifted block's windows); adding the shift back and wrapping gives the image
    position: token (ti, tj) of window (wi, wj) is at ``((wi M + ti + s_h) mod H, (wj M + tj + s_w) mod W)``.

    Shapes: returns (nW, M_h * M_w) int64.
    """
    H, W = to_2tuple(grid)
    mh, mw = to_2tuple(window_size)
    sh, sw = to_2tuple(shift_size)
    wi, wj = torch.meshgrid(torch.arange(H // mh), torch.arange(W // mw), indexing="ij")  # (H/M, W/M) window grid
    ti, tj = torch.meshgrid(torch.arange(mh), torch.arange(mw), indexing="ij")  # (M, M) inside a window
    rows = (wi.reshape(-1, 1) * mh + ti.reshape(1, -1) + sh) % H  # (nW, M*M): image row of each window token
    cols = (wj.reshape(-1, 1) * mw + tj.reshape(1, -1) + sw) % W  # (nW, M*M): image column
    return rows * W + cols  # (nW, M*M)
