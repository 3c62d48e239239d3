"""DINO on MNIST-5k (issue 18): train every row of notebook 07's study (the full method, the
collapse ablations, the DinoNAT paper's two errors, DinoNAT) for its seeds into the model cache,
and the photo run of the colour-to-thermal-like simulation; print the table, the verdicts and the
cross-modal verdict. Notebook 07 calls the same ``survey_lib.recipes.dino_study`` functions, so it
reads these runs from the cache.

Not a speed benchmark (``make bench`` does not run it). One torch thread per process; on two cores
split the rows over two processes, then print the table (from the cache)::

    OMP_NUM_THREADS=1 python benchmarks/dino_study.py --variants dino_vit,dino_no_centering,dino_no_sharpening --no-table
    OMP_NUM_THREADS=1 python benchmarks/dino_study.py --variants dino_source_sign,dino_epoch_teacher,dino_nat --photo --no-table
    OMP_NUM_THREADS=1 python benchmarks/dino_study.py --record     # every row (from the cache), the table, the rows

``--seeds`` sets the seeds of every selected row (default: 3 for ``dino_vit`` and ``dino_nat``, 2
for each ablation, ``survey_lib.recipes.dino_study.STUDY_SEEDS``); ``--record`` writes notebook 07's
rows (``figures/summary.csv``, notebook ``07_dino``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> None:
    import torch

    torch.set_num_threads(1)
    from survey_lib.recipes.dino_study import (STUDY_SEEDS, VARIANTS, crossmodal_study, crossmodal_verdict, dino_study,
                                               study_verdicts)
    from survey_lib.report import Reporter

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--variants", default=None, help=f"comma-separated rows of {list(VARIANTS)} (default: all)")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds for every selected row (default: STUDY_SEEDS)")
    ap.add_argument("--photo", action="store_true", help="also train the photo run of the cross-modal simulation")
    ap.add_argument("--no-table", action="store_true", help="train only: no controls, table or verdicts")
    ap.add_argument("--record", action="store_true", help="write the study's rows to figures/summary.csv (07_dino)")
    args = ap.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else list(VARIANTS)
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"unknown row {v!r}; choose from {list(VARIANTS)}")
    seeds = {v: tuple(int(s) for s in args.seeds.split(",")) for v in variants} if args.seeds else None
    study = dino_study(args.profile, seeds, variants, controls=not args.no_table, progress=False)
    if args.photo or (not args.no_table and not args.variants):
        xm = crossmodal_study(args.profile, progress=False)
    else:
        xm = None
    if args.no_table:
        for name, runs in study.runs.items():
            print(f"{name}: seeds {runs.seeds}, {runs.seconds:.0f} s of training")
        return
    print(study.table().round(4).to_string())
    for v in study_verdicts(study):
        p = "n/a" if v["p_value"] is None else f"{v['p_value']:.3f}"
        print(f"{v['claim']}: {v['a']} - {v['b']} = {v['diff']:+.4f} over seeds {v['seeds']} (p = {p}): {v['verdict']}")
    if xm is not None:
        print("cross-modal k-NN:", {f: {q: round(a, 4) for q, a in d.items()} for f, d in xm["knn"].items()})
        print("cross-modal verdict:", crossmodal_verdict(xm)["verdict"])
    if args.record:
        report = Reporter("07_dino", args.profile)
        from survey_lib.recipes import get_recipe

        dataset = get_recipe("dino").config(args.profile)["data"]["dataset"]
        for method, metric, values, seconds in study.rows():
            report.record_seeds(method, dataset, metric, values, seconds)
        print("recorded", len(study.rows()), "rows in figures/summary.csv")


if __name__ == "__main__":
    main()
