"""The thesis's small-data study (issue 21): train the label-fraction runs of notebook 10 into the
model cache, then print the table (test accuracy, mean +- std over seeds; the teacher's final entropy
as a fraction of log K) and the paired verdict per fraction: does the multi-task framework beat the
supervised baseline? Notebook 10 makes the same calls (``train_multitask`` / ``train_supervised_baseline``
with the profile's epochs and k = 20), so it reads these runs from the cache.

Not a speed benchmark (``make bench`` does not run it). One torch thread per process; on two cores
split the jobs over two processes (each run is stored when it ends, so a second process skips what
the first has finished), then print the table::

    OMP_NUM_THREADS=1 python benchmarks/small_data_study.py --fractions 0.1,0.01 --methods supervised,multitask
    OMP_NUM_THREADS=1 python benchmarks/small_data_study.py --fractions 1.0 --methods supervised
    OMP_NUM_THREADS=1 python benchmarks/small_data_study.py --fractions 0.1 --methods multitask_semi,multitask_semi_one_pool

A framework run whose teacher ended at or above ``UNIFORM_TEACHER`` of log K is marked "uniform" and its
fraction's verdict is "cannot tell" whatever the numbers (its distillation term taught nothing).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

METHODS = ("supervised", "multitask", "multitask_semi", "multitask_semi_one_pool")


def run(method: str, profile: str, fraction: float, seed: int):
    """One run of notebook 10's ``run(method, fraction, seed)``, through the model cache."""
    from survey_lib.recipes.multitask import CONFIGS, train_multitask, train_supervised_baseline

    epochs = CONFIGS[profile]["train"]["epochs"]
    if method == "supervised":
        return train_supervised_baseline(profile, seed=seed, label_fraction=fraction, epochs=epochs, k=20, progress=False)
    extra = {"multitask": {}, "multitask_semi": {"setting": "semi_supervised"},
             "multitask_semi_one_pool": {"setting": "semi_supervised", "semi_batches": "one_pool"}}[method]
    return train_multitask(profile, seed=seed, label_fraction=fraction, epochs=epochs, k=20, progress=False, **extra)


def main(argv=None) -> None:
    import torch

    torch.set_num_threads(1)
    from survey_lib.evaluate import compare_seeds, mean_std
    from survey_lib.recipes.multitask import UNIFORM_TEACHER

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--fractions", default="0.01,0.05,0.1,0.25,1.0")
    ap.add_argument("--methods", default="supervised,multitask", help=f"comma-separated; any of {', '.join(METHODS)}")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    fractions = [float(f) for f in args.fractions.split(",")]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        ap.error(f"unknown method(s) {unknown}; choose from {METHODS}")
    results = {}
    for fraction in fractions:
        for seed in seeds:
            for method in methods:
                r = run(method, args.profile, fraction, seed)
                results[method, fraction, seed] = r
                ratio = r.metrics.get("teacher_entropy_ratio")
                print(f"{method:>24} {fraction:>5.0%} seed {seed}: test {r.metrics['test_acc']:.4f}  val "
                      f"{r.history.last.get('val_acc', float('nan')):.4f}  knn {r.metrics['knn_acc']:.4f}"
                      + ("" if ratio is None else f"  teacher {ratio:.3f} of log K") + f"  {r.seconds:.0f} s ({r.extras.get('cache')})",
                      flush=True)
    print()
    for fraction in fractions:
        for method in methods:
            acc = [results[method, fraction, s].metrics["test_acc"] for s in seeds]
            ratios = [results[method, fraction, s].metrics.get("teacher_entropy_ratio") for s in seeds]
            mean, std, _ = mean_std(acc)
            std = std or 0.0
            flag = "" if None in ratios else f"  teacher {max(ratios):.3f} max" + (" UNIFORM" if max(ratios) >= UNIFORM_TEACHER else "")
            print(f"{fraction:>5.0%} {method:>24}: test {100 * mean:.2f}% +- {100 * std:.2f}% over {len(acc)} seeds{flag}")
        if "multitask" in methods and "supervised" in methods:
            c = compare_seeds([results["multitask", fraction, s].metrics["test_acc"] for s in seeds],
                              [results["supervised", fraction, s].metrics["test_acc"] for s in seeds])
            uniform = [s for s in seeds if results["multitask", fraction, s].metrics["teacher_entropy_ratio"] >= UNIFORM_TEACHER]
            verdict = "cannot tell (teacher uniform in seeds %s)" % uniform if uniform else c["verdict"]
            p = "n/a" if c["p_value"] is None else f"{c['p_value']:.3f}"
            print(f"{fraction:>5.0%} framework - baseline: {100 * c['diff']:+.2f} points, paired p = {p}: {verdict}")


if __name__ == "__main__":
    main()
