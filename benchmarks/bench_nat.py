"""Our pure-PyTorch neighbourhood attention against natten's ``na2d`` on CPU (forward, no grad).

    python benchmarks/bench_nat.py [--threads 1] [--repeats 9]

Cases: NAT-like feature maps (batch, grid, heads, head_dim, kernel, dilation). Candidates, timed
interleaved (``benchmarks/common.py``), medians reported:

* ``ours``: :func:`survey_lib.models.nat.neighborhood_attention_2d` (default ``method="tiled"``);
* ``ours_gather``: the same with ``method="gather"`` (the step-by-step definition);
* ``natten``: ``natten.functional.na2d``. natten 0.21.7 on CPU runs flex attention without
  ``torch.compile``, which builds the full N x N score matrix; its CUDA kernels are the fast path.

The ratio natten_ms / ours_ms >= 1 means ours is faster (target >= 0.5). Also printed: our
forward + backward time (natten has no CPU backward). The machine has 2 cores shared with other
work: timings taken while anything else runs are noisy.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Dict, List

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import interleaved  # noqa: E402

from survey_lib.models.nat import HAS_NATTEN, neighborhood_attention_2d  # noqa: E402

#: (batch, height, width, heads, head_dim, kernel_size, dilation)
CASES: List[tuple] = [
    (8, 32, 32, 2, 32, 7, 1),
    (8, 32, 32, 2, 32, 7, 2),
    (2, 56, 56, 2, 32, 7, 1),  # NAT-Mini level 1 at 224 px
    (32, 16, 16, 4, 16, 3, 1),
    (64, 8, 8, 3, 16, 3, 2),  # the digits NAT (cpu preset), level 1, DiNA block
]


def main(threads: int = 1, repeats: int = 9) -> Dict[str, float]:
    if not HAS_NATTEN:
        print("natten is not installed; nothing to compare")
        return {}
    import natten.functional

    warnings.filterwarnings("ignore", module="torch.nn.attention.flex_attention")
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    print(f"neighbourhood attention forward on CPU, {threads} thread(s), median of {repeats} interleaved repeats")
    print(f"{'B':>3} {'grid':>7} {'h':>2} {'d':>3} {'k':>2} {'dil':>3} | {'ours':>8} {'gather':>8} {'natten':>8} "
          f"{'natten/ours':>11} | {'ours fwd+bwd':>12}")
    ratios = {}
    for B, H, W, h, d, k, dil in CASES:
        q, kk, v = (torch.randn(B, H, W, h, d) for _ in range(3))
        with torch.no_grad():
            ref = natten.functional.na2d(q, kk, v, kernel_size=k, dilation=dil)
            err = (neighborhood_attention_2d(q, kk, v, k, dil) - ref).abs().max().item()

        def ours():
            with torch.no_grad():
                neighborhood_attention_2d(q, kk, v, k, dil)

        def gather():
            with torch.no_grad():
                neighborhood_attention_2d(q, kk, v, k, dil, method="gather")

        def nat():
            with torch.no_grad():
                natten.functional.na2d(q, kk, v, kernel_size=k, dilation=dil)

        t = interleaved({"ours": ours, "gather": gather, "natten": nat}, repeats=repeats, warmup=1)
        qg, kg, vg = (x.clone().requires_grad_() for x in (q, kk, v))
        tb = interleaved({"fb": lambda: neighborhood_attention_2d(qg, kg, vg, k, dil).sum().backward()},
                         repeats=max(3, repeats // 3), warmup=1)["fb"]
        ratio = t["natten"] / t["ours"]
        ratios[f"B{B}_{H}x{W}_k{k}_d{dil}"] = ratio
        print(f"{B:>3} {H:>3}x{W:<3} {h:>2} {d:>3} {k:>2} {dil:>3} | {t['ours']:8.1f} {t['gather']:8.1f} {t['natten']:8.1f} "
              f"{ratio:11.2f} | {tb:12.1f}   (max |ours - natten| = {err:.1e})")
    worst = min(ratios.values())
    print(f"ratio natten_ms / ours_ms: min {worst:.2f}, median {sorted(ratios.values())[len(ratios) // 2]:.2f} (target >= 0.5)")
    return {"min_ratio": worst, **ratios}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=9)
    a = p.parse_args()
    main(a.threads, a.repeats)
