"""DeiT: a ViT with a distillation token ("distillation through attention").

Touvron et al. 2021, "Training data-efficient image transformers & distillation through attention",
ICML 2021, arXiv:2012.12877, Sec. 4 and Fig. 2. The student is the ViT of
:mod:`survey_lib.models.vit` with one more learned token:

    z_0 = [x_class; x_distil; x_p^1 E; ...; x_p^N E] + E_pos      E_pos now has 2 + N rows
    y_cls  = head(LN(z_L)[:, 0])        trained against the true label
    y_dist = head_dist(LN(z_L)[:, 1])   trained against the teacher (``survey_lib.objectives.distillation``)
    at test time: the average of the two heads' logits, (y_cls + y_dist) / 2

The distillation token interacts with the class token and the patches only through attention, so it
can be read out like the class token: :meth:`DistilledVisionTransformer.get_attention_maps` returns
(B, h, 2 + N, 2 + N) maps, query 0 is the class token, query 1 the distillation token.

Parameter names are DeiT's and timm's (``dist_token``, ``head_dist``), so the state dict loads into
``timm.models.deit.VisionTransformerDistilled`` unchanged (``tests/test_deit.py`` checks equal
logits to 1e-5 in training and eval modes).

Train/eval semantics. DeiT's own ``DistilledVisionTransformer`` returns ``(cls_logits,
dist_logits)`` whenever it is in training mode and their average in eval mode. timm's
``VisionTransformerDistilled`` adds a flag, ``distilled_training`` (default **False**): only with
the flag on *and* in training mode does it return the pair; otherwise it returns the average, even
while training. We keep timm's flag and method (``set_distilled_training``) but default it to
**True**, i.e. DeiT's behaviour; the equivalence test sets both models' flags and checks every
combination.

Average pooling (``global_pool="avg"``, the ``cpu`` ViT of :mod:`survey_lib.recipes.vit`). DeiT adds
the distillation token to a ViT that classifies its class token, and compares the two networks
(Table 3: DeiT-B against DeiT-B with the token). Our MNIST ViT classifies the mean of its patch tokens
instead (its class token is kept in the sequence but not read, as in timm). The faithful analogue
keeps the baseline's read-out and adds what DeiT adds: ``head`` reads what the plain ViT's head reads
(the mean of the N patch tokens, through ``fc_norm``), and ``head_dist`` reads the distillation token
(through the same ``fc_norm``, as in ``'token'`` mode both tokens go through the same final
LayerNorm). The alternative, switching the student to class-token pooling, would make "with and
without distillation" differ by the read-out as well. The distillation token keeps its own output,
trained against the teacher only, as in DeiT. timm's ``VisionTransformerDistilled`` accepts
``'token'`` only, so this mode is checked by its properties (``tests/test_deit.py``), not against timm.

Deviations from the paper (CPU-sized defaults only; the architecture is the paper's):
    * the training presets (``survey_lib.recipes.deit``) are the tiny ViTs of ``survey_lib.recipes.vit``
      (64 wide, 4 blocks for ``cpu``); DeiT-Ti/S/B are 192/384/768 wide with 12 blocks at 224 px.
    * late fusion of the two heads averages their *logits*, as DeiT's code and timm do; the paper's
      text (Sec. 4, "joint classifiers") adds their *softmax outputs*. The argmax can differ when the
      two heads disagree; the logit average is kept so that the model equals timm's.
    * the distillation token is initialised with a truncated normal of std 0.02, as in DeiT and
      timm (the class token, inherited from our ViT, uses std 1e-6 like timm).
"""
from __future__ import annotations

from typing import Dict, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .vit import VisionTransformer, resample_pos_embed
from .vit import timm_kwargs as _vit_timm_kwargs

__all__ = [
    "DistilledVisionTransformer",
    "timm_state_dict",
    "timm_kwargs",
]


class DistilledVisionTransformer(VisionTransformer):
    """ViT with DeiT's distillation token and second head.

    Args:
        **kwargs: every argument of :class:`survey_lib.models.vit.VisionTransformer`; ``class_token``
            must be True (the token layout is class token, distillation token, patches).
            ``global_pool='token'`` (DeiT, timm): ``head`` reads token 0; ``'avg'``: ``head`` reads the
            mean of the patch tokens, like the plain ViT with ``'avg'`` (module docstring).
            ``head_dist`` always reads token 1.

    Attributes:
        dist_token: (1, 1, D) learned distillation token.
        pos_embed: (1, 2 + N, D) position embedding of the class token, the distillation token and
            the N patches (two prefix rows, as in timm's ``VisionTransformerDistilled``).
        head_dist: Linear(D, K) classifier of the distillation token.
        distilled_training: if True (default, DeiT's behaviour) the model returns the pair of
            logits in training mode; if False (timm's default) it always returns their average.

    Shapes:
        x: (B, C, H, W) ->
            training mode with ``distilled_training``: tuple (cls_logits (B, K), dist_logits (B, K));
            otherwise: (cls_logits + dist_logits) / 2, (B, K).
        ``forward_features``: (B, 2 + N, D), class token first, distillation token second.
        ``embed``: (B, D), the average of the two heads' (normalised) inputs (timm's ``pre_logits``).
        ``get_attention_maps``: list of L tensors (B, h, 2 + N, 2 + N).

    Raises:
        ValueError: ``class_token=False``, plus every error of :class:`VisionTransformer` (e.g. a
            ``global_pool`` other than ``'token'`` or ``'avg'``).

    Source: Touvron et al. 2021, arXiv:2012.12877, Sec. 4 and Fig. 2.
    """

    def __init__(self, **kwargs) -> None:
        if not kwargs.get("class_token", True):
            raise ValueError("DistilledVisionTransformer needs class_token=True: its tokens are the class token (0), "
                             "the distillation token (1), then the patches, as in DeiT and timm")
        super().__init__(**kwargs)
        D = self.embed_dim
        self.num_prefix_tokens = 2
        # Only the new parameters are initialised here, after the parent initialised everything else,
        # so a plain ViT and a distilled one built from the same seed start from the same shared weights.
        self.dist_token = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, 1, D), std=0.02))
        # The parent's (1, 1 + N, D) position embedding gets a new row for the distillation token.
        dist_pos = nn.init.trunc_normal_(torch.zeros(1, 1, D), std=0.02)  # (1, 1, D)
        old = self.pos_embed.data  # (1, 1 + N, D): class token, then patches
        self.pos_embed = nn.Parameter(torch.cat([old[:, :1], dist_pos, old[:, 1:]], dim=1))  # (1, 2 + N, D)
        self.head_dist = nn.Linear(D, self.num_classes) if self.num_classes > 0 else nn.Identity()
        self.distilled_training = True
        if isinstance(self.head_dist, nn.Linear):
            nn.init.trunc_normal_(self.head_dist.weight, std=0.02)
            nn.init.zeros_(self.head_dist.bias)

    def init_weights(self) -> None:
        """Parent's init (called by the parent's constructor before ``dist_token`` exists), plus the
        distillation token (truncated normal, std 0.02) once it does."""
        super().init_weights()
        if getattr(self, "dist_token", None) is not None:
            nn.init.trunc_normal_(self.dist_token, std=0.02)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return super().no_weight_decay() | {"dist_token"}

    def set_distilled_training(self, enable: bool = True) -> None:
        """timm's switch: with ``enable=False`` training mode also returns the averaged logits."""
        self.distilled_training = bool(enable)

    # -- Eq. 1 with two prefix tokens ------------------------------------------------------------
    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch-embed, prepend class and distillation tokens, add the (interpolated) position embedding.

        Shapes: (B, C, H, W) -> (B, 2 + N, D).
        """
        B, _, H, W = x.shape
        grid = self.patch_embed.dynamic_grid_size((H, W))
        x = self.patch_embed(x)  # (B, N, D)
        prefix = torch.cat([self.cls_token.expand(B, -1, -1), self.dist_token.expand(B, -1, -1)], dim=1)  # (B, 2, D)
        x = torch.cat([prefix, x], dim=1)  # (B, 2 + N, D)
        pos = resample_pos_embed(self.pos_embed, grid, self.patch_embed.grid_size, self.num_prefix_tokens)
        return self.norm_pre(self.pos_drop(x + pos))  # norm_pre: the identity unless pre_norm=True

    def head_inputs(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """What the two heads read from the final tokens: the class side (token 0 for ``'token'``, the
        fc-normalised mean of the patch tokens for ``'avg'``) and the distillation token (token 1,
        fc-normalised for ``'avg'``).

        Shapes: (B, 2 + N, D) -> two (B, D).
        """
        if self.global_pool == "avg":
            return self.fc_norm(x[:, self.num_prefix_tokens:].mean(dim=1)), self.fc_norm(x[:, 1])
        return x[:, 0], x[:, 1]  # 'token': DeiT's and timm's read-out (the final norm was applied to every token)

    def forward_head(
        self, x: torch.Tensor, pre_logits: bool = False
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Classify the class token with ``head`` and the distillation token with ``head_dist``.

        Shapes: (B, 2 + N, D) -> (B, K), or a pair of (B, K) (see the class docstring);
        with ``pre_logits`` the (B, D) average of the two tokens.
        """
        x_cls, x_dist = self.head_inputs(x)  # (B, D), (B, D)
        x_cls, x_dist = self.head_drop(x_cls), self.head_drop(x_dist)
        if pre_logits:
            return (x_cls + x_dist) / 2
        y_cls, y_dist = self.head(x_cls), self.head_dist(x_dist)  # (B, K), (B, K)
        if self.training and self.distilled_training:
            return y_cls, y_dist
        return (y_cls + y_dist) / 2

    # -- analysis --------------------------------------------------------------------------------
    @torch.no_grad()
    def prefix_tokens_through_depth(self, x: torch.Tensor) -> torch.Tensor:
        """The class and distillation tokens entering the first block and leaving every block.

        Shapes: (B, C, H, W) -> (L + 1, B, 2, D); index 0 is the input of block 1 (token plus its
        position embedding), index l the output of block l (before the final LayerNorm).
        """
        z = self.prepare_tokens(x)  # (B, 2 + N, D)
        out = [z[:, :2]]
        for blk in self.blocks:
            z = blk(z)
            out.append(z[:, :2])  # (B, 2, D)
        return torch.stack(out)  # (L + 1, B, 2, D)

    @torch.no_grad()
    def readouts_through_depth(self, x: torch.Tensor) -> torch.Tensor:
        """What each head would read if the network stopped at each depth (before any final norm):
        the class side (the class token for ``'token'``, the mean of the patch tokens for ``'avg'``)
        and the distillation token.

        Shapes: (B, C, H, W) -> (L + 1, B, 2, D); index 0 is the input of block 1, index l the output
        of block l.
        """
        z = self.prepare_tokens(x)  # (B, 2 + N, D)
        out = []
        for blk in [None, *self.blocks]:
            if blk is not None:
                z = blk(z)
            cls_side = z[:, self.num_prefix_tokens:].mean(dim=1) if self.global_pool == "avg" else z[:, 0]  # (B, D)
            out.append(torch.stack([cls_side, z[:, 1]], dim=1))  # (B, 2, D)
        return torch.stack(out)  # (L + 1, B, 2, D)

    @torch.no_grad()
    def cls_dist_similarity(self, x: torch.Tensor) -> torch.Tensor:
        """Mean cosine similarity between the class and distillation read-outs at every depth
        (:meth:`readouts_through_depth`: for ``'avg'`` the class side is the mean patch token).

        DeiT Sec. 4 reports 0.06 for the learned tokens and 0.93 at the last layer of DeiT-B.

        Shapes: (B, C, H, W) -> (L + 1,), index 0 = input of block 1, index l = output of block l.
        """
        t = self.readouts_through_depth(x)  # (L + 1, B, 2, D)
        return F.cosine_similarity(t[:, :, 0], t[:, :, 1], dim=-1).mean(dim=1)  # (L + 1,)


# ---------------------------------------------------------------------------------------------
# timm interoperability
# ---------------------------------------------------------------------------------------------
def timm_state_dict(model: DistilledVisionTransformer) -> Dict[str, torch.Tensor]:
    """State dict for ``timm.models.deit.VisionTransformerDistilled`` of the same config.

    Key mapping (ours -> timm): identity. On top of the ViT keys (see
    :func:`survey_lib.models.vit.timm_state_dict`): ``dist_token`` (1, 1, D), ``pos_embed``
    (1, 2 + N, D) with rows ordered class token, distillation token, patches, and ``head_dist``.
    """
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def timm_kwargs(model: DistilledVisionTransformer) -> dict:
    """Keyword arguments that build timm's ``VisionTransformerDistilled`` with our architecture."""
    return _vit_timm_kwargs(model)
