"""ViT, Swin, NAT and a ResNet on equal terms on MNIST-5k (issue 20): the same data, recipe and seeds
for every architecture (``survey_lib.recipes.compare``), at every fraction of the training split.
Trains every run into the model cache and prints the table (parameters, FLOPs, validation and test
accuracy, mean +- std over seeds, training seconds) with the computed verdicts.

Not a speed benchmark (``make bench`` does not run it). One torch thread per process; on two cores
split the models over two processes, then print the table::

    OMP_NUM_THREADS=1 python benchmarks/equal_terms.py --models swin
    OMP_NUM_THREADS=1 python benchmarks/equal_terms.py --models vit,nat,resnet
    OMP_NUM_THREADS=1 python benchmarks/equal_terms.py                 # every run (from the cache) and the table
    OMP_NUM_THREADS=1 python benchmarks/equal_terms.py --fractions 0.05,0.1,0.25,0.5,1   # the learning curves

``--record`` writes the rows to ``figures/summary.csv`` under notebook ``11_inductive_bias`` (the lesson that draws them) (``swin``,
``swin_f010``, ...: ``test_acc`` and ``val_acc`` with std and n_seeds, ``params``, ``flops``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

#: The transformers (the ResNet is the convolutional reference).
TRANSFORMERS = ("vit", "swin", "nat")


def main(argv=None) -> None:
    import torch

    torch.set_num_threads(1)
    from survey_lib.evaluate import compare_seeds
    from survey_lib.recipes.compare import COMPARED, compared_overrides, compared_recipe, equal_terms_study, model_costs, row_name
    from survey_lib.report import Reporter

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--models", default=",".join(COMPARED))
    ap.add_argument("--fractions", default="1")
    ap.add_argument("--record", action="store_true", help="write the rows to figures/summary.csv (notebook 11_inductive_bias)")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    models = args.models.split(",")
    fractions = [float(f) for f in args.fractions.split(",")]
    study = equal_terms_study(args.profile, seeds, fractions, models, progress=False)
    costs = model_costs(args.profile, models)
    report = Reporter("11_inductive_bias", args.profile) if args.record else None
    val_mean = {}
    for (name, f), runs in study.items():
        cfg = compared_recipe(name).config(args.profile, compared_overrides(name, args.profile, f))
        dataset = cfg["data"]["dataset"]
        test, val = runs.values("test_acc"), [r.history.last["val_acc"] for r in runs.results]
        val_mean[(name, f)] = statistics.fmean(val)
        sd = statistics.stdev(test) if len(test) > 1 else float("nan")
        print(f"{row_name(name, f):>11}: {costs[name]['params']:>7} params {costs[name]['flops'] / 1e6:5.1f} MFLOPs "
              f"{cfg['train']['epochs']:>4} epochs  val {val_mean[(name, f)]:.4f}  test {statistics.fmean(test):.4f} "
              f"+- {sd:.4f}  ({', '.join(f'{v:.4f}' for v in test)})  {runs.seconds:.0f} s")
        if report is not None:
            report.record_seeds(row_name(name, f), dataset, "test_acc", test, runs.seconds)
            report.record_seeds(row_name(name, f), dataset, "val_acc", val, runs.seconds)
            if f == 1.0:
                report.record(name, dataset, "params", costs[name]["params"])
                report.record(name, dataset, "flops", costs[name]["flops"])
    for f in fractions:
        here = [m for m in models if (m, f) in study]
        best = max((m for m in here if m in TRANSFORMERS), key=lambda m: val_mean[(m, f)], default=None)
        if best is None:
            continue
        best_test = statistics.fmean(study[(best, f)].values("test_acc"))
        print(f"fraction {f:g}: best transformer on validation: {best} (test {best_test:.4f}; >= 0.990: {best_test >= 0.99})")
        for other in here:
            if other == best:
                continue
            c = compare_seeds(study[(best, f)].values("test_acc"), study[(other, f)].values("test_acc"))
            print(f"    {best} - {other}: {c['diff']:+.4f} (pooled std {c['pooled_std']}, p = {c['p_value']}): {c['verdict']}")


if __name__ == "__main__":
    main()
