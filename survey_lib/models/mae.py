"""Masked autoencoder (MAE) with a Vision Transformer encoder and a light transformer decoder.

He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022, arXiv:2111.06377.
Sec. 3 maps onto the code:

    "Masking"             -> :func:`random_masking` (per sample, argsort of noise; :func:`num_visible`)
    "MAE encoder"         -> ``forward_encoder``: a ViT (``survey_lib.models.vit.VisionTransformer``,
                             used by composition as ``self.encoder``) applied to the visible patches
                             only, plus the CLS token
    "MAE decoder"         -> ``forward_decoder``: a linear map to the decoder width, a shared learned
                             ``mask_token`` for every removed patch, fixed 2-D sin-cos position
                             embeddings (:func:`get_2d_sincos_pos_embed`), a few blocks, and a linear
                             layer to ``P * P * C`` pixels per patch
    "Reconstruction       -> not here: the model returns its prediction and the mask, and
    target"                  ``survey_lib.objectives.mae.MAELoss`` scores the removed patches, on
                             per-patch normalised pixels when the model's ``norm_pix_loss`` says so

After pre-training the decoder is thrown away; ``embed`` gives the encoder's features of the full,
unmasked image for probes (mean of the patch tokens by default, or the CLS token).

Parameter names follow MAE's ``models_mae.py`` for the decoder (``decoder_embed``, ``mask_token``,
``decoder_pos_embed``, ``decoder_blocks``, ``decoder_norm``, ``decoder_pred``) and timm for the
encoder, which is a plain :class:`~survey_lib.models.vit.VisionTransformer` with ``num_classes=0``:
``mae.encoder.state_dict()`` loads into a ViT classifier of the same size (``strict=False`` for the
new head) for fine-tuning.

Deviations from the paper:
    * the training presets (``survey_lib.recipes.mae``) are tiny (64-192 wide, patch 4, 1 channel);
      the paper's decoder is 8 blocks of width 512 behind ViT-L; ours is 1-4 blocks.
    * the number of visible patches is ``round(N * (1 - mask_ratio))`` with halves rounded up
      (:func:`num_visible`); MAE's code truncates with ``int(...)``, which gives the same count for
      ViT-B/16 at 75% (196 -> 49) but loses a patch to floating-point error in cases such as
      ``N=10, mask_ratio=0.9`` (``10 * (1 - 0.9) = 0.9999999999999998``). A ratio that keeps every
      patch visible (nothing to reconstruct) is an error here; MAE's code would divide 0 by 0.
    * the encoder's position embedding is also fixed sin-cos (as in MAE's code), stored in the ViT's
      ``pos_embed`` parameter with ``requires_grad=False``; ``fixed_pos_embed=False`` keeps it learned.
    * :func:`get_2d_sincos_pos_embed` puts the row (vertical) half of the channels first; MAE's
      ``util/pos_embed.py`` puts the column half first. A fixed permutation of channels: the same
      function class.
    * the presets use ``weight_init='vit'`` (the encoder keeps ``VisionTransformer``'s own
      truncated-normal initialisation, so "a random encoder" means the same thing in every notebook);
      the class default is MAE's Xavier initialisation. Measured on the digits: a random encoder with
      Xavier weights already gives a ~96-97% linear probe (as good as raw pixels), one with the ViT's
      init ~90%.
    * the probe feature defaults to the mean of the patch tokens after the encoder's final norm
      (the paper's linear probe uses the CLS token; its fine-tuning uses average pooling).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
from torch import nn

from ..layers import Block, _default_norm, to_2tuple
from .vit import VisionTransformer

__all__ = ["num_visible", "random_masking", "get_1d_sincos_pos_embed", "get_2d_sincos_pos_embed", "MaskedAutoencoderViT"]


# ---------------------------------------------------------------------------------------------
# Masking (Sec. 3 "Masking" and "Simple implementation")
# ---------------------------------------------------------------------------------------------
def num_visible(num_patches: int, mask_ratio: float) -> int:
    """How many of ``num_patches`` patches stay visible: ``round(N * (1 - mask_ratio))``, halves up.

    Rounding rule: the nearest integer, with an exact half rounded up (``floor(v + 0.5)``), so
    ``N=64, mask_ratio=0.75 -> 16`` and ``N=6, mask_ratio=0.25 -> 5`` (4.5 rounds up).

    Raises:
        ValueError: if ``mask_ratio`` is not strictly between 0 and 1, or the count leaves no visible
            patch (nothing for the encoder to see) or no masked patch (nothing to reconstruct).
    """
    ratio = float(mask_ratio)
    if not 0.0 < ratio < 1.0:  # also rejects NaN
        raise ValueError(
            f"mask_ratio must be strictly between 0 and 1 (the fraction of patches removed), got {mask_ratio}; "
            f"MAE uses 0.75"
        )
    keep = int(math.floor(num_patches * (1.0 - ratio) + 0.5))
    if keep < 1:
        raise ValueError(
            f"mask_ratio {mask_ratio} leaves no visible patch out of N={num_patches} "
            f"(round({num_patches} * {1 - ratio:.3g}) = 0); use mask_ratio <= {1 - 0.5 / num_patches:.3f} "
            f"or a smaller patch_size"
        )
    if keep >= num_patches:
        raise ValueError(
            f"mask_ratio {mask_ratio} masks no patch out of N={num_patches} "
            f"(round({num_patches} * {1 - ratio:.3g}) = {keep}), so there is nothing to reconstruct; "
            f"use mask_ratio >= {0.5 / num_patches:.3f}"
        )
    return keep


def random_masking(
    x: torch.Tensor, mask_ratio: float, generator: Optional[torch.Generator] = None
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a random subset of tokens per sample, by sorting uniform noise (MAE Sec. 3).

    Each sample draws N uniform numbers; ``argsort`` turns them into a random permutation
    ``ids_shuffle`` (a uniform random shuffle, independent per sample); the first ``N_vis`` indices
    of that permutation are kept. ``ids_restore = argsort(ids_shuffle)`` is the inverse permutation:
    ``shuffled.gather(1, ids_restore) == original`` for any tensor ordered like ``ids_shuffle``, which
    is how the decoder puts visible tokens and mask tokens back in grid order.

    Args:
        x: tokens (patch embeddings with their position embedding already added).
        mask_ratio: fraction of tokens removed, strictly between 0 and 1.
        generator: optional ``torch.Generator`` for reproducible masks.

    Shapes:
        x: (B, N, D).
        returns x_visible (B, N_vis, D) with ``N_vis = num_visible(N, mask_ratio)``, in the order of
        ``ids_keep``; mask (B, N) float, 1 = removed, 0 = kept, in grid order; ids_restore (B, N)
        long; ids_keep (B, N_vis) long, the grid indices of the visible tokens.

    Raises:
        ValueError: see :func:`num_visible`; or ``x`` is not 3-D.

    Source: He et al. 2022, arXiv:2111.06377, Sec. 3 "Simple implementation".
    """
    if x.ndim != 3:
        raise ValueError(f"random_masking expects tokens (B, N, D), got shape {tuple(x.shape)}")
    B, N, D = x.shape
    keep = num_visible(N, mask_ratio)
    if generator is None:
        noise = torch.rand(B, N, device=x.device)  # (B, N) uniform in [0, 1)
    else:
        noise = torch.rand(B, N, generator=generator, device=generator.device).to(x.device)  # (B, N)
    ids_shuffle = noise.argsort(dim=1)  # (B, N): a random permutation per sample; small noise = kept
    ids_restore = ids_shuffle.argsort(dim=1)  # (B, N): the inverse permutation
    ids_keep = ids_shuffle[:, :keep]  # (B, N_vis)
    x_visible = x.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, D))  # (B, N_vis, D)
    # Mask in shuffled order is [0]*keep + [1]*(N-keep); unshuffle it to grid order.
    mask = torch.ones(B, N, device=x.device, dtype=x.dtype)
    mask[:, :keep] = 0
    mask = mask.gather(1, ids_restore)  # (B, N), 1 = removed
    return x_visible, mask, ids_restore, ids_keep



# ---------------------------------------------------------------------------------------------
# Fixed 2-D sine-cosine position embedding (Vaswani et al. 2017 Sec. 3.5, extended to a grid)
# ---------------------------------------------------------------------------------------------
def get_1d_sincos_pos_embed(embed_dim: int, positions: torch.Tensor, temperature: float = 10000.0) -> torch.Tensor:
    """Transformer sine-cosine embedding of scalar positions.

    For ``k = 0 .. embed_dim/2 - 1`` the frequency is ``omega_k = temperature ** (-k / (embed_dim/2))``
    (from 1 down to about ``1 / temperature``) and position ``p`` maps to
    ``[sin(p * omega_0), ..., sin(p * omega_{K-1}), cos(p * omega_0), ..., cos(p * omega_{K-1})]``.
    Because ``sin a sin b + cos a cos b = cos(a - b)``, the dot product of two embeddings
    ``sum_k cos((p - p') * omega_k)`` depends only on the offset ``p - p'``.

    Shapes: positions (M,) -> (M, embed_dim).

    Raises:
        ValueError: if ``embed_dim`` is odd.
    """
    if embed_dim % 2 != 0:
        raise ValueError(f"a 1-D sin-cos embedding needs an even embed_dim, got {embed_dim}")
    half = embed_dim // 2
    omega = temperature ** (-torch.arange(half, dtype=torch.float64) / half)  # (D/2,)
    angles = positions.to(torch.float64)[:, None] * omega[None, :]  # (M, D/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()  # (M, D)


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: Union[int, Tuple[int, int]], cls_token: bool = False,
                            temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding of a patch grid (MAE Sec. 3, "MAE decoder").

    Half of the channels encode the patch's row ``i``, the other half its column ``j``, each with the
    1-D embedding of :func:`get_1d_sincos_pos_embed`:

        pe[n] = [ sincos_{D/2}(i) , sincos_{D/2}(j) ],   n = i * gw + j (patchify's row-major order)

    so ``<pe[i, j], pe[i', j']> = sum_k cos((i - i') w_k) + cos((j - j') w_k)`` depends only on the
    2-D offset. Nothing is learned; the decoder can be given any grid size. With ``cls_token`` a row
    of zeros is prepended for the CLS token (it has no position).

    Args:
        embed_dim: D, divisible by 4 (sin and cos for each of two axes).
        grid_size: (gh, gw) or an int for a square grid.
        cls_token: prepend a zero row.
        temperature: the longest wavelength is ``2 pi temperature`` (10,000 as in the Transformer).

    Shapes: returns (gh * gw, D), or (1 + gh * gw, D) with ``cls_token``.

    Raises:
        ValueError: if ``embed_dim`` is not divisible by 4.
    """
    if embed_dim % 4 != 0:
        raise ValueError(f"a 2-D sin-cos embedding needs embed_dim divisible by 4 (sin, cos for rows and "
                         f"columns), got {embed_dim}; use {4 * max(1, round(embed_dim / 4))}")
    gh, gw = to_2tuple(grid_size)
    rows = torch.arange(gh).repeat_interleave(gw)  # (gh*gw,): i of token n = i * gw + j
    cols = torch.arange(gw).repeat(gh)  # (gh*gw,): j
    pe = torch.cat([get_1d_sincos_pos_embed(embed_dim // 2, rows, temperature),
                    get_1d_sincos_pos_embed(embed_dim // 2, cols, temperature)], dim=1)  # (gh*gw, D)
    if cls_token:
        pe = torch.cat([torch.zeros(1, embed_dim), pe], dim=0)  # (1 + gh*gw, D)
    return pe


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------
class MaskedAutoencoderViT(nn.Module):
    """MAE: ViT encoder on the visible patches, light decoder with mask tokens, pixel targets.

    Args:
        img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio, qkv_bias,
            drop_path_rate: the encoder, a :class:`~survey_lib.models.vit.VisionTransformer`
            (defaults: ViT-B/16, MAE's ``mae_vit_base_patch16``).
        decoder_embed_dim, decoder_depth, decoder_num_heads: the decoder (MAE: 512, 8, 16).
        decoder_mlp_ratio: MLP width of the decoder blocks / ``decoder_embed_dim`` (default ``mlp_ratio``).
        mask_ratio: default fraction of patches removed (MAE: 0.75).
        norm_pix_loss: the decoder is trained to predict each patch normalised by its own mean and
            variance (MAE's ``norm_pix_loss``); the objective reads this attribute to build its targets
            (``survey_lib.objectives.mae.patch_targets``) and figures to map predictions back.
        global_pool: feature returned by :meth:`embed`: ``'avg'`` (mean of patch tokens) or ``'token'`` (CLS).
        fixed_pos_embed: sin-cos, frozen encoder position embedding (MAE) instead of a learned one.
        weight_init: ``'mae'`` (Xavier-uniform Linear layers, MAE's code) or ``'vit'`` (truncated
            normal, std 0.02: the encoder keeps ``VisionTransformer``'s own initialisation and the
            decoder gets the same). The choice changes what a *random* encoder is worth in a probe.

    Shapes:
        forward: imgs (B, C, H, W) -> pred (B, N, P * P * C) in ``patchify`` order for every patch
        (visible ones included, but only removed ones are trained), mask (B, N), 1 = removed.
        embed: (B, C, H, W) -> (B, D).

    Raises:
        ValueError: bad sizes (from the ViT and ``Attention``), ``decoder_embed_dim`` not divisible by
            4 (sin-cos), unknown ``global_pool``, a mask ratio outside (0, 1) or one that leaves no
            visible patch (in ``forward``).

    Source: He et al. 2022, arXiv:2111.06377, Sec. 3 and Fig. 1.
    """

    def __init__(
        self,
        img_size: Union[int, Tuple[int, int]] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        decoder_mlp_ratio: Optional[float] = None,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = False,
        global_pool: str = "avg",
        fixed_pos_embed: bool = True,
        weight_init: str = "mae",
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if global_pool not in ("avg", "token"):
            raise ValueError(f"global_pool must be 'avg' (mean of patch tokens) or 'token' (CLS), got {global_pool!r}")
        if weight_init not in ("mae", "vit"):
            raise ValueError(f"weight_init must be 'mae' (Xavier) or 'vit' (truncated normal), got {weight_init!r}")
        if decoder_embed_dim % 4 != 0:
            raise ValueError(f"decoder_embed_dim must be divisible by 4 for the 2-D sin-cos embedding, got {decoder_embed_dim}")
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.global_pool = global_pool
        self.patch_size = to_2tuple(patch_size)
        if self.patch_size[0] != self.patch_size[1]:
            raise ValueError(f"MAE here uses square patches, got patch_size {patch_size}")
        self.in_chans = in_chans
        self.config = dict(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, mlp_ratio=mlp_ratio, decoder_embed_dim=decoder_embed_dim,
            decoder_depth=decoder_depth, decoder_num_heads=decoder_num_heads, decoder_mlp_ratio=decoder_mlp_ratio,
            mask_ratio=mask_ratio, norm_pix_loss=norm_pix_loss, global_pool=global_pool,
            fixed_pos_embed=fixed_pos_embed, weight_init=weight_init, qkv_bias=qkv_bias,
        )

        # Encoder: a plain ViT without a head. global_pool='token' keeps its final LayerNorm on every
        # token (the decoder reads all of them); embed() does its own pooling.
        self.encoder = VisionTransformer(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=0, global_pool="token",
            embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
            drop_path_rate=drop_path_rate,
        )
        grid = self.encoder.patch_embed.grid_size
        self.grid_size = grid
        self.num_patches = grid[0] * grid[1]
        if fixed_pos_embed:
            if embed_dim % 4 != 0:
                raise ValueError(f"fixed_pos_embed needs embed_dim divisible by 4, got {embed_dim}; "
                                 f"pass fixed_pos_embed=False for a learned embedding")
            self.encoder.pos_embed.requires_grad_(False)

        # Decoder: width change, mask token, fixed position embedding, blocks, pixel prediction.
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.register_buffer(
            "decoder_pos_embed", get_2d_sincos_pos_embed(decoder_embed_dim, grid, cls_token=True)[None]
        )  # (1, 1 + N, D_dec), fixed: a buffer, never optimised
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_embed_dim, decoder_num_heads, decoder_mlp_ratio or mlp_ratio, qkv_bias=qkv_bias)
            for _ in range(decoder_depth)
        )
        self.decoder_norm = _default_norm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, self.patch_size[0] * self.patch_size[1] * in_chans)
        self.init_weights(weight_init, fixed_pos_embed)

    # -- initialisation ------------------------------------------------------------------------
    def init_weights(self, weight_init: str = "mae", fixed_pos_embed: bool = True) -> None:
        """Initialise every weight.

        ``'mae'`` (MAE's ``initialize_weights``): Xavier-uniform for every Linear (the patch
        projection treated as a Linear on flattened patches), zero biases, N(0, 0.02) for the CLS
        token. ``'vit'``: truncated normal (std 0.02) for every Linear, zero biases, the patch
        projection left at PyTorch's default, N(0, 1e-6) for the CLS token (timm's ViT, the same as
        ``VisionTransformer.init_weights``). Both: N(0, 0.02) for the mask token, LayerNorm 1 / 0,
        and sin-cos position embeddings when ``fixed_pos_embed``.
        """
        if weight_init == "vit":
            self.encoder.init_weights()
        for m in self.modules():
            if isinstance(m, nn.Linear):
                if weight_init == "mae":
                    nn.init.xavier_uniform_(m.weight)
                else:
                    nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if weight_init == "mae":
            w = self.encoder.patch_embed.proj.weight  # (D, C, P, P)
            nn.init.xavier_uniform_(w.data.view(w.shape[0], -1))  # as a Linear (D, C*P*P)
            nn.init.normal_(self.encoder.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        if fixed_pos_embed:
            with torch.no_grad():
                pe = get_2d_sincos_pos_embed(self.encoder.embed_dim, self.grid_size, cls_token=True)  # (1 + N, D)
                self.encoder.pos_embed.copy_(pe[None])

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Tokens and position embeddings are not decayed (names matched by their last component)."""
        return {"pos_embed", "cls_token", "mask_token"}

    # -- Sec. 3 "MAE encoder" ------------------------------------------------------------------
    def forward_encoder(self, imgs: torch.Tensor, mask_ratio: Optional[float] = None,
                        generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embed all patches, drop a random ``mask_ratio`` of them, run the ViT on the rest.

        The removed patches never enter the encoder, so its cost scales with the visible fraction.

        Shapes:
            imgs (B, C, H, W) -> latent (B, 1 + N_vis, D) (CLS first, after the final norm),
            mask (B, N), ids_restore (B, N).

        Raises:
            ValueError: a mask ratio outside (0, 1) or leaving no visible patch; an image size other
                than ``img_size`` (the decoder's fixed grid).
        """
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        enc = self.encoder
        grid = enc.patch_embed.dynamic_grid_size(tuple(imgs.shape[-2:]))
        if grid != self.grid_size:
            raise ValueError(f"MAE pre-training expects {enc.patch_embed.img_size} images (grid {self.grid_size}), "
                             f"got {tuple(imgs.shape[-2:])}; embed() accepts other sizes")
        x = enc.patch_embed(imgs)  # (B, N, D)
        x = x + enc.pos_embed[:, enc.num_prefix_tokens:]  # (B, N, D): positions added before masking
        x, mask, ids_restore, _ = random_masking(x, ratio, generator)  # x: (B, N_vis, D)
        cls = enc.cls_token + enc.pos_embed[:, :enc.num_prefix_tokens]  # (1, 1, D)
        x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N_vis, D)
        x = enc.norm_pre(enc.pos_drop(x))  # (B, 1 + N_vis, D); norm_pre: the identity unless pre_norm=True
        for blk in enc.blocks:
            x = blk(x)
        return enc.norm(x), mask, ids_restore

    # -- Sec. 3 "MAE decoder" ------------------------------------------------------------------
    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Append one mask token per removed patch, unshuffle to grid order, add the fixed position
        embedding, and predict every patch's pixels.

        Shapes: latent (B, 1 + N_vis, D), ids_restore (B, N) -> pred (B, N, P * P * C).
        """
        x = self.decoder_embed(latent)  # (B, 1 + N_vis, D_dec)
        B, n_vis1, Dd = x.shape
        N = ids_restore.shape[1]
        mask_tokens = self.mask_token.expand(B, N + 1 - n_vis1, -1)  # (B, N - N_vis, D_dec)
        x_ = torch.cat([x[:, 1:], mask_tokens], dim=1)  # (B, N, D_dec): visible first = shuffled order
        x_ = x_.gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, Dd))  # (B, N, D_dec): grid order
        x = torch.cat([x[:, :1], x_], dim=1)  # (B, 1 + N, D_dec): CLS back in front
        x = x + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_pred(self.decoder_norm(x))  # (B, 1 + N, P*P*C)
        return x[:, 1:]  # (B, N, P*P*C): drop the CLS token

    def forward(self, imgs: torch.Tensor, mask_ratio: Optional[float] = None,
                generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Mask, encode, decode: the prediction of every patch and which patches were removed.

        The loss is the objective's (``survey_lib.objectives.mae.MAELoss``), not the model's.

        Args:
            imgs: a batch of images.
            mask_ratio: fraction removed (default ``self.mask_ratio``).
            generator: optional ``torch.Generator`` for a reproducible mask.

        Shapes: imgs (B, C, H, W) -> pred (B, N, P * P * C), mask (B, N).
        """
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, generator)
        return self.forward_decoder(latent, ids_restore), mask

    # -- probes ----------------------------------------------------------------------------------
    def embed(self, x: torch.Tensor, pool: Optional[str] = None) -> torch.Tensor:
        """Encoder feature of the full, unmasked image, for k-NN and linear probes.

        Args:
            pool: ``'avg'`` (mean of the patch tokens after the final norm) or ``'token'`` (the CLS
                token); default ``self.global_pool``.

        Shapes: (B, C, H, W) -> (B, D).

        Raises:
            ValueError: unknown ``pool``.
        """
        pool = pool or self.global_pool
        if pool not in ("avg", "token"):
            raise ValueError(f"pool must be 'avg' or 'token', got {pool!r}")
        tokens = self.encoder.forward_features(x)  # (B, 1 + N, D), all patches, no masking
        return tokens[:, 1:].mean(dim=1) if pool == "avg" else tokens[:, 0]  # (B, D)
