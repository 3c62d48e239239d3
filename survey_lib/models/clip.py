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

Deviations from the paper (CPU-sized; the architecture is the paper's):
    * towers 32-192 wide and 1-4 blocks deep; context length 16 (CLIP: 76 + 1) because the digit
      captions are short; images 32 x 32 grey (the digits upsampled), patch 4.
    * the text tower keeps open_clip's whole 49,408-token embedding table although the captions
      use a few dozen tokens (most of the model's parameters; unused rows only decay).
    * pre-norm blocks with LayerNorm eps 1e-6 and exact GELU (``survey_lib.layers.Block``; CLIP's
      text transformer is also pre-norm; OpenAI's weights use QuickGELU).
    * the image tower has no extra LayerNorm before the blocks (CLIP's ``ln_pre``), and the presets
      pool it by averaging the patch tokens (``global_pool="avg"``) instead of CLIP's CLS token:
      at timm's initialisation (std 0.02) a tiny ViT's CLS feature barely depends on the image,
      which slows the start. Measured (cpu preset, 30 epochs, one seed, held-out zero-shot
      accuracy): CLS 93.6%, average 96.4%. ``vision_cfg=dict(..., global_pool="token")`` restores CLIP's.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Block, _default_norm
from .vit import VisionTransformer

__all__ = [
    "INIT_LOGIT_SCALE",
    "MAX_LOGIT_SCALE",
    "scale_from_log",
    "causal_mask",
    "TextTransformer",
    "CLIP",
    "build_open_clip",
]


#: ln(1 / 0.07): CLIP's initial logit scale, i.e. temperature tau = 0.07 (CLIP Sec. 2.5).
INIT_LOGIT_SCALE: float = math.log(1.0 / 0.07)
#: ln(100): the logit scale is clipped so the multiplier exp(logit_scale) never exceeds 100.
MAX_LOGIT_SCALE: float = math.log(100.0)

#: The image tower of ``CLIP()`` without arguments: a ViT of 64 wide, 4 blocks, patch 4, for 32 px grey images.
DEFAULT_VISION_CFG: Dict[str, object] = dict(img_size=32, patch_size=4, in_chans=1, embed_dim=64, depth=4,
                                             num_heads=4, mlp_ratio=2.0)


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

    Args:
        vocab_size: rows of the token embedding (open_clip's BPE: 49,408).
        context_length: L, the longest token sequence.
        width: D.  depth: number of blocks.  num_heads: h.  mlp_ratio: MLP width / D.
        eot_token_id: the id whose position is pooled.

    Shapes:
        tokens (B, L') with L' <= L -> ``forward_features`` (B, L', D); ``forward`` (B, D).

    Raises:
        ValueError: more tokens than ``context_length``, or a row without an EOT token.
    """

    def __init__(self, vocab_size: int = 49408, context_length: int = 16, width: int = 64, depth: int = 2,
                 num_heads: int = 4, mlp_ratio: float = 4.0, qkv_bias: bool = True, eot_token_id: int = 49407) -> None:
        super().__init__()
        self.context_length = context_length
        self.width = width
        self.eot_token_id = eot_token_id
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.zeros(context_length, width))
        self.blocks = nn.ModuleList(Block(width, num_heads, mlp_ratio, qkv_bias=qkv_bias) for _ in range(depth))
        self.ln_final = _default_norm(width)
        self.register_buffer("attn_mask", causal_mask(context_length), persistent=False)
        self.init_weights()

    def init_weights(self) -> None:
        """CLIP's text-tower init (OpenAI's ``model.py``, kept by open_clip): token embedding
        N(0, 0.02), position embedding N(0, 0.01); in every block ``qkv`` N(0, D^-1/2), the output
        projections ``attn.proj`` and ``mlp.fc2`` N(0, D^-1/2 (2 depth)^-1/2), ``mlp.fc1`` N(0, (2D)^-1/2);
        zero biases.

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
                if lin.bias is not None:
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
        """Index of the first EOT token of each row. Shapes: (B, L) -> (B,)."""
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

    Args:
        embed_dim: E, the joint embedding width.
        vision_cfg: keyword arguments of :class:`survey_lib.models.vit.VisionTransformer`
            (``num_classes`` is forced to 0: the tower returns its pooled feature, the CLS token or,
            with ``global_pool="avg"`` as in the presets of ``survey_lib.recipes.clip``, the mean of the
            patch tokens).
        text_cfg: keyword arguments of :class:`TextTransformer`.
        init_logit_scale: initial log of 1/tau (CLIP: ln(1/0.07)).

    Shapes:
        ``encode_image``: (B, C, H, W) -> (B, E).  ``encode_text``: (B, L) -> (B, E).
        ``forward(images, tokens)`` -> (image_features (B, E), text_features (B, E), logit_scale
        scalar): features L2-normalised, logit_scale = exp(min(logit_scale, ln 100)) = 1/tau, exactly
        what :class:`~survey_lib.objectives.infonce.ClipLoss` and open_clip's ``ClipLoss`` take.

    Raises:
        ValueError: images and tokens with different batch sizes.
    """

    def __init__(self, embed_dim: int = 64, vision_cfg: Optional[dict] = None, text_cfg: Optional[dict] = None,
                 init_logit_scale: float = INIT_LOGIT_SCALE) -> None:
        super().__init__()
        vision_cfg = {**(vision_cfg or DEFAULT_VISION_CFG), "num_classes": 0}
        text_cfg = dict(text_cfg or {})
        self.config = dict(embed_dim=embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg,
                           init_logit_scale=init_logit_scale)
        self.embed_dim = embed_dim
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
        return image_features, text_features, scale_from_log(self.logit_scale)


def build_open_clip(embed_dim: int, vision_cfg: dict, text_cfg: dict) -> nn.Module:
    """open_clip's own ``open_clip.model.CLIP`` from a tiny custom config, randomly initialised: the
    reference our :class:`CLIP` is compared with.

    Nothing is downloaded: the model is built from ``CLIPVisionCfg`` / ``CLIPTextCfg`` directly,
    not through ``create_model``. open_clip's vision tower needs 3-channel images.

    Args:
        embed_dim: the joint width.  vision_cfg, text_cfg: ``CLIPVisionCfg`` / ``CLIPTextCfg`` fields
            (e.g. ``image_size``, ``patch_size``, ``width``, ``layers``, ``head_width``, ``mlp_ratio``;
            ``context_length``, ``width``, ``heads``, ``layers``).
    """
    from open_clip.model import CLIP as OpenCLIP, CLIPTextCfg, CLIPVisionCfg

    return OpenCLIP(embed_dim, CLIPVisionCfg(**vision_cfg), CLIPTextCfg(**text_cfg))
