"""The ``survey`` command.

    survey run [--profile smoke|cpu|full] [NOTEBOOK ...]   execute notebooks with papermill
    survey list                                            list the figures and summary rows
    survey train --list                                    the registered methods (survey_lib.recipes)
    survey train vit [--profile ...] [--set train.epochs=5] train one method

``survey run`` executes each notebook (default: every ``notebooks/*.ipynb``, in order) with its
``PROFILE`` parameter set, writes the executed copies to ``--output-dir`` (default
``build/notebooks/<profile>``), and the notebooks save figures under ``figures/<notebook>/`` and rows
of ``figures/summary.csv``. A failing notebook is reported with its failing cell and error, the
others still run, and the command exits with status 1.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

PROFILES = ("smoke", "cpu", "full")


def repo_root() -> Path:
    """The repository root (the folder holding ``notebooks/``), else the current folder."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "notebooks").is_dir() else Path.cwd()


def find_notebooks(names: Sequence[str] = ()) -> List[Path]:
    """Resolve notebook names (``01_vit``, ``01_vit.ipynb`` or a path) to paths; default: all, sorted.

    Raises:
        FileNotFoundError: a name matches no notebook.
    """
    nb_dir = repo_root() / "notebooks"
    if not names:
        return sorted(nb_dir.glob("[0-9]*.ipynb"))
    out = []
    for name in names:
        p = Path(name)
        candidates = [p, nb_dir / p.name, nb_dir / f"{p.name}.ipynb"] + sorted(nb_dir.glob(f"{p.name}*.ipynb"))
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            available = ", ".join(q.stem for q in sorted(nb_dir.glob("*.ipynb")))
            raise FileNotFoundError(f"no notebook {name!r}; available: {available}")
        out.append(found)
    return out


def run_notebook(path: Path, profile: str, output_dir: Path, progress: bool = True, timeout: Optional[int] = None) -> float:
    """Execute one notebook with papermill; returns its wall time in seconds.

    Raises:
        papermill.PapermillExecutionError: a cell failed (``cell_index``, ``ename``, ``evalue`` say which).
    """
    import papermill as pm

    output_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pm.execute_notebook(
        str(path), str(output_dir / path.name), parameters={"PROFILE": profile}, kernel_name="python3",
        progress_bar=progress, cwd=str(path.parent), execution_timeout=timeout,
    )
    return time.perf_counter() - t0


def cmd_run(args: argparse.Namespace) -> int:
    from papermill.exceptions import PapermillExecutionError

    if args.figures_dir:
        os.environ["SURVEY_FIGURES_DIR"] = str(Path(args.figures_dir).resolve())
    if args.threads:
        os.environ["SURVEY_NUM_THREADS"] = str(args.threads)
    notebooks = find_notebooks(args.notebooks)
    output_dir = Path(args.output_dir or repo_root() / "build" / "notebooks" / args.profile)
    failures = []
    for i, nb in enumerate(notebooks, 1):
        print(f"[{i}/{len(notebooks)}] {nb.stem} (profile {args.profile})", flush=True)
        try:
            secs = run_notebook(nb, args.profile, output_dir, progress=not args.quiet, timeout=args.timeout)
            print(f"    done in {secs:.0f} s -> {output_dir / nb.name}", flush=True)
        except PapermillExecutionError as e:
            msg = f"{nb.name}: cell {e.cell_index} (execution count {e.exec_count}) raised {e.ename}: {e.evalue}"
            print(f"    FAILED {msg}", file=sys.stderr, flush=True)
            failures.append(msg)
    from .report import figures_dir

    print(f"figures and summary.csv in {figures_dir()}")
    if failures:
        print(f"{len(failures)} of {len(notebooks)} notebooks failed:", file=sys.stderr)
        for m in failures:
            print(f"  {m}", file=sys.stderr)
        return 1
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .report import figures_dir, read_summary

    root = figures_dir()
    for png in sorted(root.glob("*/*.png")):
        print(png.relative_to(root))
    rows = read_summary()
    if rows:
        print(f"\n{len(rows)} rows in {root / 'summary.csv'}")
        for r in rows:
            print(f"  {r['notebook']:<18} {r['method']:<24} {r['dataset']:<8} {r['profile']:<6} {r['metric']:<16} {r['value']}")
    return 0


def parse_overrides(items: Sequence[str]) -> dict:
    """``["train.epochs=5", "distillation='soft'"]`` -> ``{"train": {"epochs": 5}, "distillation": "soft"}``.

    Values are Python literals (``ast.literal_eval``); anything else is kept as a string.

    Raises:
        ValueError: an item without ``=``.
    """
    import ast

    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.epochs=5")
        key, text = item.split("=", 1)
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        *parents, leaf = key.strip().split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def cmd_train(args: argparse.Namespace) -> int:
    """Train one registered method; under ``torchrun --nproc_per_node=N`` every rank trains (``fit``
    sets up DistributedDataParallel) and only rank 0 prints; the process group is closed at the end."""
    from .distributed import cleanup_distributed, is_main_process
    from .recipes import get_recipe, list_recipes

    if args.list or not args.method:
        for name in list_recipes():
            print(f"{name:<20} {get_recipe(name).summary}")
        return 0 if args.list else 2
    recipe = get_recipe(args.method)
    try:
        result = recipe.run(args.profile, seed=args.seed, checkpoint=args.checkpoint, resume=not args.no_resume,
                            overrides=parse_overrides(args.set or []))
        if is_main_process():
            print(result.summary())
    finally:
        cleanup_distributed()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="survey", description="vit-survey: run notebooks, train methods, list figures")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="execute notebooks with papermill and regenerate figures")
    r.add_argument("notebooks", nargs="*", help="notebook names (default: all), e.g. 01_vit")
    r.add_argument("--profile", choices=PROFILES, default="cpu")
    r.add_argument("--output-dir", help="where executed notebooks go (default build/notebooks/<profile>)")
    r.add_argument("--figures-dir", help="where figures and summary.csv go (default figures/)")
    r.add_argument("--threads", type=int, help="torch threads inside the notebooks")
    r.add_argument("--timeout", type=int, default=None, help="seconds allowed per cell")
    r.add_argument("--quiet", action="store_true", help="no per-cell progress bar")
    r.set_defaults(func=cmd_run)

    ls = sub.add_parser("list", help="list figures and summary rows")
    ls.set_defaults(func=cmd_list)

    t = sub.add_parser("train", help="train one registered method (survey train --list)")
    t.add_argument("method", nargs="?", help="method name, e.g. vit (see --list)")
    t.add_argument("--list", action="store_true", help="list the registered methods and exit")
    t.add_argument("--profile", choices=PROFILES, default="cpu")
    t.add_argument("--checkpoint", help="checkpoint path (written every epoch; resumes if it exists)")
    t.add_argument("--no-resume", action="store_true", help="start over even if the checkpoint exists")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a configuration value, e.g. --set train.epochs=5 (repeatable)")
    t.set_defaults(func=cmd_train)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FileNotFoundError as e:
        print(f"survey: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
