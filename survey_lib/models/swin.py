"""Swin Transformer: hierarchical vision transformer with shifted windows.

Liu et al. 2021, "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows", ICCV 2021,
arXiv:2103.14030. The paper's pieces map onto the code:

    Sec. 3.1  patch partition + linear embedding                  -> ``PatchEmbed`` (survey_lib.layers, with LayerNorm)
    Sec. 3.1  patch merging (2x2 neighbours, 4C -> 2C)            -> :class:`PatchMerging`
    Sec. 3.2  window-based self-attention W-MSA, Eq. 1-2 cost     -> :func:`window_partition` (``swin_windows``), :class:`WindowAttention`
    Sec. 3.2  shifted windows SW-MSA, Eq. 3 (two blocks in a row) -> :class:`SwinTransformerBlock` (``shift_size``)
    Sec. 3.2  "efficient batch computation": cyclic shift + mask  -> ``torch.roll`` and :func:`shifted_window_mask` (``swin_windows``)
    Sec. 3.2  relative position bias, Eq. 4                       -> ``relative_position_bias_table`` / ``relative_position_index``
    Sec. 3.3  stages of 2, 2, 6, 2 blocks, C doubling per stage   -> :class:`SwinTransformerStage`, :class:`SwinTransformer`

Eq. 4:  Attention(Q, K, V) = SoftMax(Q K^T / sqrt(d) + B) V,  B gathered from a learned table
B_hat of (2M - 1) x (2M - 1) entries per head, indexed by the relative offset of two tokens in a
window of M x M tokens.

Tokens stay laid out as an image, (B, H, W, C), between blocks, as in timm; parameter names are
timm's (``timm.models.swin_transformer.SwinTransformer``, timm 1.0.31), so :func:`timm_state_dict`
converts a model by renaming the classifier only, and ``tests/test_swin.py`` proves equal logits.

Deviations from the paper:
    * the training presets (``survey_lib.recipes.swin``) are tiny (16-64 wide, 2-3 stages, 4 x 4
      windows) for small one-channel images; Swin-T is ``SwinTransformer()`` with the defaults.
    * patch merging sits at the *start* of stages 2-4 (``layers.{i}.downsample``, i > 0), as in
      timm, instead of at the end of stages 1-3 as in the paper's Fig. 3 and official code: the same
      function, different parameter names.
    * a feature grid that a window does not tile raises a ``ValueError`` (the official code and timm
      pad with zeros instead); a grid no larger than the window makes that stage use one global
      window without shift (as both do).
    * inputs must have the ``img_size`` the model was built for (masks and windows are precomputed).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..layers import Attention, AttentionLayout, DropPath, Mlp, PatchEmbed, attend, to_2tuple
from .swin_windows import (IntOrPair, _divisors, _fit_window, relative_position_index, shifted_window_labels,
                           shifted_window_mask, window_partition, window_reverse, window_token_index)

__all__ = [
    "window_partition",
    "window_reverse",
    "relative_position_index",
    "shifted_window_mask",
    "shifted_window_labels",
    "WindowAttention",
    "SwinTransformerBlock",
    "PatchMerging",
    "SwinTransformerStage",
    "SwinTransformer",
    "timm_state_dict",
    "timm_kwargs",
    "from_timm_state_dict",
    "window_token_index",
    "window_attention_to_grid",
]

# ---------------------------------------------------------------------------------------------
# Window attention W-MSA / SW-MSA (Sec. 3.2, Eq. 4)
# ---------------------------------------------------------------------------------------------
class WindowAttention(Attention):
    """Multi-head self-attention inside each M x M window, with a learned relative position bias.

    It is :class:`survey_lib.layers.Attention` (same ``qkv``, ``proj``, dropouts) plus Eq. 4's bias
    ``B`` added to the scaled scores of every window, and the shifted-window ``mask`` added to the
    windows that need it. The fused path (default) passes bias + mask as SDPA's ``attn_mask``,
    broadcast over the batch; ``return_attention=True`` runs the textbook formula and also returns
    the weights.

    Args:
        dim: C, the token width.
        window_size: M or (M_h, M_w); every input holds N = M_h * M_w tokens.
        num_heads: h; ``dim`` must be divisible by it.
        qkv_bias: bias on the joint Q, K, V projection.
        attn_drop: dropout on the attention weights.  proj_drop: dropout after the projection.

    Shapes:
        x: (B * nW, N, C) window tokens, windows of an image consecutive (:func:`window_partition`).
        mask: optional (nW, N, N) additive mask (0 or -100), the same for every image.
        returns (B * nW, N, C); with ``return_attention=True`` also weights (B * nW, h, N, N),
        post-softmax, pre-dropout, rows summing to 1.

    Raises:
        ValueError: ``dim`` not divisible by ``num_heads``; inputs whose N or window count do not fit.

    Source: Liu et al. 2021, arXiv:2103.14030, Sec. 3.2, Eq. 4.
    """

    def __init__(
        self,
        dim: int,
        window_size: IntOrPair,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.window_size = to_2tuple(window_size)
        mh, mw = self.window_size
        self.window_area = mh * mw
        # B_hat of Eq. 4: one learned bias per relative offset and head.
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * mh - 1) * (2 * mw - 1), num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        # Fixed, derived from the window size: not saved in checkpoints (as in timm).
        self.register_buffer("relative_position_index", relative_position_index(self.window_size), persistent=False)

    #: Use ``scaled_dot_product_attention`` where it helps; False: always the explicit formula.
    fused_attn: bool = True

    def use_fused(self, x: torch.Tensor) -> bool:
        """Whether :meth:`forward` calls SDPA (when no weights are asked for).

        On CPU, when a gradient must flow into the bias table (training), PyTorch 2.x has no fused
        kernel for a differentiable ``attn_mask`` and SDPA falls back to its math path, which does
        more work than the explicit formula (``benchmarks/bench_swin.py``); the explicit formula is
        used there. Elsewhere (inference, or CUDA) SDPA runs.
        """
        if not self.fused_attn:
            return False
        return not (x.device.type == "cpu" and torch.is_grad_enabled() and self.relative_position_bias_table.requires_grad)

    def relative_position_bias(self) -> torch.Tensor:
        """Eq. 4's B for every head: the table gathered by the index. Shapes: returns (h, N, N)."""
        N = self.window_area
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]  # (N * N, h)
        return bias.view(N, N, -1).permute(2, 0, 1)  # (h, N, N)

    def forward(
        self,
        x: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
        return_attention: bool = False,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        B_, N, C = x.shape  # B_ = B * nW
        if N != self.window_area:
            raise ValueError(f"WindowAttention for {self.window_size} windows expects N={self.window_area} "
                             f"tokens per window, got x of shape {tuple(x.shape)}; partition with window_partition")
        h, d = self.num_heads, self.head_dim
        attn_bias = self.relative_position_bias()  # (h, N, N)
        nW = 1
        if mask is not None:
            nW = mask.shape[0]
            if mask.shape[1:] != (N, N) or B_ % nW:
                raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit {B_} windows of {N} tokens; "
                                 f"expected (nW, {N}, {N}) with nW dividing {B_}")
            attn_bias = attn_bias + mask.unsqueeze(1)  # (nW, h, N, N): bias + mask, summed once per step
        qkv = self.qkv(x).reshape(B_, N, 3, h, d)  # (B * nW, N, 3, h, d_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B * nW, h, N, d_head)
        if mask is not None:  # the mask differs per window: one (h, N, N) bias per window of every image
            attn_bias = attn_bias.expand(B_ // nW, nW, h, N, N).reshape(B_, h, N, N)  # (B * nW, h, N, N)
        explicit = return_attention or not self.use_fused(x)
        x, weights = attend(q, k, v, attn_bias, self.dropout_p(), explicit=explicit)  # (B * nW, h, N, d_head)
        x = x.transpose(1, 2).reshape(B_, N, C)  # (B * nW, N, C): heads concatenated
        x = self.proj_drop(self.proj(x))
        return (x, weights) if return_attention else x

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, num_heads={self.num_heads}"


# ---------------------------------------------------------------------------------------------
# One Swin block (Eq. 3): (S)W-MSA and MLP, each pre-norm with a residual
# ---------------------------------------------------------------------------------------------
class SwinTransformerBlock(nn.Module):
    """Swin block: ``x = x + DropPath((S)W-MSA(LN(x)))`` then ``x = x + DropPath(MLP(LN(x)))`` (Eq. 3).

    With ``shift_size > 0`` the block is SW-MSA: the tokens are rolled by ``-shift`` before the
    window partition and rolled back after, and the precomputed :func:`shifted_window_mask` (buffer
    ``attn_mask``, not saved in checkpoints) stops wrapped-around tokens from attending to each other.
    If the grid is no larger than the window along a side, that side uses one window and no shift.

    Args:
        dim: C.  input_resolution: (H, W) token grid of this block.  num_heads: h.
        window_size: M.  shift_size: s (M // 2 for SW-MSA, 0 for W-MSA).
        mlp_ratio: MLP hidden width / C.  qkv_bias, attn_drop, proj_drop: see :class:`WindowAttention`.
        drop_path: stochastic-depth probability.  norm_layer: LayerNorm (eps 1e-5, as in Swin and timm).

    Shapes:
        x: (B, H, W, C) -> (B, H, W, C); with ``return_attention=True`` also (B, nW, h, N, N), the
        windows of the rolled grid when the block is shifted.

    Raises:
        ValueError: a grid not divisible by the window (message lists window sizes that work), a
            shift outside [0, M), or an input of another grid size.
    """

    def __init__(
        self,
        dim: int,
        input_resolution: IntOrPair,
        num_heads: int,
        window_size: IntOrPair = 7,
        shift_size: IntOrPair = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: type = nn.GELU,
        norm_layer: type = nn.LayerNorm,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.input_resolution = to_2tuple(input_resolution)
        self.window_size, self.shift_size = _fit_window(self.input_resolution, to_2tuple(window_size), to_2tuple(shift_size))
        H, W = self.input_resolution
        mh, mw = self.window_size
        if H % mh or W % mw:
            raise ValueError(
                f"the {H}x{W} feature grid is not divisible by window_size {to_2tuple(window_size)}; use a "
                f"window_size dividing it (height: {_divisors(H)}, width: {_divisors(W)}) or an img_size "
                f"whose grid it divides"
            )
        if not all(0 <= s < m for s, m in zip(self.shift_size, self.window_size)):
            raise ValueError(f"shift_size {self.shift_size} must lie in [0, window_size) = [0, {self.window_size})")
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, self.window_size, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                    proj_drop=proj_drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        mask = shifted_window_mask(self.input_resolution, self.window_size, self.shift_size) if self.shifted else None
        self.register_buffer("attn_mask", mask, persistent=False)

    @property
    def shifted(self) -> bool:
        """True for SW-MSA blocks."""
        return any(self.shift_size)

    @property
    def num_windows(self) -> int:
        return (self.input_resolution[0] // self.window_size[0]) * (self.input_resolution[1] // self.window_size[1])

    def dense_attention(self, attn: torch.Tensor) -> torch.Tensor:
        """Scatter this block's window weights into one dense map over its token grid.

        Token (ti, tj) of window (wi, wj) sits at position ``window_token_index`` of the grid (image
        positions: the roll of a shifted block is undone), for queries and keys alike; entries
        between tokens of different windows are zero.

        Shapes: attn (B, nW, h, M*M, M*M) (from :meth:`forward` with ``return_attention``) ->
        (B, h, N, N), N = H * W, row n = what the token at grid position n attends to.
        """
        H, W = self.input_resolution
        idx = window_token_index(self.input_resolution, self.window_size, self.shift_size).to(attn.device)  # (nW, M*M)
        B, _, h = attn.shape[:3]
        dense = attn.new_zeros(B, h, H * W, H * W)  # (B, h, N, N)
        dense[:, :, idx[:, :, None], idx[:, None, :]] = attn.permute(0, 2, 1, 3, 4)  # (B, h, nW, M*M, M*M)
        return dense

    def _attn(self, x: torch.Tensor, return_attention: bool):
        B, H, W, C = x.shape
        if self.shifted:  # cyclic shift towards the top left (Fig. 4)
            x = torch.roll(x, shifts=(-self.shift_size[0], -self.shift_size[1]), dims=(1, 2))  # (B, H, W, C)
        windows = window_partition(x, self.window_size).view(-1, self.attn.window_area, C)  # (B * nW, N, C)
        out = self.attn(windows, mask=self.attn_mask, return_attention=return_attention)
        windows, attn = out if return_attention else (out, None)  # (B * nW, N, C)
        x = window_reverse(windows.view(-1, *self.window_size, C), self.window_size, H, W)  # (B, H, W, C)
        if self.shifted:  # undo the shift
            x = torch.roll(x, shifts=self.shift_size, dims=(1, 2))  # (B, H, W, C)
        return x, attn

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        if x.ndim != 4 or tuple(x.shape[1:3]) != self.input_resolution:
            raise ValueError(f"this block was built for a {self.input_resolution} grid: expects (B, "
                             f"{self.input_resolution[0]}, {self.input_resolution[1]}, C) tokens, got {tuple(x.shape)}")
        y, attn = self._attn(self.norm1(x), return_attention)
        x = x + self.drop_path1(y)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        if return_attention:
            return x, attn.view(x.shape[0], self.num_windows, *attn.shape[1:])  # (B, nW, h, N, N)
        return x

    def extra_repr(self) -> str:
        return f"input_resolution={self.input_resolution}, window_size={self.window_size}, shift_size={self.shift_size}"


# ---------------------------------------------------------------------------------------------
# Patch merging (Sec. 3.1): halve the grid, double the width
# ---------------------------------------------------------------------------------------------
class PatchMerging(nn.Module):
    """Concatenate each 2 x 2 group of neighbouring tokens (4C), LayerNorm, then a linear map to 2C.

    The concatenation order is the official code's (and timm's): top-left, bottom-left, top-right,
    bottom-right, i.e. ``x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]``.

    Args:
        dim: C of the input.  out_dim: output width (default 2C).  norm_layer: applied to the 4C vector.

    Shapes: (B, H, W, C) -> (B, H/2, W/2, out_dim).

    Raises:
        ValueError: H or W odd.
    """

    def __init__(self, dim: int, out_dim: Optional[int] = None, norm_layer: type = nn.LayerNorm) -> None:
        super().__init__()
        self.dim = dim
        self.out_dim = out_dim or 2 * dim
        self.norm = norm_layer(4 * dim)
        self.reduction = nn.Linear(4 * dim, self.out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        if H % 2 or W % 2:
            raise ValueError(f"PatchMerging needs an even token grid, got {H}x{W}; use an img_size whose grid "
                             f"halves evenly at every stage, or fewer stages")
        x = x.view(B, H // 2, 2, W // 2, 2, C)  # (B, H/2, dy, W/2, dx, C)
        x = x.permute(0, 1, 3, 4, 2, 5)  # (B, H/2, W/2, dx, dy, C): order (0,0), (1,0), (0,1), (1,1) as (dy, dx)
        x = x.reshape(B, H // 2, W // 2, 4 * C)  # (B, H/2, W/2, 4C)
        return self.reduction(self.norm(x))  # (B, H/2, W/2, out_dim)


class SwinTransformerStage(nn.Module):
    """One stage: optional :class:`PatchMerging`, then ``depth`` blocks alternating W-MSA and SW-MSA.

    Args:
        dim: width of the input.  out_dim: width of the blocks (2 * dim after a merge).
        input_resolution: (H, W) grid of the input; the blocks see (H/2, W/2) if ``downsample``.
        depth: number of blocks.  downsample: merge patches first (every stage but the first).
        num_heads, window_size, mlp_ratio, qkv_bias, proj_drop, attn_drop: see the block.
        drop_path: one rate per block.  shifted_windows: shift every second block's windows by half
            a window (SW-MSA, Sec. 3.2); False keeps W-MSA in every block (the paper's "w/o shifting"
            ablation, Sec. 4.3, Table 4).

    Shapes: (B, H, W, dim) -> (B, H', W', out_dim); with ``return_attention=True`` also a list of
    per-block (B, nW, h, N, N).
    """

    def __init__(
        self,
        dim: int,
        out_dim: int,
        input_resolution: Tuple[int, int],
        depth: int,
        downsample: bool,
        num_heads: int,
        window_size: IntOrPair = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: Sequence[float] = (),
        norm_layer: type = nn.LayerNorm,
        shifted_windows: bool = True,
    ) -> None:
        super().__init__()
        self.input_resolution = tuple(input_resolution)
        self.output_resolution = tuple(r // 2 for r in input_resolution) if downsample else self.input_resolution
        if downsample:
            self.downsample = PatchMerging(dim, out_dim, norm_layer)
        elif dim != out_dim:
            raise ValueError(f"a stage without downsample keeps its width: dim {dim} != out_dim {out_dim}")
        else:
            self.downsample = nn.Identity()
        ws = to_2tuple(window_size)
        drop_path = list(drop_path) or [0.0] * depth
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                out_dim, self.output_resolution, num_heads, window_size=ws,
                shift_size=0 if i % 2 == 0 or not shifted_windows else (ws[0] // 2, ws[1] // 2),  # W-MSA, SW-MSA, ...
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=proj_drop, attn_drop=attn_drop,
                drop_path=drop_path[i], norm_layer=norm_layer,
            )
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        x = self.downsample(x)  # (B, H', W', out_dim)
        maps = []
        for blk in self.blocks:
            if return_attention:
                x, attn = blk(x, return_attention=True)
                maps.append(attn)
            else:
                x = blk(x)
        return (x, maps) if return_attention else x


# ---------------------------------------------------------------------------------------------
# The hierarchical model (Sec. 3.3, Fig. 3)
# ---------------------------------------------------------------------------------------------
class SwinTransformer(nn.Module):
    """Swin Transformer classifier: patch embedding, stages of (S)W-MSA blocks with patch merging
    between them, final LayerNorm, global average pooling, linear head.

    Stage i works on a grid of (H/P) / 2^i tokens per side with width ``embed_dim * 2**i`` and
    ``num_heads[i]`` heads; inside a stage blocks alternate W-MSA and SW-MSA (shift M // 2).

    Args:
        img_size: input size (H, W); inputs must have exactly this size.
        patch_size: P.  in_chans: C.  num_classes: K (0: no head, ``forward`` returns pooled features).
        embed_dim: width of stage 0.  depths: blocks per stage.  num_heads: heads per stage.
        window_size: M (one for all stages).  mlp_ratio: MLP hidden width / width.
        qkv_bias: bias on Q, K, V.  drop_rate: dropout before the head.  proj_drop_rate,
        attn_drop_rate: dropouts inside blocks.  drop_path_rate: stochastic depth, rising linearly
        from 0 over all blocks (Sec. 4.1 uses 0.2 for Swin-T).
        global_pool: ``'avg'`` only (the paper's head).
        shifted_windows: False: no shifted windows anywhere (Table 4's "w/o shifting" ablation).

    Shapes:
        x: (B, C, H, W) -> logits (B, K).
        ``forward_features``: (B, H/(P 2^(S-1)), W/(P 2^(S-1)), D_last), after the final norm.
        ``embed``: (B, D_last), D_last = ``embed_dim * 2**(S-1)``.
        ``get_attention_maps``: one (B, nW, h, N, N) tensor per block, first block first.

    Raises:
        ValueError: stage widths not divisible by their ``num_heads``, ``depths``/``num_heads`` of
            different lengths, a stage grid that the window does not tile or that cannot be halved,
            an image size not divisible by ``patch_size``, or an input of another size.
    """

    def __init__(
        self,
        img_size: IntOrPair = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: IntOrPair = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        global_pool: str = "avg",
        shifted_windows: bool = True,
    ) -> None:
        super().__init__()
        depths, num_heads = tuple(depths), tuple(num_heads)
        if global_pool != "avg":
            raise ValueError(f"SwinTransformer pools by averaging; global_pool must be 'avg', got {global_pool!r}")
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {depths} and num_heads {num_heads} must have one entry per stage")
        self.num_layers = len(depths)
        dims = [int(embed_dim * 2**i) for i in range(self.num_layers)]
        for i, (d, h) in enumerate(zip(dims, num_heads)):
            if h <= 0 or d % h:
                raise ValueError(
                    f"stage {i} width {d} (embed_dim {embed_dim} * 2**{i}) is not divisible by num_heads[{i}]={h}; "
                    f"use num_heads[{i}] in {[k for k in _divisors(d) if k <= 32]} or change embed_dim"
                )
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.embed_dim = embed_dim
        self.num_features = dims[-1]
        self.config = dict(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
            embed_dim=embed_dim, depths=depths, num_heads=num_heads, window_size=window_size,
            mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_rate=drop_rate, proj_drop_rate=proj_drop_rate,
            attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate, global_pool=global_pool,
            shifted_windows=shifted_windows,
        )

        # Sec. 3.1: patch partition + linear embedding, with LayerNorm (as in the official code).
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, norm_layer=nn.LayerNorm)
        grid = self.patch_embed.grid_size
        _check_stage_grids(grid, to_2tuple(window_size), self.num_layers)

        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        stages, res, start = [], grid, 0
        for i in range(self.num_layers):
            stage = SwinTransformerStage(
                dims[max(i - 1, 0)], dims[i], res, depths[i], downsample=i > 0, num_heads=num_heads[i],
                window_size=window_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=proj_drop_rate,
                attn_drop=attn_drop_rate, drop_path=dpr[start:start + depths[i]], shifted_windows=shifted_windows,
            )
            stages.append(stage)
            res, start = stage.output_resolution, start + depths[i]
        self.layers = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(self.num_features)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    # -- initialisation ------------------------------------------------------------------------
    def init_weights(self) -> None:
        """timm's Swin init: truncated normal (std 0.02) for Linear weights and the bias tables, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, WindowAttention):
                nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Parameters excluded from weight decay (the bias tables, as in the official code)."""
        return {"relative_position_bias_table"}

    # -- forward -------------------------------------------------------------------------------
    def _embed_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: (B, C, H, W) -> (B, H/P, W/P, embed_dim)."""
        expected = to_2tuple(self.config["img_size"])
        if x.ndim != 4 or tuple(x.shape[-2:]) != expected:
            raise ValueError(
                f"this SwinTransformer was built for {expected[0]}x{expected[1]} images (its windows and masks "
                f"are precomputed); got input of shape {tuple(x.shape)}. Resize the input or build the model "
                f"with img_size={tuple(x.shape[-2:]) if x.ndim == 4 else '...'}"
            )
        B = x.shape[0]
        gh, gw = self.patch_embed.grid_size
        return self.patch_embed(x).view(B, gh, gw, -1)  # (B, N, D) -> (B, H/P, W/P, D)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: (B, C, H, W) -> (B, H', W', D_last), after the final norm."""
        x = self._embed_tokens(x)
        for stage in self.layers:
            x = stage(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Average over the grid and classify. Shapes: (B, H', W', D) -> (B, K) (or (B, D) with pre_logits)."""
        x = self.head_drop(x.mean(dim=(1, 2)))  # (B, D)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled feature used by probes (k-NN, linear). Shapes: (B, C, H, W) -> (B, D_last)."""
        return self.forward_head(self.forward_features(x), pre_logits=True)

    # -- attention maps ------------------------------------------------------------------------
    def blocks(self) -> List[SwinTransformerBlock]:
        """Every block, first stage first (the order of :meth:`get_attention_maps`)."""
        return [blk for stage in self.layers for blk in stage.blocks]

    @torch.no_grad()
    def get_attention_maps(self, x: torch.Tensor, dense: bool = False) -> List[torch.Tensor]:
        """Post-softmax attention weights of every block, on the explicit path (no hooks, no flags).

        Args:
            dense: False: per window, entry ``[b, w, head, i, j]`` is how much token i of window w
                attends to token j of the same window (for a shifted block the windows of the
                *rolled* grid). True: the attention-map contract of every model
                (:class:`survey_lib.layers.AttentionLayout`): one (B, h, N, N) map per block over
                that block's grid in image positions, zero outside each window
                (:meth:`SwinTransformerBlock.dense_attention`).

        Shapes: (B, C, H, W) -> list over blocks of (B, nW, h, M*M, M*M), or (B, h, N, N) with ``dense``.
        """
        x = self._embed_tokens(x)
        maps: List[torch.Tensor] = []
        for stage in self.layers:
            x, stage_maps = stage(x, return_attention=True)
            maps.extend(stage_maps)
        if dense:
            maps = [blk.dense_attention(a) for blk, a in zip(self.blocks(), maps)]
        return maps

    def attention_layout(self, img_size=None) -> List[AttentionLayout]:
        """One :class:`~survey_lib.layers.AttentionLayout` per block: its stage, its token grid, no
        prefix token (the contract of :meth:`get_attention_maps` with ``dense=True``).

        Raises:
            ValueError: an ``img_size`` other than the model's (its windows and masks are fixed).
        """
        if img_size is not None and to_2tuple(img_size) != to_2tuple(self.config["img_size"]):
            raise ValueError(f"this SwinTransformer only takes {to_2tuple(self.config['img_size'])} images, got {img_size}")
        return [AttentionLayout(i, tuple(blk.input_resolution), 0) for i, stage in enumerate(self.layers)
                for blk in stage.blocks]


def _stage_grids(grid: Tuple[int, int], num_stages: int) -> List[Tuple[int, int]]:
    """Token grid of each stage: the patch grid, halved by every patch merging."""
    out = [tuple(grid)]
    for _ in range(num_stages - 1):
        out.append((out[-1][0] // 2, out[-1][1] // 2))
    return out


def _check_stage_grids(grid: Tuple[int, int], window: Tuple[int, int], num_stages: int) -> None:
    """Raise a ValueError naming the stage and the fix if a grid cannot be merged or windowed."""
    grids = _stage_grids(grid, num_stages)
    for i in range(1, num_stages):
        prev = grids[i - 1]
        if prev[0] % 2 or prev[1] % 2:
            raise ValueError(
                f"stage {i} cannot merge 2x2 patches: stage {i - 1}'s grid {prev[0]}x{prev[1]} is odd. Use an "
                f"img_size / patch_size whose patch grid ({grid[0]}x{grid[1]} now) halves evenly {num_stages - 1} "
                f"times, or fewer stages"
            )
    for i, res in enumerate(grids):
        win, _ = _fit_window(res, window, (0, 0))
        if res[0] % win[0] or res[1] % win[1]:
            # A window m tiles a side g if it divides it, or covers it (then the stage uses one window).
            ok = [m for m in range(2, max(grid) + 1) if all(g % min(m, g) == 0 for r in grids for g in r)]
            raise ValueError(
                f"stage {i}'s {res[0]}x{res[1]} feature grid is not divisible by window_size {window}; use a "
                f"window_size that tiles every stage grid {grids}, e.g. one of {ok}, or change img_size / "
                f"patch_size so that the window divides the grid"
            )


# ---------------------------------------------------------------------------------------------
# timm interoperability
# ---------------------------------------------------------------------------------------------
def timm_state_dict(model: SwinTransformer) -> Dict[str, torch.Tensor]:
    """State dict for ``timm.models.swin_transformer.SwinTransformer`` of the same config (timm 1.0.31).

    Key mapping (ours -> timm): identity except the classifier, ``head.{weight,bias}`` ->
    ``head.fc.{weight,bias}`` (timm wraps it in a ``ClassifierHead`` that also pools). Every other
    key is timm's: ``patch_embed.proj``, ``patch_embed.norm``; ``layers.{i}.downsample.norm`` and
    ``layers.{i}.downsample.reduction`` (no bias) for i > 0 (merging at the *start* of a stage;
    ``layers.0.downsample`` is an Identity); ``layers.{i}.blocks.{j}.norm1``, ``.attn.qkv`` (Q, K, V
    stacked in that order), ``.attn.relative_position_bias_table`` ((2M-1)^2, h), ``.attn.proj``,
    ``.norm2``, ``.mlp.fc1``, ``.mlp.fc2``; ``norm``. The buffers ``attn_mask`` and
    ``relative_position_index`` are non-persistent in both models, so neither state dict holds them:
    each model rebuilds them from its config (``tests/test_swin.py`` checks they are equal).
    """
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("head."):
            k = "head.fc." + k[len("head."):]
        out[k] = v.detach().clone()
    return out


def from_timm_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Inverse of :func:`timm_state_dict`: a timm Swin state dict with our key names."""
    return {("head." + k[len("head.fc."):] if k.startswith("head.fc.") else k): v for k, v in state_dict.items()}


def timm_kwargs(model: SwinTransformer) -> dict:
    """Keyword arguments that build timm's ``SwinTransformer`` with our model's architecture.

    Raises:
        ValueError: a model built with ``shifted_windows=False`` (timm's Swin always shifts).
    """
    c = dict(model.config)
    if not c["shifted_windows"]:
        raise ValueError("timm's SwinTransformer always shifts every second block's windows; build ours with "
                         "shifted_windows=True to compare it with timm")
    return dict(
        img_size=c["img_size"], patch_size=c["patch_size"], in_chans=c["in_chans"], num_classes=c["num_classes"],
        global_pool=c["global_pool"], embed_dim=c["embed_dim"], depths=tuple(c["depths"]),
        num_heads=tuple(c["num_heads"]), window_size=c["window_size"], mlp_ratio=c["mlp_ratio"],
        qkv_bias=c["qkv_bias"], drop_rate=c["drop_rate"], proj_drop_rate=c["proj_drop_rate"],
        attn_drop_rate=c["attn_drop_rate"], drop_path_rate=c["drop_path_rate"],
    )


def window_attention_to_grid(attn: torch.Tensor, block: SwinTransformerBlock, query: Tuple[int, int]) -> torch.Tensor:
    """One query token's window attention placed back onto the block's token grid.

    Args:
        attn: one image's attention of ``block``: (nW, h, N, N), e.g. ``model.get_attention_maps(x)[k][b]``.
        block: the block that produced it (its grid, window and shift).
        query: (row, col) of the query token in the block's grid, in image coordinates (before any roll).

    Shapes: returns (h, H, W); zero outside the query's window, each head's map sums to 1.
    """
    H, W = block.input_resolution
    dense = block.dense_attention(attn[None])[0]  # (h, N, N)
    return dense[:, query[0] * W + query[1]].reshape(-1, H, W)  # (h, H, W)
