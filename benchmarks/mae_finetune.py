"""MAE fine-tuning against the same ViT from scratch on MNIST-5k (issue 18): train every seed's MAE
pre-training and both inits at each label fraction into the model cache, and print the table (test
accuracy, mean +- std over seeds) with the paired verdicts. Notebook 06 (section 10) calls the same
``survey_lib.recipes.mae.finetune_study``, so it reads these runs from the cache.

Not a speed benchmark (``make bench`` does not run it). One torch thread per process; on two cores
split the seeds over two processes, then print the table::

    OMP_NUM_THREADS=1 python benchmarks/mae_finetune.py --seeds 0,2
    OMP_NUM_THREADS=1 python benchmarks/mae_finetune.py --seeds 1
    OMP_NUM_THREADS=1 python benchmarks/mae_finetune.py                # every seed (from the cache) and the table
    OMP_NUM_THREADS=1 python benchmarks/mae_finetune.py --mask-ratios 0.25,0.5,0.75,0.9   # + notebook 06's sweep

``--record`` also writes the rows notebook 06 writes (``figures/summary.csv``, notebook ``06_mae``).
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
    from survey_lib.recipes.mae import FINETUNE_RECIPE, FINETUNE_ROWS, finetune_study, fraction_tag, mask_ratio_study
    from survey_lib.report import Reporter

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--fractions", default="0.01,0.1,1.0")
    ap.add_argument("--mask-ratios", default="", help="also run the mask-ratio sweep (pre-train, probe, fine-tune at 10%%)")
    ap.add_argument("--record", action="store_true", help="write the study's rows to figures/summary.csv")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    fractions = [float(f) for f in args.fractions.split(",")]
    study = finetune_study(args.profile, seeds, fractions, progress=False)
    dataset = FINETUNE_RECIPE.config(args.profile)["data"]["dataset"]
    report = Reporter("06_mae", args.profile) if args.record else None
    for (init, f), runs in study.items():
        name = f"{FINETUNE_ROWS[init]}_{fraction_tag(f)}"
        test, val = runs.values("test_acc"), [r.history.last["val_acc"] for r in runs.results]
        print(f"{name:>20}: val {sum(val) / len(val):.4f}  test {sum(test) / len(test):.4f}  per seed (test) "
              + ", ".join(f"{v:.4f}" for v in test) + f"  {runs.seconds:.0f} s")
        if report is not None:
            report.record_seeds(name, dataset, "test_acc", test, runs.seconds)
            report.record_seeds(name, dataset, "val_acc", val, runs.seconds)
    for f in fractions:
        c = compare_seeds(study[("mae", f)].values("test_acc"), study[("scratch", f)].values("test_acc"))
        two = c["pooled_std"] is not None and c["diff"] > 2 * c["pooled_std"]
        print(f"{fraction_tag(f)}: MAE - scratch {c['diff']:+.4f} (pooled std {c['pooled_std']}, p = {c['p_value']}); "
              f"more than two pooled std: {two}; verdict: {c['verdict']}")
    ratios = [float(r) for r in args.mask_ratios.split(",") if r.strip()]
    if ratios:
        for r, runs in mask_ratio_study(args.profile, seeds, ratios, fraction=0.1, progress=False).items():
            mean = lambda v: sum(v) / len(v)
            print(f"mask {r:.0%}: linear probe {mean(runs['pretrain'].values('test_acc')):.4f}, "
                  f"k-NN {mean(runs['pretrain'].values('knn_acc')):.4f}, fine-tuned at 10% "
                  f"{mean(runs['finetune'].values('test_acc')):.4f} (mean of seeds {seeds})")


if __name__ == "__main__":
    main()
