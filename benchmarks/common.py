"""Shared timing helpers for the benchmarks: interleaved A/B runs, medians, explicit threads."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict


def interleaved(fns: Dict[str, Callable[[], None]], repeats: int = 15, warmup: int = 3) -> Dict[str, float]:
    """Time each function ``repeats`` times, alternating between them (A B A B ...), after warm-up.

    Interleaving spreads any drift of the machine (other processes, frequency scaling) over all
    candidates. Returns the median wall time of each, in milliseconds.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: Dict[str, list] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1000.0)
    return {k: statistics.median(v) for k, v in times.items()}
