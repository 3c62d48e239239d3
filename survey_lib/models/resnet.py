"""Convolutional baselines: timm ResNets for small images, and loading local pretrained weights.

* :func:`build_resnet` - the ResNet of the CNN-vs-ViT study (timm's ``ResNet`` with BasicBlocks, no
  stem max-pool) from scratch, or a timm ResNet fine-tuned from a local checkpoint.
* :func:`timm_resnet` - a named timm ResNet (e.g. ``resnet10t``, DeiT's CNN teacher here) with
  custom widths, randomly initialised.
* :func:`load_backbone_checkpoint` - a local state dict into a model, adapting the stem's input
  channels and skipping the classifier.

Source: He et al. 2016, "Deep Residual Learning for Image Recognition", arXiv:1512.03385.
Every model is built with ``pretrained=False``: nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple, Union

import torch
from torch import nn

__all__ = ["build_resnet", "timm_resnet", "load_backbone_checkpoint"]


def build_resnet(num_classes: int, in_chans: int = 1, arch: str = "small", checkpoint: Union[str, Path, None] = None,
                 channels: Tuple[int, ...] = (16, 32, 64, 128), layers: Tuple[int, ...] = (1, 1, 1, 1)) -> nn.Module:
    """A timm ResNet for small images, from scratch, or a timm ResNet fine-tuned from a local checkpoint.

    ``arch="small"``: timm's ``ResNet`` with BasicBlocks ``layers`` and widths ``channels`` (about
    0.3M parameters and 7M multiply-adds at 32 px by default), sized for 32-48 px inputs by dropping
    the stem's max-pool: the 7x7 stride-2 stem convolution alone takes a 32 px image to 16 x 16, and
    the four stages end on 2 x 2 maps (with the max-pool they would end on 1 x 1).

    Any other ``arch`` is a timm model name (e.g. ``"resnet50"``, the source's CNN), built with
    ``pretrained=False``; with ``checkpoint``, its weights are loaded from that local file by
    :func:`load_backbone_checkpoint` (the classifier is re-initialised for ``num_classes``; a
    3-channel stem is summed to ``in_chans``).

    Shapes: (B, in_chans, H, W) -> logits (B, num_classes).

    Raises:
        ValueError: ``checkpoint`` with ``arch="small"`` (no pretrained small ResNet exists).
        FileNotFoundError: ``checkpoint`` does not exist.
    """
    import timm
    from timm.models.resnet import BasicBlock, ResNet

    if arch == "small":
        if checkpoint is not None:
            raise ValueError("arch='small' has no pretrained weights; pass arch='resnet50' (or another timm "
                             "ResNet) together with checkpoint=...")
        model = ResNet(BasicBlock, layers=list(layers), channels=tuple(channels), num_classes=num_classes,
                       in_chans=in_chans)
        model.maxpool = nn.Identity()  # total stride 16 instead of 32: a 32 px image ends on 2 x 2 maps
        return model
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    if checkpoint is not None:
        load_backbone_checkpoint(model, checkpoint)
    return model


def timm_resnet(model_name: str = "resnet10t", in_chans: int = 1, num_classes: int = 10, **kwargs) -> nn.Module:
    """A timm ResNet by name, randomly initialised (``pretrained=False``), e.g. DeiT's CNN teacher.

    Args:
        model_name: a timm ResNet (``resnet10t``: deep-tiered stem, one BasicBlock per stage,
            average-pool shortcuts).
        kwargs: any timm ``ResNet`` argument (``channels``, ``stem_width``, ...).

    Shapes: (B, in_chans, H, W) -> (B, num_classes).
    """
    import timm

    return timm.create_model(model_name, pretrained=False, in_chans=in_chans, num_classes=num_classes, **kwargs)


def load_backbone_checkpoint(model: nn.Module, checkpoint: Union[str, Path]) -> Dict[str, List[str]]:
    """Load a local checkpoint into ``model`` for fine-tuning; returns what was adapted or skipped.

    Accepts a plain state dict, a dict holding it under ``state_dict`` or ``model`` (timm training
    and :func:`survey_lib.train.fit` checkpoints), or a ``.safetensors`` file. Tensors whose shape
    differs only in input channels of the first convolution are adapted with timm's
    ``adapt_input_conv`` (RGB summed to grey); other mismatches (the classifier of another number of
    classes) are skipped and keep their fresh initialisation.

    Returns:
        ``{"adapted": [...], "skipped": [...], "missing": [...]}`` key lists.

    The file is read with ``torch.load(weights_only=True)``: tensors and plain data only.

    Raises:
        FileNotFoundError: no file at ``checkpoint``.
        ValueError: nothing in the checkpoint matches the model (wrong architecture), or the file
            holds objects other than tensors and plain data (refused unread).
    """
    from timm.models import adapt_input_conv

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; pass the path of a local state dict "
                                f"(.pth/.pt/.bin or .safetensors), or checkpoint=None to train from scratch")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        import pickle

        try:  # tensors and plain data only: a crafted file cannot run code, it is refused unread
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            reason = next((line.strip() for line in str(e).splitlines() if line.strip().startswith("Unsupported")), "")
            raise ValueError(f"{path} cannot be read as tensors and plain data (torch.load weights_only=True: "
                             f"{reason[:160]}): it is corrupt, or it holds other objects, which are refused unread "
                             f"so that no code runs; save its state dict alone (torch.save(model.state_dict(), ...)) "
                             f"or convert it to .safetensors") from None
        for k in ("state_dict", "model"):
            if isinstance(state, dict) and k in state and isinstance(state[k], dict):
                state = state[k]
                break
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    own = model.state_dict()
    load, adapted, skipped = {}, [], []
    for k, v in state.items():
        if k not in own:
            skipped.append(k)
        elif v.shape == own[k].shape:
            load[k] = v
        elif v.ndim == 4 and v.shape[0] == own[k].shape[0] and v.shape[2:] == own[k].shape[2:]:
            load[k] = adapt_input_conv(own[k].shape[1], v)  # (O, I, kh, kw) with I -> in_chans
            adapted.append(k)
        else:
            skipped.append(k)
    if not load:
        raise ValueError(f"{path}: none of its {len(state)} tensors match {type(model).__name__}; is it a "
                         f"checkpoint of this architecture?")
    missing = [k for k in own if k not in load]
    model.load_state_dict(load, strict=False)
    return {"adapted": adapted, "skipped": skipped, "missing": missing}
