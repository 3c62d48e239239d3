"""Run every ``benchmarks/bench_*.py`` (its ``main()``), one after another: ``make bench``.

Benchmarks measure speed; they are not tests and never run in ``make test``. Run them on a quiet
machine: every benchmark interleaves its candidates and reports medians.
"""
import importlib.util
import sys
import traceback
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here))
failed = []
for path in sorted(here.glob("bench_*.py")):
    print(f"\n=== {path.stem} ===", flush=True)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
        mod.main()
    except Exception:  # report and go on with the others
        traceback.print_exc()
        failed.append(path.stem)
if failed:
    print(f"\nfailed: {failed}")
    sys.exit(1)
