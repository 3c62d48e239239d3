"""Shared building blocks of every transformer in the survey.

Letter convention (used in every shape comment of this package):

    B       batch size
    N       number of tokens (patches, plus prefix tokens where stated)
    C / D   channels of an image / embedding width of a token (``embed_dim``)
    h       attention heads (``num_heads``);  d_head = D // h
    H x W   image height x width in pixels, or a token grid where stated
    P       patch size (``patch_size``);  (H/P) x (W/P) = grid_size
    K       classes or prototypes

Names follow timm (``embed_dim``, ``num_heads``, ``patch_size``, ``in_chans``, ``mlp_ratio``,
``qkv_bias``, ``drop_path_rate``; submodules ``qkv``, ``proj``, ``norm1``, ``norm2``, ``mlp.fc1``,
``mlp.fc2``, ``ls1.gamma``) so that a state dict maps one-to-one onto timm's and a student can diff
this file against ``timm/layers``.

Sources:
    Vaswani et al. 2017, "Attention Is All You Need", arXiv:1706.03762 (Eq. 1, multi-head attention).
    Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words", arXiv:2010.11929 (Eq. 1-4).
    Huang et al. 2016, "Deep Networks with Stochastic Depth", arXiv:1603.09382 (drop path).
    Touvron et al. 2021, "Going deeper with Image Transformers" (CaiT), arXiv:2103.17239 (LayerScale).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "to_2tuple",
    "patchify",
    "unpatchify",
    "PatchEmbed",
    "attend",
    "AttentionLayout",
    "Attention",
    "Mlp",
    "DropPath",
    "LayerScale",
    "QuickGELU",
    "ACT_LAYERS",
    "get_act_layer",
    "Block",
]


def to_2tuple(x: Union[int, Tuple[int, int]]) -> Tuple[int, int]:
    """Return ``(x, x)`` for an int and ``tuple(x)`` for a pair."""
    if isinstance(x, (tuple, list)):
        if len(x) != 2:
            raise ValueError(f"expected an int or a pair, got {x!r}")
        return int(x[0]), int(x[1])
    return int(x), int(x)


def _check_divisible(img_size: Tuple[int, int], patch_size: Tuple[int, int]) -> None:
    for side, s, p in (("height", img_size[0], patch_size[0]), ("width", img_size[1], patch_size[1])):
        if s % p != 0:
            lower, upper = (s // p) * p, (s // p + 1) * p
            raise ValueError(
                f"image {side} {s} is not divisible by patch_size {p}; "
                f"resize the image to {lower or upper} or {upper}, or pick a patch_size that divides {s}"
            )


# ---------------------------------------------------------------------------------------------
# patchify / unpatchify: the one definition of the patch-vector order used everywhere
# ---------------------------------------------------------------------------------------------
def patchify(imgs: torch.Tensor, patch_size: Union[int, Tuple[int, int]]) -> torch.Tensor:
    """Cut images into non-overlapping patches and flatten each patch.

    The patch vector is ordered ``(p, q, c)``: row inside the patch, column inside the patch,
    channel last, i.e. ``patch[(p * P_w + q) * C + c] = img[c, i * P_h + p, j * P_w + q]``. This is
    the order of MAE's reconstruction targets (He et al. 2022, arXiv:2111.06377, ``models_mae.py``).
    Patches are numbered row-major over the grid: token ``n = i * (W / P_w) + j``.

    Note: ``PatchEmbed``'s convolution is a linear map of the same pixels, but its weight is laid
    out ``(D, C, P_h, P_w)``, i.e. in ``(c, p, q)`` order; ``PatchEmbed`` does not use this function.

    Shapes:
        imgs: (B, C, H, W), H and W divisible by the patch size.
        returns: (B, N, P_h * P_w * C) with N = (H / P_h) * (W / P_w).

    Raises:
        ValueError: if ``imgs`` is not 4-D or H, W are not divisible by the patch size.
    """
    if imgs.ndim != 4:
        raise ValueError(f"patchify expects (B, C, H, W) images, got shape {tuple(imgs.shape)}")
    ph, pw = to_2tuple(patch_size)
    B, C, H, W = imgs.shape
    _check_divisible((H, W), (ph, pw))
    gh, gw = H // ph, W // pw
    x = imgs.reshape(B, C, gh, ph, gw, pw)  # (B, C, gh, P_h, gw, P_w)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, P_h, P_w, C)
    return x.reshape(B, gh * gw, ph * pw * C)  # (B, N, P_h * P_w * C)


def unpatchify(
    x: torch.Tensor,
    patch_size: Union[int, Tuple[int, int]],
    grid_size: Optional[Tuple[int, int]] = None,
    in_chans: Optional[int] = None,
) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``unpatchify(patchify(x, P), P) == x`` exactly.

    Shapes:
        x: (B, N, P_h * P_w * C), patch vectors in ``(p, q, c)`` order.
        grid_size: (H / P_h, W / P_w); default: a square grid, which requires N to be a square.
        returns: (B, C, H, W).

    Raises:
        ValueError: if the sizes do not fit together.
    """
    if x.ndim != 3:
        raise ValueError(f"unpatchify expects (B, N, P*P*C) patch vectors, got shape {tuple(x.shape)}")
    ph, pw = to_2tuple(patch_size)
    B, N, L = x.shape
    if grid_size is None:
        g = int(round(N**0.5))
        if g * g != N:
            raise ValueError(f"{N} patches do not form a square grid; pass grid_size=(rows, cols)")
        grid_size = (g, g)
    gh, gw = grid_size
    if gh * gw != N:
        raise ValueError(f"grid_size {grid_size} holds {gh * gw} patches, but x has N={N}")
    C = in_chans if in_chans is not None else L // (ph * pw)
    if C * ph * pw != L:
        raise ValueError(f"patch vector length {L} != P_h*P_w*C = {ph}*{pw}*{C}")
    x = x.reshape(B, gh, gw, ph, pw, C)  # (B, gh, gw, P_h, P_w, C)
    x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C, gh, P_h, gw, P_w)
    return x.reshape(B, C, gh * ph, gw * pw)  # (B, C, H, W)


# ---------------------------------------------------------------------------------------------
# Patch embedding (ViT Eq. 1: z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos)
# ---------------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    """Split an image into P x P patches and project each to ``embed_dim`` (ViT Eq. 1, the ``x_p E`` term).

    A convolution with kernel = stride = P is exactly a linear map applied to every flattened
    patch, and it is how timm, DeiT and MAE implement it.

    Args:
        img_size: nominal input size (H, W); inputs of another size are accepted when divisible by
            ``patch_size`` (the model then interpolates its position embedding).
        patch_size: P.
        in_chans: C.
        embed_dim: D.
        norm_layer: optional normalisation applied to the tokens (identity by default).

    Shapes:
        x: (B, C, H, W) -> (B, N, D), N = (H/P) * (W/P), tokens in row-major grid order.

    Raises:
        ValueError: if ``img_size`` (or an input's size) is not divisible by ``patch_size``, or the
            input has the wrong number of channels.
    """

    def __init__(
        self,
        img_size: Union[int, Tuple[int, int]] = 224,
        patch_size: Union[int, Tuple[int, int]] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        norm_layer: Optional[type] = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.img_size = to_2tuple(img_size)
        self.patch_size = to_2tuple(patch_size)
        _check_divisible(self.img_size, self.patch_size)
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.in_chans = in_chans
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size, bias=bias)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def dynamic_grid_size(self, img_size: Tuple[int, int]) -> Tuple[int, int]:
        """Token grid for an input of ``img_size`` (H, W); raises ValueError if not divisible."""
        _check_divisible(img_size, self.patch_size)
        return img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"PatchEmbed expects (B, {self.in_chans}, H, W) images, got shape {tuple(x.shape)}"
            )
        self.dynamic_grid_size((x.shape[2], x.shape[3]))
        x = self.proj(x)  # (B, D, H/P, W/P)
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        return self.norm(x)


# ---------------------------------------------------------------------------------------------
# Multi-head self-attention (Vaswani Eq. 1; ViT Eq. 2 "MSA")
# ---------------------------------------------------------------------------------------------
def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    dropout_p: float = 0.0,
    explicit: bool = False,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``softmax(Q K^T / sqrt(d_head) + bias) V`` per head: the one attention core of the package.

    Every attention module (:class:`Attention`, Swin's window attention, CLIP's causal text
    attention through :class:`Block`) calls this function, so the fused and the explicit path are
    written once:

    * fused (``explicit=False``): ``torch.nn.functional.scaled_dot_product_attention``, fast and
      memory-lean, which never materialises the attention matrix (``weights`` is None);
    * explicit (``explicit=True``): the textbook formula, returning the post-softmax, pre-dropout
      weights so they can be drawn. ``tests/test_layers.py`` checks both paths agree, forward and
      backward.

    Args:
        q, k, v: queries (not pre-scaled), keys and values per head.
        bias: optional additive term (a mask with ``-inf``/``-100`` entries, a relative position
            bias, or both summed), broadcastable to (B, h, N, M).
        dropout_p: dropout on the attention weights; pass 0 in eval mode.
        explicit: run the textbook formula and return the weights.

    Shapes:
        q (B, h, N, d_head), k and v (B, h, M, d_head) -> out (B, h, N, d_head) and weights
        (B, h, N, M) (rows sum to 1) or None.

    Source: Vaswani et al. 2017, arXiv:1706.03762, Eq. 1 and Sec. 3.2.2.
    """
    if not explicit:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p), None
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, h, N, M) scaled scores
    if bias is not None:
        attn = attn + bias
    attn = attn.softmax(dim=-1)  # rows sum to 1
    out = (F.dropout(attn, dropout_p) if dropout_p > 0 else attn) @ v  # (B, h, N, d_head)
    return out, attn


class AttentionLayout(NamedTuple):
    """Where one block's dense attention map lives (the attention-map contract of every model).

    Every attention model of the package (ViT, DeiT, Swin, NAT) has ``get_attention_maps(x,
    dense=True)``, a list with one (B, h, N, N) tensor per block, and ``attention_layout(img_size)``,
    one :class:`AttentionLayout` per block saying how to read it: token ``num_prefix_tokens + i * gw
    + j`` is the patch at row i, column j of ``grid_size = (gh, gw)`` (image positions, row-major),
    the first ``num_prefix_tokens`` tokens are CLS / distillation tokens, and ``stage`` numbers the
    resolution levels (0 for a ViT; Swin's stages, NAT's levels). Local attention (windows,
    neighbourhoods) is zero outside each query's window.
    """

    stage: int
    grid_size: Tuple[int, int]
    num_prefix_tokens: int


class Attention(nn.Module):
    """Multi-head self-attention: ``softmax(Q K^T / sqrt(d_head)) V`` per head, then a projection.

    The Q, K, V projection (``qkv``, one Linear for all three), the heads and the output projection
    (``proj``) are set up here once; Swin's window attention and NAT's neighbourhood attention
    subclass this module and change only which keys each query sees. The attention itself is
    :func:`attend` (fused, or explicit with ``return_attention=True``).

    Args:
        dim: D, the token width.
        num_heads: h; ``dim`` must be divisible by it.
        qkv_bias: bias on the joint Q, K, V projection (timm default True).
        qk_norm: LayerNorm on queries and keys per head (off in the original ViT).
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection.

    Shapes:
        x: (B, N, D) -> (B, N, D); with ``return_attention=True`` also attn (B, h, N, N), rows
        summing to 1. ``attn_mask`` (optional) is additive, broadcastable to (B, h, N, N).

    Raises:
        ValueError: if ``dim`` is not divisible by ``num_heads``.

    Source: Vaswani et al. 2017, arXiv:1706.03762, Eq. 1 and Sec. 3.2.2.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if num_heads <= 0 or dim % num_heads != 0:
            divisors = [h for h in range(1, min(dim, 16) + 1) if dim % h == 0]
            raise ValueError(
                f"embed_dim {dim} is not divisible by num_heads {num_heads}; "
                f"use num_heads in {divisors} or change embed_dim"
            )
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = _default_norm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = _default_norm(self.head_dim) if qk_norm else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def dropout_p(self) -> float:
        """The attention-weight dropout of this step: ``attn_drop.p`` in training, 0 in eval."""
        return self.attn_drop.p if self.training else 0.0

    def forward(
        self,
        x: torch.Tensor,
        return_attention: bool = False,
        attn_mask: Optional[torch.Tensor] = None,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)  # (B, N, 3, h, d_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, h, N, d_head)
        q, k = self.q_norm(q), self.k_norm(k)
        x, weights = attend(q, k, v, attn_mask, self.dropout_p(), explicit=return_attention)  # (B, h, N, d_head)
        x = x.transpose(1, 2).reshape(B, N, D)  # (B, N, D): heads concatenated
        x = self.proj_drop(self.proj(x))
        return (x, weights) if return_attention else x


class Mlp(nn.Module):
    """The transformer's position-wise feed-forward network: Linear, GELU, Linear (ViT Eq. 3).

    Shapes: (..., in_features) -> (..., out_features).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: Optional[int] = None,
        out_features: Optional[int] = None,
        act_layer: type = nn.GELU,
        drop: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability ``drop_prob``.

    Surviving samples are scaled by ``1 / (1 - drop_prob)`` so the expectation is unchanged; in eval
    mode this is the identity. Source: Huang et al. 2016, arXiv:1603.09382.

    Shapes: (B, ...) -> (B, ...).
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # (B, 1, ...)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class LayerScale(nn.Module):
    """Per-channel learnable scale of a residual branch, ``diag(gamma) x`` (CaiT, arXiv:2103.17239 Sec. 3).

    Shapes: (..., D) -> (..., D).
    """

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``, the sigmoid approximation of GELU that OpenAI's CLIP was trained with.

    open_clip builds it when ``quick_gelu=True`` (needed to load OpenAI's weights); otherwise open_clip,
    timm and this package use the exact GELU ``x * Phi(x)`` (``nn.GELU``). The two differ by up to
    about 0.02 (near x = +-2).

    Shapes: any -> same.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


#: Activation names accepted by the models' ``act_layer`` option (names, not classes, so that a
#: model's ``config`` stays plain data and a checkpoint stays loadable with ``weights_only=True``).
ACT_LAYERS = {"gelu": nn.GELU, "quick_gelu": QuickGELU}


def get_act_layer(name: str) -> type:
    """The activation class of ``name`` (``"gelu"``: exact GELU; ``"quick_gelu"``: :class:`QuickGELU`).

    Raises:
        ValueError: an unknown name.
    """
    if name not in ACT_LAYERS:
        raise ValueError(f"act_layer must be one of {sorted(ACT_LAYERS)}, got {name!r}")
    return ACT_LAYERS[name]


class Block(nn.Module):
    """Pre-norm transformer encoder block (ViT Eq. 2-3).

    ``x = x + DropPath(LS1(MSA(LN(x))))`` then ``x = x + DropPath(LS2(MLP(LN(x))))``; LayerScale
    (``init_values``) and drop path are off by default, as in the original ViT.

    Args:
        dim: D.  num_heads: h.  mlp_ratio: hidden width of the MLP as a multiple of D.
        qkv_bias, qk_norm, attn_drop, proj_drop: see :class:`Attention`.
        init_values: LayerScale initial value, or None for no LayerScale.
        drop_path: stochastic-depth probability of this block.
        norm_layer: normalisation (timm's ViT: LayerNorm with eps 1e-6).

    Shapes:
        x: (B, N, D) -> (B, N, D); with ``return_attention=True`` also (B, h, N, N).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        init_values: Optional[float] = None,
        drop_path: float = 0.0,
        act_layer: type = nn.GELU,
        norm_layer: Optional[type] = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or _default_norm
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, qk_norm=qk_norm, attn_drop=attn_drop, proj_drop=proj_drop)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(
        self, x: torch.Tensor, return_attention: bool = False, attn_mask: Optional[torch.Tensor] = None
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        if return_attention:
            y, attn = self.attn(self.norm1(x), return_attention=True, attn_mask=attn_mask)
        else:
            y = self.attn(self.norm1(x), attn_mask=attn_mask)
        x = x + self.drop_path1(self.ls1(y))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return (x, attn) if return_attention else x


def _default_norm(dim: int) -> nn.LayerNorm:
    """LayerNorm with eps 1e-6, timm's ViT default (PyTorch's default is 1e-5)."""
    return nn.LayerNorm(dim, eps=1e-6)
