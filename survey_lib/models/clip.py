"""A tiny CLIP: an image tower and a text tower trained to agree on which caption goes with which image.

Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision"
(CLIP), arXiv:2103.00020. What maps where:

    Sec. 2.4  image encoder: a ViT                     -> ``visual`` (survey_lib.models.vit.VisionTransformer,
                                                          num_classes=0; presets pool the patch tokens)
    Sec. 2.4  text encoder: a causal transformer over   -> ``text`` (:class:`TextTransformer`: token +
              lower-cased BPE tokens (vocab 49,152),       position embedding, ``survey_lib.layers.Block``
              bracketed by [SOS] and [EOS]; the            with a causal ``attn_mask``, final LayerNorm,
              activations at [EOS] are the feature         pooling at the EOT token)
    Fig. 3    linear projections W_i, W_t into the     -> ``image_projection``, ``text_projection``
              joint space, then L2 normalisation           (bias-free ``nn.Linear``), ``F.normalize``
    Sec. 2.5  learnable temperature, log-parametrised,  -> ``logit_scale`` (init ln(1/0.07)), turned
              init 0.07, logits clipped at 100             into 1/tau by ``scale_from_log``
    Sec. 3.1.4 prompt engineering and ensembling       -> ``survey_lib.evaluate.zero_shot_weights``

The loss is :class:`survey_lib.objectives.infonce.ClipLoss`. Tokens come from open_clip's own
``SimpleTokenizer`` (CLIP's BPE vocabulary, shipped inside the package, so it works offline)
through :class:`survey_lib.data.captions.CaptionTokenizer`.

For comparison, :func:`build_open_clip` builds open_clip's own ``CLIP`` class from a tiny
custom config (no pretrained weights): it has the same interface (``encode_image``,
``encode_text``, ``forward(images, tokens) -> (image_features, text_features, logit_scale)``), so
the same training step and evaluation run on both.

Conversion to and from open_clip (``open_clip.model.CLIP``, open_clip 3.3.0):
:func:`open_clip_config` gives the ``embed_dim`` / ``CLIPVisionCfg`` / ``CLIPTextCfg`` of the open_clip
model that computes exactly our model's function, :func:`open_clip_state_dict` and
:func:`from_open_clip_state_dict` convert the weights both ways (key table in
:func:`open_clip_key_map`), :func:`to_open_clip` does all three. ``tests/test_clip.py`` proves equal
features on shared weights, both ways, and equal losses over the first training steps.
:data:`OPEN_CLIP_VISION_OPTIONS`, :data:`OPEN_CLIP_TEXT_OPTIONS` and :data:`OPEN_CLIP_OPTIONS` are our
constructor options that reproduce open_clip's own choices (architecture and initialisation); the
:class:`CLIP` docstring lists every difference and the option that switches it.

Deviations from the paper (CPU-sized; the architecture is the paper's):
    * towers 32-192 wide and 1-4 blocks deep; context length 16 (CLIP: 76 + 1) because the digit
      captions are short; images 32 x 32 grey (the digits upsampled), patch 4.
    * the text tower keeps open_clip's whole 49,408-token embedding table although the captions
      use a few dozen tokens (most of the model's parameters; unused rows only decay).
    * pre-norm blocks with LayerNorm eps 1e-6 and exact GELU (``survey_lib.layers.Block``; CLIP's
      text transformer is also pre-norm; OpenAI's weights use QuickGELU, ``act_layer="quick_gelu"``).
    * the image tower has no extra LayerNorm before the blocks (CLIP's ``ln_pre``), and the presets
      pool it by averaging the patch tokens (``global_pool="avg"``) instead of CLIP's CLS token:
      at timm's initialisation (std 0.02) a tiny ViT's CLS feature barely depends on the image,
      which slows the start. Measured (cpu preset, 30 epochs, one seed, held-out zero-shot
      accuracy): CLS 93.6%, average 96.4%. ``vision_cfg=dict(..., global_pool="token")`` restores CLIP's.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Block, DropPath, get_act_layer
from .vit import VisionTransformer

__all__ = [
    "INIT_LOGIT_SCALE",
    "MAX_LOGIT_SCALE",
    "scale_from_log",
    "causal_mask",
    "TextTransformer",
    "CLIP",
    "build_open_clip",
    "OPEN_CLIP_VISION_OPTIONS",
    "OPEN_CLIP_TEXT_OPTIONS",
    "OPEN_CLIP_OPTIONS",
    "open_clip_config",
    "open_clip_key_map",
    "open_clip_state_dict",
    "from_open_clip_state_dict",
    "to_open_clip",
]


#: ln(1 / 0.07): CLIP's initial logit scale, i.e. temperature tau = 0.07 (CLIP Sec. 2.5).
INIT_LOGIT_SCALE: float = math.log(1.0 / 0.07)
#: ln(100): the logit scale is clipped so the multiplier exp(logit_scale) never exceeds 100.
MAX_LOGIT_SCALE: float = math.log(100.0)

#: The image tower of ``CLIP()`` without arguments: a ViT of 64 wide, 4 blocks, patch 4, for 32 px grey images.
DEFAULT_VISION_CFG: Dict[str, object] = dict(img_size=32, patch_size=4, in_chans=1, embed_dim=64, depth=4,
                                             num_heads=4, mlp_ratio=2.0)

#: ``vision_cfg`` options that make our image tower open_clip's ``VisionTransformer`` (architecture and
#: initialisation), on top of ``global_pool="token"`` (open_clip's ``pool_type='tok'``) and ``in_chans=3``.
OPEN_CLIP_VISION_OPTIONS: Dict[str, object] = dict(
    pre_norm=True,              # ln_pre
    patch_bias=False,           # conv1 has no bias
    norm_eps=1e-5,              # nn.LayerNorm's default eps
    cls_token_init="open_clip",  # class_embedding ~ N(0, D^-1/2)
    pos_embed_init="open_clip",  # positional_embedding ~ N(0, D^-1/2)
    block_init="open_clip",     # PyTorch's default init of nn.MultiheadAttention and nn.Linear
)
#: ``text_cfg`` options that make our text tower open_clip's ``TextTransformer``.
OPEN_CLIP_TEXT_OPTIONS: Dict[str, object] = dict(
    norm_eps=1e-5,              # nn.LayerNorm's default eps
    pool_type="argmax",         # text_global_pool(..., 'argmax'): the position of the largest token id
    mlp_bias_init="open_clip",  # c_fc / c_proj biases keep nn.Linear's uniform default
)
#: Top-level :class:`CLIP` options of open_clip's ``CLIP``: the forward pass returns exp(logit_scale)
#: unclamped (open_clip clamps the stored parameter in its training loop instead).
OPEN_CLIP_OPTIONS: Dict[str, object] = dict(max_logit_scale=None)


def scale_from_log(logit_scale: torch.Tensor, max_logit_scale: float = MAX_LOGIT_SCALE) -> torch.Tensor:
    """The multiplier ``exp(min(logit_scale, ln 100))`` = 1 / tau, computed once per forward pass.

    CLIP learns the temperature as a log so that it stays positive and its gradient is well scaled;
    the clamp keeps the logits from growing without bound ("to prevent training instability",
    CLIP Sec. 2.5). Above the cap the gradient to ``logit_scale`` is zero.

    Shapes: scalar -> scalar.
    """
    return logit_scale.clamp(max=max_logit_scale).exp()


# ---------------------------------------------------------------------------------------------
# text tower
# ---------------------------------------------------------------------------------------------
def causal_mask(n: int) -> torch.Tensor:
    """Additive causal mask: 0 on and below the diagonal, -inf above (token i sees tokens <= i).

    Shapes: returns (n, n) float, broadcast by attention to (B, h, n, n).
    """
    return torch.full((n, n), float("-inf")).triu(1)


class TextTransformer(nn.Module):
    """CLIP's text encoder: token + learned position embedding, causal pre-norm blocks, final
    LayerNorm, and the feature of the end-of-text (EOT) token (CLIP Sec. 2.4).

    Because attention is causal, the EOT token is the only one that has seen the whole caption, and
    padding after it never influences it.

    Parameter names follow ``survey_lib.layers.Block`` (timm's); :func:`open_clip_key_map` gives
    open_clip's (``transformer.resblocks.{i}.ln_1``, ``attn.in_proj_weight``, ``mlp.c_fc``, ...).

    Args:
        vocab_size: rows of the token embedding (open_clip's BPE: 49,408).
        context_length: L, the longest token sequence.
        width: D.  depth: number of blocks.  num_heads: h.  mlp_ratio: MLP width / D.
        qkv_bias: bias on the joint Q, K, V projection (open_clip's ``nn.MultiheadAttention`` always has one).
        eot_token_id: the id whose position is pooled.

    Options where open_clip chooses differently (defaults: today's behaviour):
        norm_eps: eps of every LayerNorm. Default 1e-6 (timm's, shared with the image tower);
            open_clip's ``LayerNorm`` uses PyTorch's 1e-5.
        act_layer: ``"gelu"`` (exact GELU, default, as open_clip unless ``quick_gelu=True``) or
            ``"quick_gelu"`` (OpenAI CLIP's ``x sigmoid(1.702 x)``).
        pool_type: which position is the caption's feature. ``"eot"`` (default): the first
            ``eot_token_id`` of each row, and a row without one is an error (open_clip's
            ``pool_type='eos'``). ``"argmax"`` (open_clip's default, from OpenAI's code): the position
            of the largest token id, ``tokens.argmax(-1)``. With CLIP's tokenizer the two agree,
            because EOT (49,407) is the last vocabulary entry; ``"argmax"`` silently pools the largest
            word of a row that lost its EOT.
        mlp_bias_init: ``"zeros"`` (default): every bias starts at 0, as in timm. ``"open_clip"``:
            the MLP biases (``c_fc``, ``c_proj``) keep ``nn.Linear``'s default U(+-fan_in^-1/2), which
            neither OpenAI's ``initialize_parameters`` nor open_clip's ``init_parameters`` resets (the
            attention biases are zero in both: ``nn.MultiheadAttention`` zeroes them).

    Shapes:
        tokens (B, L') with L' <= L -> ``forward_features`` (B, L', D); ``forward`` (B, D).

    Raises:
        ValueError: more tokens than ``context_length``, a row without an EOT token (``pool_type="eot"``),
            or an unknown ``pool_type``, ``act_layer`` or ``mlp_bias_init``.
    """

    def __init__(self, vocab_size: int = 49408, context_length: int = 16, width: int = 64, depth: int = 2,
                 num_heads: int = 4, mlp_ratio: float = 4.0, qkv_bias: bool = True, eot_token_id: int = 49407,
                 norm_eps: float = 1e-6, act_layer: str = "gelu", pool_type: str = "eot",
                 mlp_bias_init: str = "zeros") -> None:
        super().__init__()
        if pool_type not in ("eot", "argmax"):
            raise ValueError(f"pool_type must be 'eot' or 'argmax', got {pool_type!r}")
        if mlp_bias_init not in ("zeros", "open_clip"):
            raise ValueError(f"mlp_bias_init must be 'zeros' or 'open_clip', got {mlp_bias_init!r}")
        self.config = dict(vocab_size=vocab_size, context_length=context_length, width=width, depth=depth,
                           num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, eot_token_id=eot_token_id,
                           norm_eps=norm_eps, act_layer=act_layer, pool_type=pool_type, mlp_bias_init=mlp_bias_init)
        self.context_length = context_length
        self.width = width
        self.eot_token_id = eot_token_id
        self.pool_type = pool_type
        self.mlp_bias_init = mlp_bias_init
        norm_layer = partial(nn.LayerNorm, eps=norm_eps)
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.zeros(context_length, width))
        act = get_act_layer(act_layer)
        self.blocks = nn.ModuleList(Block(width, num_heads, mlp_ratio, qkv_bias=qkv_bias, act_layer=act, norm_layer=norm_layer)
                                    for _ in range(depth))
        self.ln_final = norm_layer(width)
        self.register_buffer("attn_mask", causal_mask(context_length), persistent=False)
        self.init_weights()

    def init_weights(self) -> None:
        """CLIP's text-tower init (OpenAI's ``model.py``, kept by open_clip): token embedding
        N(0, 0.02), position embedding N(0, 0.01); in every block ``qkv`` N(0, D^-1/2), the output
        projections ``attn.proj`` and ``mlp.fc2`` N(0, D^-1/2 (2 depth)^-1/2), ``mlp.fc1`` N(0, (2D)^-1/2);
        zero biases (``mlp_bias_init="open_clip"``: the MLP biases U(+-fan_in^-1/2), as open_clip leaves them).

        Larger than the ViT tower's std 0.02: with 0.02 the EOT feature of a shallow tower is at
        first almost only ``emb(EOT) + pos(length)``, nearly blind to the words, and training starts
        on a plateau. Measured on the digits (cpu preset, 30 epochs, CLS pooling, one seed): held-out
        zero-shot accuracy 19% vs 32% after 5 epochs, 92.5% vs 93.6% at the end (std 0.02 vs this).
        """
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        D, depth = self.width, max(1, len(self.blocks))
        attn_std, proj_std, fc_std = D ** -0.5, D ** -0.5 * (2 * depth) ** -0.5, (2 * D) ** -0.5
        for blk in self.blocks:
            for lin, std in ((blk.attn.qkv, attn_std), (blk.attn.proj, proj_std), (blk.mlp.fc1, fc_std),
                             (blk.mlp.fc2, proj_std)):
                nn.init.normal_(lin.weight, std=std)
                if lin.bias is None:
                    continue
                if self.mlp_bias_init == "open_clip" and lin in (blk.mlp.fc1, blk.mlp.fc2):
                    bound = lin.in_features ** -0.5  # nn.Linear.reset_parameters' bias: U(-1/sqrt(fan_in), +)
                    nn.init.uniform_(lin.bias, -bound, bound)
                else:
                    nn.init.zeros_(lin.bias)

    def forward_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Shapes: tokens (B, L') -> (B, L', D) after the final LayerNorm."""
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be (B, L) token ids, got shape {tuple(tokens.shape)}")
        L = tokens.shape[1]
        if L > self.context_length:
            raise ValueError(f"{L} tokens exceed context_length {self.context_length}; tokenize with "
                             f"CaptionTokenizer(context_length={self.context_length})")
        x = self.token_embedding(tokens) + self.positional_embedding[:L]  # (B, L, D)
        mask = self.attn_mask[:L, :L]  # (L, L)
        for blk in self.blocks:
            x = blk(x, attn_mask=mask)
        return self.ln_final(x)

    def eot_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """Index of the pooled token of each row: the first EOT token (``pool_type="eot"``) or the
        largest token id (``"argmax"``, open_clip's). Shapes: (B, L) -> (B,)."""
        if self.pool_type == "argmax":
            return tokens.argmax(dim=-1)  # (B,) first position of the row's largest id
        is_eot = tokens == self.eot_token_id  # (B, L)
        if not bool(is_eot.any(dim=1).all()):
            raise ValueError(f"every token row needs an end-of-text token ({self.eot_token_id}); "
                             f"tokenize the captions with CaptionTokenizer")
        return is_eot.int().argmax(dim=1)  # (B,) first True

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(tokens)  # (B, L, D)
        return x[torch.arange(x.shape[0], device=x.device), self.eot_positions(tokens)]  # (B, D)

    @torch.no_grad()
    def get_attention_maps(self, tokens: torch.Tensor) -> List[torch.Tensor]:
        """Causal attention of every block. Shapes: (B, L) -> list of (B, h, L, L), upper triangle 0."""
        L = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:L]  # (B, L, D)
        maps = []
        for blk in self.blocks:
            x, attn = blk(x, return_attention=True, attn_mask=self.attn_mask[:L, :L])
            maps.append(attn)
        return maps


# ---------------------------------------------------------------------------------------------
# CLIP
# ---------------------------------------------------------------------------------------------
class CLIP(nn.Module):
    """Two towers, two projections into a shared ``embed_dim``-dimensional space, one temperature.

    Differences from open_clip's ``CLIP`` (open_clip 3.3.0), each with the option that switches
    ours to open_clip's choice (``vision_cfg`` / ``text_cfg`` keys or arguments here; all of them:
    :data:`OPEN_CLIP_VISION_OPTIONS`, :data:`OPEN_CLIP_TEXT_OPTIONS`, :data:`OPEN_CLIP_OPTIONS`):

    * image input: the presets' 1 grey channel; open_clip's 3 (``in_chans=3``, ``CaptionedDigits(in_chans=3)``).
    * image pooling: the presets average the patch tokens, LayerNorm after pooling; open_clip's
      default is the CLS token (``global_pool="token"``; its ``'avg'`` normalises before pooling,
      ``fc_norm=False``).
    * ``ln_pre`` before the image blocks: none; ``pre_norm=True``.
    * patch-embedding bias: yes; none in open_clip, ``patch_bias=False``.
    * LayerNorm eps, both towers: 1e-6; 1e-5, ``norm_eps=1e-5``.
    * class embedding init: N(0, 1e-6); N(0, D^-1/2), ``cls_token_init="open_clip"``.
    * image position embedding init: trunc. N(0, 0.02); N(0, D^-1/2), ``pos_embed_init="open_clip"``.
    * image blocks init: trunc. N(0, 0.02), zero biases; PyTorch's defaults, ``block_init="open_clip"``.
    * text MLP biases init: zero; U(+-fan_in^-1/2), ``mlp_bias_init="open_clip"``.
    * text pooling: the first EOT token; the largest token id, ``pool_type="argmax"`` (equal with
      CLIP's tokenizer).
    * logit scale returned by ``forward``: exp(min(s, ln 100)); exp(s), ``max_logit_scale=None``.

    The same in both: exact GELU (``act_layer="quick_gelu"`` is OpenAI's), the causal mask, the text
    tower's init apart from its MLP biases, the projections' init N(0, D^-1/2) (``nn.Linear`` weights
    here, ``x @ proj`` matrices there: transposed by the conversion), the temperature's init ln(1/0.07),
    the patch convolution's init (PyTorch's). Training: ``survey_lib.train.fit`` and open_clip's
    ``open_clip_train`` both skip weight decay on gains, biases and the temperature; ``fit`` also skips
    the position embeddings, which ``open_clip_train`` decays
    (``survey_lib.recipes.clip.open_clip_param_groups``); ``clip_step`` clamps the temperature
    before each step, ``open_clip_train`` after each.

    Which of open_clip's choices the ``clip`` recipe follows, and why: each choice above is an entry of
    ``survey_lib.recipes.clip.OPEN_CLIP_CHOICES`` (with open_clip_train's weight decay on position
    embeddings and its AdamW betas / eps / no clipping), and ``survey_lib.recipes.clip.run_ablation``
    measures each one alone on top of our original CLIP, all the model choices together, and open_clip's
    own class, on MNIST-5k's validation split over 3 seeds (``benchmarks/clip_ablation.py``; notebook 05
    prints the table). No single choice explains the gap; it is the sum of small ones. The recipe adopts
    the model choices whose effect alone was positive (``survey_lib.recipes.clip.ADOPTED_CHOICES``):
    PyTorch's default init of the image blocks (the largest effect; timm's trunc. N(0, 0.02) is a
    smaller init than PyTorch's U(+-fan_in^-1/2) for these 64-wide layers), the N(0, D^-1/2) init of
    the class and position embeddings, ``ln_pre`` and the text MLP biases' init; it keeps mean pooling (CLS pooling
    alone cost points) and the grey channel, and fit's optimizer settings (open_clip_train's betas
    (0.9, 0.98), eps 1e-6 and no clipping were worse here). They are options of the recipe, never
    defaults of :class:`~survey_lib.models.vit.VisionTransformer`, which the other methods share and
    whose defaults stay timm's.

    Args:
        embed_dim: E, the joint embedding width.
        vision_cfg: keyword arguments of :class:`survey_lib.models.vit.VisionTransformer`
            (``num_classes`` is forced to 0: the tower returns its pooled feature, the CLS token or,
            with ``global_pool="avg"`` as in the presets of ``survey_lib.recipes.clip``, the mean of the
            patch tokens).
        text_cfg: keyword arguments of :class:`TextTransformer`.
        init_logit_scale: initial log of 1/tau (CLIP: ln(1/0.07)).
        max_logit_scale: the forward pass returns exp(min(logit_scale, max_logit_scale)) (default
            ln 100, CLIP Sec. 2.5), so the multiplier never exceeds 100 even between clamps; None
            returns exp(logit_scale) unclamped, as open_clip's ``CLIP.forward`` (its training loop
            clamps the stored parameter to [0, ln 100] after every step, as ``clip_step`` does before
            every step, so in training the two agree).

    Shapes:
        ``encode_image``: (B, C, H, W) -> (B, E).  ``encode_text``: (B, L) -> (B, E).
        ``forward(images, tokens)`` -> (image_features (B, E), text_features (B, E), logit_scale
        scalar): features L2-normalised, logit_scale = exp(min(logit_scale, ln 100)) = 1/tau, exactly
        what :class:`~survey_lib.objectives.infonce.ClipLoss` and open_clip's ``ClipLoss`` take.
        Parameter names: ``visual.*`` (:class:`~survey_lib.models.vit.VisionTransformer`), ``text.*``
        (:class:`TextTransformer`), ``image_projection.weight`` (E, D_v), ``text_projection.weight``
        (E, D_t), ``logit_scale`` (); open_clip's in :func:`open_clip_key_map`.

    Raises:
        ValueError: images and tokens with different batch sizes.
    """

    def __init__(self, embed_dim: int = 64, vision_cfg: Optional[dict] = None, text_cfg: Optional[dict] = None,
                 init_logit_scale: float = INIT_LOGIT_SCALE,
                 max_logit_scale: Optional[float] = MAX_LOGIT_SCALE) -> None:
        super().__init__()
        vision_cfg = {**(vision_cfg or DEFAULT_VISION_CFG), "num_classes": 0}
        text_cfg = dict(text_cfg or {})
        self.config = dict(embed_dim=embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg,
                           init_logit_scale=init_logit_scale, max_logit_scale=max_logit_scale)
        self.embed_dim = embed_dim
        self.max_logit_scale = max_logit_scale
        self.visual = VisionTransformer(**vision_cfg)
        self.text = TextTransformer(**text_cfg)
        self.context_length = self.text.context_length
        self.image_projection = nn.Linear(self.visual.embed_dim, embed_dim, bias=False)  # W_i
        self.text_projection = nn.Linear(self.text.width, embed_dim, bias=False)  # W_t
        nn.init.normal_(self.image_projection.weight, std=self.visual.embed_dim ** -0.5)
        nn.init.normal_(self.text_projection.weight, std=self.text.width ** -0.5)
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))  # log(1/tau)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Position embeddings, the class token and the temperature are not decayed
        (``survey_lib.train.param_groups``); the token embedding table is (see the module docstring)."""
        return {"pos_embed", "cls_token", "positional_embedding", "logit_scale"}

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Shapes: (B, C, H, W) -> (B, E)."""
        x = self.image_projection(self.visual(images))  # (B, D_v) -> (B, E)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Shapes: (B, L) -> (B, E)."""
        x = self.text_projection(self.text(tokens))  # (B, D_t) -> (B, E)
        return F.normalize(x, dim=-1) if normalize else x

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised image embedding, the feature used by probes. Shapes: (B, C, H, W) -> (B, E)."""
        return self.encode_image(images, normalize=True)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if images.shape[0] != tokens.shape[0]:
            raise ValueError(
                f"batch sizes differ: {images.shape[0]} images vs {tokens.shape[0]} captions; CLIP trains on "
                f"pairs, so pass one caption per image"
            )
        image_features = self.encode_image(images, normalize=True)  # (B, E)
        text_features = self.encode_text(tokens, normalize=True)  # (B, E)
        if self.max_logit_scale is None:  # open_clip's forward: no clamp here
            return image_features, text_features, self.logit_scale.exp()
        return image_features, text_features, scale_from_log(self.logit_scale, self.max_logit_scale)


def build_open_clip(embed_dim: int, vision_cfg: dict, text_cfg: dict, quick_gelu: bool = False,
                    init_logit_scale: float = INIT_LOGIT_SCALE) -> nn.Module:
    """open_clip's own ``open_clip.model.CLIP`` from a tiny custom config, randomly initialised: the
    reference our :class:`CLIP` is compared with.

    Nothing is downloaded: the model is built from ``CLIPVisionCfg`` / ``CLIPTextCfg`` directly,
    not through ``create_model``. open_clip's vision tower needs 3-channel images.

    Args:
        embed_dim: the joint width.  vision_cfg, text_cfg: ``CLIPVisionCfg`` / ``CLIPTextCfg`` fields
            (e.g. ``image_size``, ``patch_size``, ``width``, ``layers``, ``head_width``, ``mlp_ratio``;
            ``context_length``, ``width``, ``heads``, ``layers``).
        quick_gelu: OpenAI's ``x sigmoid(1.702 x)`` in both towers instead of the exact GELU.
        init_logit_scale: initial log of 1/tau.

    ``build_open_clip(**open_clip_config(ours))`` builds the open_clip model of our model's function.
    """
    from open_clip.model import CLIP as OpenCLIP, CLIPTextCfg, CLIPVisionCfg

    return OpenCLIP(embed_dim, CLIPVisionCfg(**vision_cfg), CLIPTextCfg(**text_cfg), quick_gelu=quick_gelu,
                    init_logit_scale=init_logit_scale)


# ---------------------------------------------------------------------------------------------
# open_clip interoperability
# ---------------------------------------------------------------------------------------------
#: Inside one block, our name (``survey_lib.layers.Block``, timm's) -> open_clip's
#: (``open_clip.transformer.ResidualAttentionBlock``). Q, K, V are stacked in the same order along the
#: output dimension in our ``attn.qkv`` and in ``nn.MultiheadAttention``'s ``in_proj_weight`` (3D, D), and
#: both split each of them into heads the same way, so the weights are copied unchanged.
_BLOCK_KEYS: Tuple[Tuple[str, str], ...] = (
    ("norm1.", "ln_1."),
    ("attn.qkv.weight", "attn.in_proj_weight"),
    ("attn.qkv.bias", "attn.in_proj_bias"),
    ("attn.proj.", "attn.out_proj."),
    ("ls1.", "ls_1."),
    ("norm2.", "ln_2."),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.fc2.", "mlp.c_proj."),
    ("ls2.", "ls_2."),
)
#: Every other key: ours -> open_clip's. Our final image LayerNorm is ``visual.norm`` (before pooling)
#: or ``visual.fc_norm`` (after), whichever the model has; open_clip calls it ``ln_post`` either way.
_OTHER_KEYS: Dict[str, str] = {
    "visual.cls_token": "visual.class_embedding",  # (1, 1, D) <-> (D,)
    "visual.pos_embed": "visual.positional_embedding",  # (1, 1 + N, D) <-> (1 + N, D)
    "visual.patch_embed.proj.weight": "visual.conv1.weight",  # (D, 3, P, P)
    "visual.norm_pre.weight": "visual.ln_pre.weight",
    "visual.norm_pre.bias": "visual.ln_pre.bias",
    "visual.norm.weight": "visual.ln_post.weight",
    "visual.norm.bias": "visual.ln_post.bias",
    "visual.fc_norm.weight": "visual.ln_post.weight",
    "visual.fc_norm.bias": "visual.ln_post.bias",
    "image_projection.weight": "visual.proj",  # (E, D_v) <-> (D_v, E)
    "text.token_embedding.weight": "token_embedding.weight",  # (V, D_t)
    "text.positional_embedding": "positional_embedding",  # (L, D_t)
    "text.ln_final.weight": "ln_final.weight",
    "text.ln_final.bias": "ln_final.bias",
    "text_projection.weight": "text_projection",  # (E, D_t) <-> (D_t, E)
    "logit_scale": "logit_scale",  # ()
}
_BLOCK_PREFIXES: Dict[str, str] = {"visual.blocks.": "visual.transformer.resblocks.",
                                   "text.blocks.": "transformer.resblocks."}
#: Our patch-embedding bias has no open_clip counterpart (see :func:`open_clip_state_dict`).
_PATCH_BIAS = "visual.patch_embed.proj.bias"


def _open_clip_key(key: str) -> str:
    """One of our state-dict keys -> open_clip's, e.g. ``text.blocks.0.attn.qkv.weight`` ->
    ``transformer.resblocks.0.attn.in_proj_weight``."""
    if key in _OTHER_KEYS:
        return _OTHER_KEYS[key]
    for ours, theirs in _BLOCK_PREFIXES.items():
        if key.startswith(ours):
            index, name = key[len(ours):].split(".", 1)  # "3", "attn.qkv.weight"
            for a, b in _BLOCK_KEYS:
                if name.startswith(a):
                    return f"{theirs}{index}.{b}{name[len(a):]}"
    raise KeyError(f"{key} has no open_clip counterpart")


def open_clip_key_map(model: CLIP) -> Dict[str, str]:
    """Our state-dict key -> open_clip's ``CLIP`` key, for every key of ``model`` except the patch
    embedding's bias (folded into the position embedding, see :func:`open_clip_state_dict`).

    Vision tower (``visual.`` in both): ``cls_token`` -> ``class_embedding``, ``pos_embed`` ->
    ``positional_embedding``, ``patch_embed.proj.weight`` -> ``conv1.weight``, ``norm_pre`` -> ``ln_pre``,
    ``blocks.{i}`` -> ``transformer.resblocks.{i}``, ``norm`` or ``fc_norm`` -> ``ln_post``, and our
    ``image_projection.weight`` -> ``visual.proj``. Text tower (our ``text.`` prefix; open_clip's keys
    sit at the top level of its ``CLIP``): ``token_embedding``, ``positional_embedding``,
    ``blocks.{i}`` -> ``transformer.resblocks.{i}``, ``ln_final``; ``text_projection.weight`` ->
    ``text_projection``; ``logit_scale``. In a block: ``norm1`` -> ``ln_1``, ``attn.qkv.{weight,bias}``
    -> ``attn.in_proj_{weight,bias}``, ``attn.proj`` -> ``attn.out_proj``, ``ls1.gamma`` ->
    ``ls_1.gamma``, ``norm2`` -> ``ln_2``, ``mlp.fc1`` -> ``mlp.c_fc``, ``mlp.fc2`` -> ``mlp.c_proj``,
    ``ls2.gamma`` -> ``ls_2.gamma``.
    """
    return {k: _open_clip_key(k) for k in model.state_dict() if k != _PATCH_BIAS}


def _check_open_clip_compatible(model: CLIP) -> None:
    """Raise ValueError naming every choice of ``model`` that open_clip's ``CLIP`` cannot express."""
    v, t = model.visual.config, model.text.config
    problems = []
    if v["in_chans"] != 3:
        problems.append(f"in_chans={v['in_chans']}: open_clip's conv1 takes 3 channels; build ours with "
                        f"vision_cfg in_chans=3 and feed 3-channel images (CaptionedDigits(in_chans=3))")
    if not v["class_token"]:
        problems.append("class_token=False: open_clip's image tower always has a class embedding")
    if v["qk_norm"]:
        problems.append("qk_norm=True: open_clip then builds CustomResidualAttentionBlock (other names), not supported")
    if not v["qkv_bias"] or not t["qkv_bias"]:
        problems.append("qkv_bias=False: nn.MultiheadAttention always has an in_proj_bias")
    if v["act_layer"] != t["act_layer"]:
        problems.append(f"act_layer {v['act_layer']!r} (image) vs {t['act_layer']!r} (text): open_clip has one "
                        f"quick_gelu switch for both towers")
    stochastic = [n for n, m in model.named_modules()
                  if (isinstance(m, nn.Dropout) and m.p > 0) or isinstance(m, DropPath)]
    if stochastic:
        problems.append(f"dropout / drop path in {stochastic[:3]}: open_clip's towers have none")
    if problems:
        raise ValueError("this CLIP has no open_clip equivalent: " + "; ".join(problems))


def open_clip_config(model: CLIP) -> dict:
    """Arguments of :func:`build_open_clip` (``embed_dim``, ``vision_cfg`` = ``CLIPVisionCfg`` fields,
    ``text_cfg`` = ``CLIPTextCfg`` fields, ``quick_gelu``, ``init_logit_scale``) for the open_clip model
    that computes exactly ``model``'s function once :func:`open_clip_state_dict` is loaded into it.

    How our options map: ``num_heads`` -> ``head_width = D / h``; ``init_values`` -> ``ls_init_value``;
    ``pre_norm`` -> ``no_ln_pre = not pre_norm``; ``global_pool`` ``"token"`` / ``"avg"`` -> ``pool_type``
    ``'tok'`` / ``'avg'``; our LayerNorm after pooling (``fc_norm``) -> ``final_ln_after_pool``; a
    ``norm_eps`` other than 1e-5 -> ``norm_kwargs={"eps": ...}``; ``pool_type`` ``"eot"`` / ``"argmax"`` ->
    ``'eos'`` (with ``eos_id``) / ``'argmax'``; ``act_layer="quick_gelu"`` -> ``quick_gelu=True``. The
    patch bias and ``max_logit_scale`` need no field: the bias is folded into the position embedding,
    and the clamp only acts above ln 100, where open_clip's training loop never lets the scale go.

    Raises:
        ValueError: a model open_clip cannot express (1-channel images, no class token, no QKV bias,
            QK-norm, dropout, different activations in the two towers).
    """
    _check_open_clip_compatible(model)
    vis, txt = model.visual, model.text
    v, t = vis.config, txt.config
    vision_cfg = dict(
        image_size=v["img_size"], patch_size=v["patch_size"], width=v["embed_dim"], layers=v["depth"],
        head_width=v["embed_dim"] // v["num_heads"], mlp_ratio=v["mlp_ratio"], ls_init_value=v["init_values"],
        no_ln_pre=not v["pre_norm"], pool_type={"token": "tok", "avg": "avg"}[v["global_pool"]],
        final_ln_after_pool=isinstance(vis.fc_norm, nn.LayerNorm),
    )
    text_cfg = dict(
        context_length=t["context_length"], vocab_size=t["vocab_size"], width=t["width"], heads=t["num_heads"],
        layers=t["depth"], mlp_ratio=t["mlp_ratio"], pool_type={"eot": "eos", "argmax": "argmax"}[t["pool_type"]],
    )
    if t["pool_type"] == "eot":
        text_cfg["eos_id"] = t["eot_token_id"]
    for cfg, eps in ((vision_cfg, v["norm_eps"]), (text_cfg, t["norm_eps"])):
        if eps != 1e-5:  # open_clip's LayerNorm is nn.LayerNorm with PyTorch's eps 1e-5
            cfg["norm_kwargs"] = {"eps": eps}
    return dict(embed_dim=model.embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg,
                quick_gelu=v["act_layer"] == "quick_gelu", init_logit_scale=model.config["init_logit_scale"])


def open_clip_state_dict(model: CLIP) -> Dict[str, torch.Tensor]:
    """State dict for open_clip's ``CLIP`` built by ``build_open_clip(**open_clip_config(model))``:
    loads with ``strict=True`` and gives the same features and logit scale (``tests/test_clip.py``).

    Keys are renamed by :func:`open_clip_key_map`; three tensors change shape:

        ``visual.cls_token`` (1, 1, D) -> ``visual.class_embedding`` (D,)
        ``visual.pos_embed`` (1, 1 + N, D) -> ``visual.positional_embedding`` (1 + N, D)
        ``image_projection.weight`` (E, D_v) -> ``visual.proj`` (D_v, E), and ``text_projection.weight``
        (E, D_t) -> ``text_projection`` (D_t, E): ``nn.Linear`` computes ``x W^T``, open_clip ``x @ proj``.

    Our patch-embedding bias b (open_clip's ``conv1`` has none) is added to every patch token before
    the position embedding, so it is folded into the patch rows of the position embedding:
    ``positional_embedding[1:] = pos_embed[0, 1:] + b``. Same function; as a parametrisation it is
    not the same (in training b and the position embedding get different updates), so a model meant
    to *train* like open_clip's is built with ``patch_bias=False``.

    Raises:
        ValueError: a model open_clip cannot express (see :func:`open_clip_config`).
    """
    _check_open_clip_compatible(model)
    sd = model.state_dict()
    out = {}
    for ours, theirs in open_clip_key_map(model).items():
        v = sd[ours].detach().clone()
        if ours == "visual.cls_token":
            v = v.reshape(-1)  # (1, 1, D) -> (D,)
        elif ours == "visual.pos_embed":
            v = v[0]  # (1, 1 + N, D) -> (1 + N, D)
            if _PATCH_BIAS in sd:
                v[1:] += sd[_PATCH_BIAS]  # (N, D) + (D,): the bias of every patch token
        elif ours in ("image_projection.weight", "text_projection.weight"):
            v = v.T.contiguous()  # (E, D) -> (D, E)
        out[theirs] = v
    return out


def from_open_clip_state_dict(state_dict: Dict[str, torch.Tensor], model: CLIP) -> Dict[str, torch.Tensor]:
    """Inverse of :func:`open_clip_state_dict`: an open_clip ``CLIP`` state dict with our key names
    and shapes, loadable into ``model`` with ``strict=True``.

    ``model`` (ours, built with the open_clip model's sizes) says what the state dict alone does not:
    whether its final image LayerNorm is ``norm`` or ``fc_norm``, and whether it has a patch bias,
    which is set to zero (open_clip has none). Shapes: ``class_embedding`` (D,) -> (1, 1, D),
    ``visual.positional_embedding`` (1 + N, D) -> (1, 1 + N, D), ``visual.proj`` (D_v, E) -> (E, D_v),
    ``text_projection`` (D_t, E) -> (E, D_t).

    Raises:
        ValueError: keys that ``model`` has no place for (e.g. ``visual.ln_pre.*`` when ``model`` was
            built without ``pre_norm``, a SigLIP ``logit_bias``) or keys ``model`` needs and the state
            dict lacks.
    """
    to_ours = {theirs: ours for ours, theirs in open_clip_key_map(model).items()}
    unknown = sorted(set(state_dict) - set(to_ours))
    missing = sorted(set(to_ours) - set(state_dict))
    if unknown or missing:
        ln_pre = any("ln_pre" in k for k in unknown + missing)
        hint = " (ln_pre: build ours with vision_cfg pre_norm=True, or without it for no_ln_pre=True)" if ln_pre else ""
        raise ValueError(f"the open_clip state dict does not fit this CLIP: keys without a place {unknown[:4]}, "
                         f"keys missing {missing[:4]}{hint}")
    out = {}
    for theirs, v in state_dict.items():
        ours = to_ours[theirs]
        v = v.detach().clone()
        if ours == "visual.cls_token":
            v = v.reshape(1, 1, -1)  # (D,) -> (1, 1, D)
        elif ours == "visual.pos_embed":
            v = v[None]  # (1 + N, D) -> (1, 1 + N, D)
        elif ours in ("image_projection.weight", "text_projection.weight"):
            v = v.T.contiguous()  # (D, E) -> (E, D)
        out[ours] = v
    if _PATCH_BIAS in model.state_dict():
        out[_PATCH_BIAS] = torch.zeros_like(model.state_dict()[_PATCH_BIAS])  # (D,): open_clip's conv1 has none
    return out


def to_open_clip(model: CLIP) -> nn.Module:
    """open_clip's ``CLIP`` computing ``model``'s function: :func:`build_open_clip` of
    :func:`open_clip_config`, loaded strictly with :func:`open_clip_state_dict`."""
    theirs = build_open_clip(**open_clip_config(model))
    theirs.load_state_dict(open_clip_state_dict(model), strict=True)
    return theirs
