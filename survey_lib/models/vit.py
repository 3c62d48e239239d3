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

from functools import partial
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import AttentionLayout, Block, PatchEmbed, get_act_layer, to_2tuple

__all__ = ["VisionTransformer", "resample_pos_embed", "timm_state_dict", "timm_kwargs", "INIT_MODES"]

#: Values of the ``cls_token_init``, ``pos_embed_init`` and ``block_init`` options.
INIT_MODES = ("timm", "open_clip")


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
            tokens (then, as in timm, the final norm is applied after pooling as ``fc_norm``; see
            ``fc_norm``).
        embed_dim: D.  depth: number of blocks L.  num_heads: h.  mlp_ratio: MLP width / D.
        qkv_bias, qk_norm: see :class:`survey_lib.layers.Attention`.
        init_values: LayerScale init (None: off, as in the paper).
        class_token: prepend a CLS token (required for ``global_pool='token'``).
        drop_rate: dropout on embeddings and before the head.  attn_drop_rate, proj_drop_rate: dropout
            inside blocks.  drop_path_rate: stochastic depth, linearly increasing over depth.

    Options for CLIP's image tower (timm's names where timm has them; each default is today's
    behaviour, the ViT paper's and timm's; ``survey_lib.models.clip`` lists which open_clip uses):
        pre_norm: a LayerNorm ``norm_pre`` on the tokens after the position embedding, before the
            first block (timm ``pre_norm``; open_clip's and OpenAI CLIP's ``ln_pre``). Default False:
            the ViT paper has none.
        patch_bias: a bias in the patch-embedding convolution. Default True (timm, the paper's
            ``x_p E + b``). open_clip's ``conv1`` has none (timm drops it too when ``pre_norm``).
            As a function the bias is redundant with the position embedding (the same vector added
            to every patch token, before anything else), which is how
            :func:`survey_lib.models.clip.open_clip_state_dict` folds it away.
        fc_norm: where the final LayerNorm sits (timm ``fc_norm``): False, on every token before
            pooling (``norm``); True, on the pooled vector (``fc_norm``); None (default), True for
            ``'avg'`` and False for ``'token'``, as in timm. For the CLS token both give the same
            function; for the mean they differ: open_clip's ``pool_type='avg'`` normalises before
            pooling (``fc_norm=False``) unless ``final_ln_after_pool=True``.
        norm_eps: eps of every LayerNorm. Default 1e-6 (timm's ViT); open_clip and PyTorch use 1e-5.
            It matters at initialisation, when token variances are small (std 0.02 embeddings).
        act_layer: the MLP activation, ``"gelu"`` (exact, default; timm, open_clip) or ``"quick_gelu"``
            (``x sigmoid(1.702 x)``, OpenAI CLIP's; open_clip's ``quick_gelu=True``).
        cls_token_init: ``"timm"`` (default): N(0, 1e-6), so the CLS token starts as (almost) zero;
            ``"open_clip"``: N(0, D^-1/2), open_clip's ``class_embedding = width ** -0.5 * randn``.
        pos_embed_init: ``"timm"`` (default): truncated N(0, 0.02); ``"open_clip"``: N(0, D^-1/2)
            (0.125 for D = 64, six times timm's).
        block_init: ``"timm"`` (default): every Linear of the blocks truncated N(0, 0.02), zero
            biases. ``"open_clip"``: what open_clip's vision tower keeps, PyTorch's defaults (its
            ``init_parameters`` is empty): ``qkv`` (``nn.MultiheadAttention.in_proj_weight``) Xavier
            uniform, ``attn.proj`` (``out_proj``) kaiming-uniform U(+-D^-1/2), both with zero bias;
            ``mlp.fc1`` / ``mlp.fc2`` (``c_fc`` / ``c_proj``) ``nn.Linear``'s default U(+-fan_in^-1/2)
            for weights *and* biases. The head (if any) and the patch convolution (PyTorch's default
            in both libraries) are not affected.

    Shapes:
        x: (B, C, H, W) -> logits (B, K).
        ``forward_features``: (B, 1 + N, D) normalised tokens, CLS first.
        ``get_attention_maps``: list of L tensors (B, h, 1 + N, 1 + N).

    Raises:
        ValueError: if the image size is not divisible by ``patch_size``, ``embed_dim`` is not
            divisible by ``num_heads``, ``global_pool``, ``act_layer`` or an init mode is unknown.
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
        pre_norm: bool = False,
        patch_bias: bool = True,
        fc_norm: Optional[bool] = None,
        norm_eps: float = 1e-6,
        act_layer: str = "gelu",
        cls_token_init: str = "timm",
        pos_embed_init: str = "timm",
        block_init: str = "timm",
    ) -> None:
        super().__init__()
        for name, mode in (("cls_token_init", cls_token_init), ("pos_embed_init", pos_embed_init),
                           ("block_init", block_init)):
            if mode not in INIT_MODES:
                raise ValueError(f"{name} must be one of {INIT_MODES}, got {mode!r}")
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
            class_token=class_token, pre_norm=pre_norm, patch_bias=patch_bias, fc_norm=fc_norm,
            norm_eps=norm_eps, act_layer=act_layer, cls_token_init=cls_token_init,
            pos_embed_init=pos_embed_init, block_init=block_init,
        )
        self.cls_token_init, self.pos_embed_init, self.block_init = cls_token_init, pos_embed_init, block_init
        norm_layer = partial(nn.LayerNorm, eps=norm_eps)
        act = get_act_layer(act_layer)

        # Eq. 1: patch embedding E, class token x_class, position embedding E_pos.
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, bias=patch_bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix_tokens + self.patch_embed.num_patches, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        self.norm_pre = norm_layer(embed_dim) if pre_norm else nn.Identity()  # CLIP's ln_pre (off in the paper)

        # Eq. 2-3: L pre-norm blocks; stochastic depth grows linearly with depth.
        dpr = [r.item() for r in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, qk_norm=qk_norm, init_values=init_values,
                  proj_drop=proj_drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[i], act_layer=act,
                  norm_layer=norm_layer)
            for i in range(depth)
        )
        # Eq. 4: final LayerNorm (by default before pooling for 'token', after pooling for 'avg', as in timm).
        use_fc_norm = global_pool == "avg" if fc_norm is None else bool(fc_norm)
        self.norm = nn.Identity() if use_fc_norm else norm_layer(embed_dim)
        self.fc_norm = norm_layer(embed_dim) if use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    # -- initialisation ------------------------------------------------------------------------
    def init_weights(self) -> None:
        """timm's default init: truncated normal (std 0.02) for Linear and the position embedding,
        a tiny normal (std 1e-6) for the CLS token, zero biases. ``cls_token_init``,
        ``pos_embed_init`` and ``block_init`` = ``"open_clip"`` replace one part each by open_clip's
        (see the class docstring); the patch convolution keeps PyTorch's default in every mode."""
        D = self.embed_dim
        if self.pos_embed_init == "open_clip":
            nn.init.normal_(self.pos_embed, std=D ** -0.5)
        else:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=D ** -0.5 if self.cls_token_init == "open_clip" else 1e-6)
        in_blocks = {id(m) for m in self.blocks.modules()} if self.block_init == "open_clip" else set()
        for m in self.modules():
            if isinstance(m, nn.Linear) and id(m) not in in_blocks:
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if self.block_init == "open_clip":
            for blk in self.blocks:
                _open_clip_block_init(blk)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Parameters conventionally excluded from weight decay (used by ``survey_lib.train``)."""
        return {"pos_embed", "cls_token"}

    # -- Eq. 1 ---------------------------------------------------------------------------------
    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch-embed, prepend the CLS token, add the (interpolated) position embedding, and apply
        ``norm_pre`` (CLIP's ``ln_pre``; the identity unless ``pre_norm``).

        Shapes: (B, C, H, W) -> (B, 1 + N, D).
        """
        B, _, H, W = x.shape
        grid = self.patch_embed.dynamic_grid_size((H, W))
        x = self.patch_embed(x)  # (B, N, D)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)  # (B, 1 + N, D)
        pos = resample_pos_embed(self.pos_embed, grid, self.patch_embed.grid_size, self.num_prefix_tokens)
        return self.norm_pre(self.pos_drop(x + pos))

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


def _open_clip_block_init(blk: Block) -> None:
    """One block as open_clip's vision tower leaves it: PyTorch's default initialisation.

    ``nn.MultiheadAttention._reset_parameters``: ``in_proj_weight`` (our ``attn.qkv.weight``, (3D, D))
    Xavier uniform, ``in_proj_bias`` and ``out_proj.bias`` zero, ``out_proj.weight`` ``nn.Linear``'s
    kaiming-uniform; ``c_fc`` / ``c_proj`` (our ``mlp.fc1`` / ``mlp.fc2``) ``nn.Linear``'s default,
    weight and bias U(+-fan_in^-1/2). LayerNorms and LayerScale keep their constant init.
    """
    for lin in (blk.attn.proj, blk.mlp.fc1, blk.mlp.fc2):
        lin.reset_parameters()  # nn.Linear's default: kaiming_uniform_(a=sqrt(5)) weight, uniform bias
    nn.init.xavier_uniform_(blk.attn.qkv.weight)
    for bias in (blk.attn.qkv.bias, blk.attn.proj.bias):
        if bias is not None:
            nn.init.zeros_(bias)


# ---------------------------------------------------------------------------------------------
# timm interoperability
# ---------------------------------------------------------------------------------------------
def timm_state_dict(model: VisionTransformer) -> Dict[str, torch.Tensor]:
    """State dict for ``timm.models.vision_transformer.VisionTransformer`` of the same config.

    Key mapping (ours -> timm): identity. Every parameter is named as in timm: ``cls_token``,
    ``pos_embed``, ``patch_embed.proj.{weight,bias}``, ``norm_pre`` (with ``pre_norm``),
    ``blocks.{i}.norm1``, ``blocks.{i}.attn.qkv`` (Q, K, V stacked in that order along the output
    dimension), ``blocks.{i}.attn.proj``,
    ``blocks.{i}.ls1.gamma``, ``blocks.{i}.norm2``, ``blocks.{i}.mlp.fc1``, ``blocks.{i}.mlp.fc2``,
    ``norm`` (token pooling) or ``fc_norm`` (avg pooling), ``head``. The function exists so the
    mapping is written down in one place and tested.
    """
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def timm_kwargs(model: VisionTransformer) -> dict:
    """Keyword arguments that build timm's ``VisionTransformer`` with our model's architecture.

    The CLIP options map onto timm's ``pre_norm``, ``fc_norm``, ``norm_layer`` (LayerNorm of another
    eps) and ``act_layer``; they are passed only when not at their default, so a default model gets
    the same keyword arguments as before they existed. The init options do not change the architecture.

    Raises:
        ValueError: ``patch_bias`` other than ``not pre_norm``: timm ties the two (``bias=not pre_norm``).
    """
    c = dict(model.config)
    kwargs = dict(
        img_size=c["img_size"], patch_size=c["patch_size"], in_chans=c["in_chans"], num_classes=c["num_classes"],
        global_pool=c["global_pool"], embed_dim=c["embed_dim"], depth=c["depth"], num_heads=c["num_heads"],
        mlp_ratio=c["mlp_ratio"], qkv_bias=c["qkv_bias"], qk_norm=c["qk_norm"], init_values=c["init_values"],
        class_token=c["class_token"],
    )
    pre_norm, patch_bias = c.get("pre_norm", False), c.get("patch_bias", True)
    if patch_bias == pre_norm:
        raise ValueError(f"timm's ViT has a patch-embedding bias exactly when pre_norm is False; this model has "
                         f"pre_norm={pre_norm}, patch_bias={patch_bias}")
    if pre_norm:
        kwargs["pre_norm"] = True
    if c.get("fc_norm") is not None:
        kwargs["fc_norm"] = c["fc_norm"]
    if c.get("norm_eps", 1e-6) != 1e-6:
        kwargs["norm_layer"] = partial(nn.LayerNorm, eps=c["norm_eps"])
    if c.get("act_layer", "gelu") != "gelu":
        kwargs["act_layer"] = c["act_layer"]
    return kwargs
