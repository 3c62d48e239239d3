"""Vision Transformer (ViT).

Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words: Transformers for Image Recognition at
Scale", ICLR 2021, arXiv:2010.11929. The four equations of Sec. 3.1 map onto the code:

    Eq. 1  z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos   -> ``PatchEmbed``, ``cls_token``, ``pos_embed``
    Eq. 2  z'_l = MSA(LN(z_{l-1})) + z_{l-1}                  -> ``Block.attn`` (survey_lib.layers)
    Eq. 3  z_l = MLP(LN(z'_l)) + z'_l                         -> ``Block.mlp``
    Eq. 4  y = LN(z_L^0)                                      -> ``norm`` then ``head`` on the CLS token

Parameter names are timm's (``timm.models.vision_transformer.VisionTransformer``), so a state dict
loads into timm unchanged; :func:`timm_state_dict` documents the (identity) key mapping and
``tests/test_vit.py`` proves equality of logits to 1e-5.

Deviations from the paper (CPU-sized defaults only; the architecture is the paper's):
    * the training presets (``survey_lib.recipes.vit``) are tiny (64-192 wide) for small grey
      images; ViT-B/16 is ``VisionTransformer()`` with the defaults.
    * the classifier head is a single linear layer (the paper uses an MLP with one hidden layer
      during pre-training and a linear layer for fine-tuning).
    * the position embedding is interpolated bicubically for other input sizes (Sec. 3.2,
      "Fine-tuning and higher resolution"), as in timm and DINO.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import AttentionLayout, Block, PatchEmbed, _default_norm, to_2tuple

__all__ = ["VisionTransformer", "resample_pos_embed", "timm_state_dict", "timm_kwargs"]


def resample_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: Tuple[int, int],
    old_grid: Tuple[int, int],
    num_prefix_tokens: int = 1,
    mode: str = "bicubic",
) -> torch.Tensor:
    """Interpolate a learned position embedding to another patch grid (ViT Sec. 3.2).

    The prefix tokens (CLS, distillation) keep their embeddings; the patch embeddings are treated
    as a (D, gh, gw) image and resized.

    Shapes:
        pos_embed: (1, num_prefix_tokens + gh*gw, D) -> (1, num_prefix_tokens + nh*nw, D).
    """
    if tuple(new_grid) == tuple(old_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]  # (1, p, D), (1, gh*gw, D)
    D = grid.shape[-1]
    grid = grid.reshape(1, old_grid[0], old_grid[1], D).permute(0, 3, 1, 2)  # (1, D, gh, gw)
    grid = F.interpolate(grid.float(), size=new_grid, mode=mode, align_corners=False).to(pos_embed.dtype)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], D)  # (1, nh*nw, D)
    return torch.cat([prefix, grid], dim=1)


class VisionTransformer(nn.Module):
    """ViT classifier with a CLS token and a learned 1-D position embedding.

    Args:
        img_size: nominal input size; other sizes divisible by ``patch_size`` are accepted and the
            position embedding is interpolated.
        patch_size: P.  in_chans: C.  num_classes: K (0 for no head: ``forward`` returns features).
        global_pool: ``'token'`` classifies the CLS token (paper Eq. 4); ``'avg'`` averages the patch
            tokens (then, as in timm, the final norm is applied after pooling as ``fc_norm``).
        embed_dim: D.  depth: number of blocks L.  num_heads: h.  mlp_ratio: MLP width / D.
        qkv_bias, qk_norm: see :class:`survey_lib.layers.Attention`.
        init_values: LayerScale init (None: off, as in the paper).
        class_token: prepend a CLS token (required for ``global_pool='token'``).
        drop_rate: dropout on embeddings and before the head.  attn_drop_rate, proj_drop_rate: dropout
            inside blocks.  drop_path_rate: stochastic depth, linearly increasing over depth.

    Shapes:
        x: (B, C, H, W) -> logits (B, K).
        ``forward_features``: (B, 1 + N, D) normalised tokens, CLS first.
        ``get_attention_maps``: list of L tensors (B, h, 1 + N, 1 + N).

    Raises:
        ValueError: if the image size is not divisible by ``patch_size``, ``embed_dim`` is not
            divisible by ``num_heads``, or ``global_pool`` is unknown.
    """

    def __init__(
        self,
        img_size: Union[int, Tuple[int, int]] = 224,
        patch_size: Union[int, Tuple[int, int]] = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "token",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        init_values: Optional[float] = None,
        class_token: bool = True,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' needs class_token=True; use global_pool='avg' without a CLS token")
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}; "
                f"use num_heads in {[h for h in range(1, 17) if embed_dim % h == 0]} or change embed_dim"
            )
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.embed_dim = self.num_features = embed_dim
        self.num_prefix_tokens = 1 if class_token else 0
        self.patch_size = to_2tuple(patch_size)
        # Remember the constructor arguments: checkpoints and timm conversion use them.
        self.config = dict(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
            global_pool=global_pool, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
            mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_norm=qk_norm, init_values=init_values,
            class_token=class_token,
        )

        # Eq. 1: patch embedding E, class token x_class, position embedding E_pos.
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix_tokens + self.patch_embed.num_patches, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)

        # Eq. 2-3: L pre-norm blocks; stochastic depth grows linearly with depth.
        dpr = [r.item() for r in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, qk_norm=qk_norm, init_values=init_values,
                  proj_drop=proj_drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[i])
            for i in range(depth)
        )
        # Eq. 4: final LayerNorm (before pooling for 'token', after pooling for 'avg', as in timm).
        use_fc_norm = global_pool == "avg"
        self.norm = nn.Identity() if use_fc_norm else _default_norm(embed_dim)
        self.fc_norm = _default_norm(embed_dim) if use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    # -- initialisation ------------------------------------------------------------------------
    def init_weights(self) -> None:
        """timm's default init: truncated normal (std 0.02) for Linear and the position embedding,
        a tiny normal (std 1e-6) for the CLS token, zero biases."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Parameters conventionally excluded from weight decay (used by ``survey_lib.train``)."""
        return {"pos_embed", "cls_token"}

    # -- Eq. 1 ---------------------------------------------------------------------------------
    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch-embed, prepend the CLS token and add the (interpolated) position embedding.

        Shapes: (B, C, H, W) -> (B, 1 + N, D).
        """
        B, _, H, W = x.shape
        grid = self.patch_embed.dynamic_grid_size((H, W))
        x = self.patch_embed(x)  # (B, N, D)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)  # (B, 1 + N, D)
        pos = resample_pos_embed(self.pos_embed, grid, self.patch_embed.grid_size, self.num_prefix_tokens)
        return self.pos_drop(x + pos)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: (B, C, H, W) -> (B, 1 + N, D), after the final norm (CLS token first)."""
        x = self.prepare_tokens(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the tokens (CLS or mean of patches) and classify. Shapes: (B, 1 + N, D) -> (B, K)."""
        if self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens:].mean(dim=1)  # (B, D)
        else:
            x = x[:, 0]  # (B, D): the CLS token z_L^0
        x = self.head_drop(self.fc_norm(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled feature used by probes (k-NN, linear). Shapes: (B, C, H, W) -> (B, D)."""
        return self.forward_head(self.forward_features(x), pre_logits=True)

    # -- attention maps ------------------------------------------------------------------------
    @torch.no_grad()
    def get_attention_maps(self, x: torch.Tensor, dense: bool = False) -> List[torch.Tensor]:
        """Post-softmax attention weights of every block, computed on the explicit path.

        No hooks and no global flags: each block is called with ``return_attention=True``. Global
        attention is already dense, so ``dense`` (the attention-map contract shared with Swin and
        NAT, :class:`survey_lib.layers.AttentionLayout`) changes nothing here.

        Shapes: (B, C, H, W) -> list of ``depth`` tensors (B, h, P + N, P + N), P =
        ``num_prefix_tokens``; row i holds what token i attends to (index 0 is the CLS token).
        """
        x = self.prepare_tokens(x)
        maps = []
        for blk in self.blocks:
            x, attn = blk(x, return_attention=True)
            maps.append(attn)
        return maps

    def attention_layout(self, img_size=None) -> List[AttentionLayout]:
        """One :class:`~survey_lib.layers.AttentionLayout` per block for ``img_size`` (default the
        model's): one stage, the patch grid, ``num_prefix_tokens`` prefix tokens."""
        grid = self.patch_embed.grid_size if img_size is None else self.patch_embed.dynamic_grid_size(to_2tuple(img_size))
        return [AttentionLayout(0, tuple(grid), self.num_prefix_tokens) for _ in self.blocks]

    def get_last_selfattention(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's attention (DINO's helper). Shapes: (B, C, H, W) -> (B, h, 1 + N, 1 + N)."""
        return self.get_attention_maps(x)[-1]


# ---------------------------------------------------------------------------------------------
# timm interoperability
# ---------------------------------------------------------------------------------------------
def timm_state_dict(model: VisionTransformer) -> Dict[str, torch.Tensor]:
    """State dict for ``timm.models.vision_transformer.VisionTransformer`` of the same config.

    Key mapping (ours -> timm): identity. Every parameter is named as in timm: ``cls_token``,
    ``pos_embed``, ``patch_embed.proj.{weight,bias}``, ``blocks.{i}.norm1``, ``blocks.{i}.attn.qkv``
    (Q, K, V stacked in that order along the output dimension), ``blocks.{i}.attn.proj``,
    ``blocks.{i}.ls1.gamma``, ``blocks.{i}.norm2``, ``blocks.{i}.mlp.fc1``, ``blocks.{i}.mlp.fc2``,
    ``norm`` (token pooling) or ``fc_norm`` (avg pooling), ``head``. The function exists so the
    mapping is written down in one place and tested.
    """
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def timm_kwargs(model: VisionTransformer) -> dict:
    """Keyword arguments that build timm's ``VisionTransformer`` with our model's architecture."""
    c = dict(model.config)
    return dict(
        img_size=c["img_size"], patch_size=c["patch_size"], in_chans=c["in_chans"], num_classes=c["num_classes"],
        global_pool=c["global_pool"], embed_dim=c["embed_dim"], depth=c["depth"], num_heads=c["num_heads"],
        mlp_ratio=c["mlp_ratio"], qkv_bias=c["qkv_bias"], qk_norm=c["qk_norm"], init_values=c["init_values"],
        class_token=c["class_token"],
    )
