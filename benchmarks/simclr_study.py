"""SimCLR on MNIST-5k (issue 19): train the ``simclr`` recipe with NT-Xent and with the review's Eq. 5
for every seed into the model cache, and print the k-NN table (validation and test) with the floors
and the verdicts. Notebook 05 (section 8) calls the same ``survey_lib.recipes.simclr.simclr_study``,
so it reads these runs from the cache.

Not a speed benchmark (``make bench`` does not run it). One torch thread per process; on two cores
run one process per loss, then the table::

    OMP_NUM_THREADS=1 python benchmarks/simclr_study.py --losses simclr
    OMP_NUM_THREADS=1 python benchmarks/simclr_study.py --losses simclr_review_eq5
    OMP_NUM_THREADS=1 python benchmarks/simclr_study.py                 # both (from the cache) and the table

``--record`` also writes the rows notebook 05 writes (``figures/summary.csv``, notebook ``05_clip``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> None:
    import torch

    torch.set_num_threads(1)
    from survey_lib.evaluate import compare_seeds
    from survey_lib.recipes import run_seeds
    from survey_lib.recipes.simclr import RECIPE, STUDY_LOSSES, simclr_study
    from survey_lib.report import Reporter

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--losses", default=None, help=f"comma-separated rows of {sorted(STUDY_LOSSES)}: train only these")
    ap.add_argument("--record", action="store_true", help="write the study's rows to figures/summary.csv")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.losses:
        for method in args.losses.split(","):
            if method not in STUDY_LOSSES:
                ap.error(f"unknown row {method!r}; choose from {sorted(STUDY_LOSSES)}")
            run_seeds(RECIPE, args.profile, seeds, overrides={"loss": STUDY_LOSSES[method]}, desc=f"{method} [{args.profile}]")
        return
    study = simclr_study(args.profile, seeds)
    for method in [*STUDY_LOSSES, "random_init", "raw_pixels"]:
        val, test = study.knn(method, "val"), study.knn(method, "test")
        print(f"{method:>18}: val {sum(val) / len(val):.4f}  test {sum(test) / len(test):.4f}  per seed (test) "
              + ", ".join(f"{v:.4f}" for v in test))
    for a, b, margin in [("simclr", "random_init", 0.10), ("simclr", "raw_pixels", 0.0), ("simclr", "simclr_review_eq5", 0.0)]:
        c = compare_seeds(study.knn(a, "test"), study.knn(b, "test"), margin=margin)
        print(f"{a} - {b} (test): {c['diff']:+.4f}, p = {c['p_value']}, verdict on 'better by more than {margin}': {c['verdict']}")
    if args.record:
        report = Reporter("05_clip", args.profile)
        dataset = RECIPE.config(args.profile)["data"]["dataset"]
        for method, metric, values, seconds in study.rows():
            report.record_seeds(method, dataset, metric, values, seconds)
        print("recorded", len(study.rows()), "rows in figures/summary.csv")


if __name__ == "__main__":
    main()
