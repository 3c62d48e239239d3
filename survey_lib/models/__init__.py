"""One file per architecture."""
from .vit import VisionTransformer, vit_for_profile

__all__ = ["VisionTransformer", "vit_for_profile"]
