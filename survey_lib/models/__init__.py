"""One file per architecture, and its conversion to and from timm / natten / open_clip.

``vit``, ``deit``, ``swin`` (with ``swin_windows``), ``nat`` (with ``nat_fast``), ``clip``, ``mae``,
``resnet``: ``nn.Module`` s only. A model knows no loss, training loop, dataset, figure or recipe;
its per-profile sizes live in :mod:`survey_lib.recipes`.
"""
from .vit import VisionTransformer

__all__ = ["VisionTransformer"]
