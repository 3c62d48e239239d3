"""Our ViT's training step against timm's (fused attention) at the same config and weights, and
the cost of ``return_attention=True`` (explicit attention) relative to the fused path.

    python benchmarks/bench_vit.py [--threads 2] [--repeats 15]

Prints medians of interleaved runs and the ratio timm_ms / ours_ms (>= 1.0: ours at least as fast).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import interleaved  # noqa: E402

from survey_lib.models.vit import VisionTransformer, timm_kwargs, timm_state_dict  # noqa: E402
from survey_lib.recipes.vit import VIT_MODELS  # noqa: E402


def main(threads: int = 2, repeats: int = 15, batch_size: int = 64) -> dict:
    import timm.models.vision_transformer as tvit

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = VIT_MODELS["cpu"]
    ours = VisionTransformer(**cfg)
    ref = tvit.VisionTransformer(**timm_kwargs(ours))
    ref.load_state_dict(timm_state_dict(ours))
    assert getattr(ref.blocks[0].attn, "fused_attn", True), "timm's fused attention is off"
    x = torch.randn(batch_size, cfg["in_chans"], cfg["img_size"], cfg["img_size"])
    y = torch.randint(0, cfg["num_classes"], (batch_size,))

    def train_step(model, opt):
        def run():
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run

    opt_o = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    opt_r = torch.optim.AdamW(ref.parameters(), lr=1e-4)
    t = interleaved({"ours": train_step(ours.train(), opt_o), "timm": train_step(ref.train(), opt_r)}, repeats=repeats)
    print(f"ViT training step, batch {batch_size}, config {cfg}, {threads} threads")
    print(f"  ours {t['ours']:.1f} ms   timm {t['timm']:.1f} ms   ratio timm/ours = {t['timm'] / t['ours']:.3f}")

    ours.eval()
    with torch.no_grad():
        f = interleaved({"fused": lambda: ours(x), "return_attention": lambda: ours.get_attention_maps(x)}, repeats=repeats)
    print(f"  forward, fused {f['fused']:.1f} ms; with return_attention=True (explicit, all blocks) "
          f"{f['return_attention']:.1f} ms = {f['return_attention'] / f['fused']:.2f}x the fused path")
    return {"train_ratio": t["timm"] / t["ours"], "attention_cost": f["return_attention"] / f["fused"]}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    a = p.parse_args()
    main(a.threads, a.repeats)
