"""Our Swin's training step (forward + backward + AdamW step) against timm's at the same config
and weights, plus the choice of attention path inside ``WindowAttention`` during training.

    python benchmarks/bench_swin.py [--threads 1] [--repeats 9] [--steps 3] [--batch-size B] [--profile cpu]

Both models use ``SWIN_CONFIGS[profile]`` with drop path off and start from the same weights
(ours, converted by ``timm_state_dict``), on one batch of the recipe's size (``SWIN_TRAIN[profile]``,
32 for cpu) unless ``--batch-size`` says otherwise; timm 1.0.31's ``WindowAttention`` runs its explicit
path (its fused path is experimental and off by default). Candidates are timed interleaved
(``benchmarks/common.py``), each timing covers ``--steps`` consecutive steps, and the report gives
per-step medians and the ratio timm_ms / ours_ms (>= 1: ours at least as fast). The third
candidate, ``ours_sdpa``, forces ``scaled_dot_product_attention`` in training: on CPU a
differentiable ``attn_mask`` (the relative position bias) sends SDPA to its unfused math path,
which is why ``WindowAttention.use_fused`` picks the explicit formula there.

The machine has 2 cores shared with other work: timings taken while anything else runs are noisy.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
from typing import Dict, Optional

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from common import interleaved  # noqa: E402

from survey_lib.recipes.swin import SWIN_TRAIN, swin_for_profile  # noqa: E402
from survey_lib.models.swin import WindowAttention, timm_kwargs, timm_state_dict  # noqa: E402


def _train_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int):
    """A closure running ``steps`` AdamW training steps of ``model`` on the fixed batch (x, y)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)

    def run() -> None:
        for _ in range(steps):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return run


def main(threads: int = 1, repeats: int = 9, steps: int = 3, batch_size: Optional[int] = None, profile: str = "cpu") -> Dict[str, float]:
    from timm.models.swin_transformer import SwinTransformer as TimmSwin

    if batch_size is None:
        batch_size = SWIN_TRAIN[profile]["batch_size"]

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ours = swin_for_profile(profile, drop_path_rate=0.0).train()
    ref = TimmSwin(**timm_kwargs(ours)).train()
    ref.load_state_dict(timm_state_dict(ours), strict=True)
    forced = copy.deepcopy(ours)
    for m in forced.modules():
        if isinstance(m, WindowAttention):
            m.use_fused = lambda x: True  # SDPA even where a gradient flows into the bias table
    cfg = ours.config
    x = torch.randn(batch_size, cfg["in_chans"], cfg["img_size"], cfg["img_size"])
    y = torch.randint(0, cfg["num_classes"], (batch_size,))
    t = interleaved({
        "ours": _train_steps(ours, x, y, steps),
        "timm": _train_steps(ref, x, y, steps),
        "ours_sdpa": _train_steps(forced, x, y, steps),
    }, repeats=repeats, warmup=1)
    t = {k: v / steps for k, v in t.items()}  # per step
    ratio = t["timm"] / t["ours"]
    print(f"Swin training step (forward + backward + AdamW), profile {profile} {dict((k, cfg[k]) for k in ('embed_dim', 'depths', 'num_heads', 'window_size', 'patch_size'))}, "
          f"batch {batch_size}, {threads} thread(s), median of {repeats} interleaved repeats x {steps} steps")
    print(f"  ours      {t['ours']:8.1f} ms/step   (explicit window attention in training)")
    print(f"  timm      {t['timm']:8.1f} ms/step")
    print(f"  ours_sdpa {t['ours_sdpa']:8.1f} ms/step   (SDPA forced: math fallback on CPU)")
    print(f"  ratio timm/ours = {ratio:.3f}   ratio ours_sdpa/ours = {t['ours_sdpa'] / t['ours']:.3f}")
    return {"ours_ms": t["ours"], "timm_ms": t["timm"], "ours_sdpa_ms": t["ours_sdpa"], "train_ratio": ratio}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=None, help="default: the profile's training batch")
    p.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "full"])
    a = p.parse_args()
    main(a.threads, a.repeats, a.steps, a.batch_size, a.profile)
