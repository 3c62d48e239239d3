"""DeiT where distillation can help (issue 20, item 3): train every variant of the study for every
seed into the model cache, print the table (test accuracy, mean +- std over seeds) and the verdicts.
Notebook 02 calls the same ``survey_lib.recipes.deit_study.distillation_study``, so it reads these runs
from the cache.

Not a speed benchmark (``make bench`` does not run it). The teachers and the labels-only runs are
the equal-terms comparison's (``benchmarks/equal_terms.py``: ``resnet``, ``resnet_f010``, ``vit``,
``vit_f010``); run this after those are in the cache, or they are trained here first. One torch
thread per process; on two cores split the variants over two processes, then print the table::

    OMP_NUM_THREADS=1 python benchmarks/deit_study.py --variants deit_soft,deit_hard
    OMP_NUM_THREADS=1 python benchmarks/deit_study.py --variants deit_soft_f010,deit_hard_f010,deit_soft_deitkl_f010,deit_soft_t010_f010,deit_hard_t010_f010
    OMP_NUM_THREADS=1 python benchmarks/deit_study.py --record    # every variant (from the cache), the table, the rows

``--rows full`` / ``--rows f010`` select the rows on all the labels / on 10% of them (with the
teacher and the labels-only run they need); ``--record`` writes notebook 02's rows
(``figures/summary.csv``, notebook ``02_deit``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> None:
    import torch

    torch.set_num_threads(1)
    from survey_lib.recipes.deit_study import FEW_LABELS, FULL_DATA, VARIANTS, distillation_study, distillation_verdicts
    from survey_lib.report import Reporter

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rows", choices=("all", "full", "f010"), default="all",
                    help="the rows on all the labels (full), on 10%% of them (f010), or both")
    ap.add_argument("--variants", default=None, help="comma-separated variant names (overrides --rows); "
                    f"any of {', '.join(VARIANTS)}")
    ap.add_argument("--record", action="store_true", help="write the study's rows to figures/summary.csv (02_deit)")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.variants:
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    else:
        variants = list({"all": FULL_DATA + FEW_LABELS, "full": FULL_DATA, "f010": FEW_LABELS}[args.rows])
    study = distillation_study(args.profile, seeds, variants, progress=False)
    report = Reporter("02_deit", args.profile) if args.record else None
    for name, runs in study.items():
        cfg = runs.results[0].config
        dataset = cfg["data"]["dataset"]
        test, val = runs.values("test_acc"), [r.history.last["val_acc"] for r in runs.results]
        print(f"{name:>22}: val {sum(val) / len(val):.4f}  test {sum(test) / len(test):.4f}  per seed (test) "
              + ", ".join(f"{v:.4f}" for v in test) + f"  {runs.seconds:.0f} s  ({VARIANTS[name].label})")
        if report is not None:
            report.record_seeds(name, dataset, "test_acc", test, runs.seconds)
            report.record_seeds(name, dataset, "val_acc", val, runs.seconds)
    for v in distillation_verdicts(study):
        p = "n/a" if v["p_value"] is None else f"{v['p_value']:.3f}"
        pooled = "n/a" if v["pooled_std"] is None else f"{v['pooled_std']:.4f}"
        print(f"{v['claim']}: {v['a']} - {v['b']} = {v['diff']:+.4f} (pooled std {pooled}, p = {p}); "
              f"verdict: {v['verdict']}; by more than two pooled std: {v['verdict_two_std']}")


if __name__ == "__main__":
    main()
