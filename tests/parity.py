"""The parity harness: the same non-trivial weights in our module and in the reference library's
(timm, natten, open_clip), then the same outputs. Every equivalence test of the suite uses it."""
from typing import Callable, Sequence

import torch
from torch import nn


def perturbed(model: nn.Module, scale: float = 0.05, seed: int = 1) -> nn.Module:
    """Add ``scale * N(0, 1)`` noise to every parameter (in place; returns the model), so that a wrong
    key mapping cannot hide behind zeros, ones or a symmetric initialisation."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


def load_into(reference: nn.Module, state_dict: dict) -> nn.Module:
    """Load our converted state dict into the reference strictly (every key, no extra) and return it."""
    reference.load_state_dict(state_dict, strict=True)
    return reference


def assert_same_outputs(ours: Callable, reference: Callable, inputs: Sequence[torch.Tensor], atol: float = 1e-5,
                        rtol: float = 0.0, backward: bool = False) -> None:
    """``ours(*inputs)`` equals ``reference(*inputs)``; with ``backward`` also the gradients with
    respect to every input that requires them (outputs summed with fixed random weights)."""
    if not backward:
        with torch.no_grad():
            torch.testing.assert_close(ours(*inputs), reference(*inputs), atol=atol, rtol=rtol)
        return
    a_in = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    b_in = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    a, b = ours(*a_in), reference(*b_in)
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)
    w = torch.randn(a.shape, generator=torch.Generator().manual_seed(0))
    (a * w).sum().backward()
    (b * w).sum().backward()
    for x, y in zip(a_in, b_in):
        if x.grad is not None:
            torch.testing.assert_close(x.grad, y.grad, atol=atol, rtol=rtol)
