"""The ablation of open_clip's choices in our CLIP (issue 19): train every row of
``survey_lib.recipes.clip.ablation_overrides`` with every seed into the model cache, and print the table
(zero-shot accuracy on the VALIDATION split, mean +- std over seeds, paired difference against ours and
the verdict of ``survey_lib.evaluate.compare_seeds``). Notebook 05 reads the same runs from the cache.

Not a speed benchmark (``make bench`` does not run it). One torch thread per process; on two cores,
split the rows over two processes::

    OMP_NUM_THREADS=1 python benchmarks/clip_ablation.py --rows 0,2,4,6,8,10,12
    OMP_NUM_THREADS=1 python benchmarks/clip_ablation.py --rows 1,3,5,7,9,11
    OMP_NUM_THREADS=1 python benchmarks/clip_ablation.py            # every row (from the cache) and the table

``--rows`` takes indices into the list ``--list`` prints (ours, index 0, is always trained: it is the
reference of every comparison).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> None:
    import torch

    torch.set_num_threads(1)
    from survey_lib.recipes.clip import ablation_overrides, run_ablation

    names = list(ablation_overrides())
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rows", default=None, help="comma-separated indices of the rows (default: all)")
    ap.add_argument("--list", action="store_true", help="print the rows and their indices, and stop")
    args = ap.parse_args(argv)
    if args.list:
        for i, n in enumerate(names):
            print(i, n)
        return
    rows = None if args.rows is None else [names[int(i)] for i in args.rows.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    table = run_ablation(args.profile, seeds=seeds, names=rows, progress=False)
    print(f"\nzero-shot accuracy, validation split, held-out templates; profile {args.profile}, seeds {seeds}")
    for r in table:
        vals = ", ".join(f"{v:.3f}" for v in r["values"])
        line = f"{r['name']:<48} {r['mean']:.4f} +- {r['std'] or 0:.4f}  [{vals}]  {r['seconds']:.0f} s"
        if "diff" in r:
            p = "n/a" if r["p_value"] is None else f"{r['p_value']:.3f}"
            line += f"  diff {r['diff']:+.4f} (p {p}) -> {r['verdict']}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
