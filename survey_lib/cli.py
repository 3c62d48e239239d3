"""The ``survey`` command.

    survey run [--profile smoke|cpu|full] [NOTEBOOK ...]   execute notebooks with papermill
    survey list                                            list the figures and summary rows
    survey train --list                                    the registered methods (survey_lib.recipes)
    survey train vit [--profile ...] [--set train.epochs=5] train one method
    survey site [--profile cpu] [--input DIR] [--output DIR]  the executed notebooks as a static HTML site

``survey run`` executes each notebook (default: every ``notebooks/*.ipynb``, in order) with its
``PROFILE`` parameter set, writes the executed copies to ``--output-dir`` (default
``build/notebooks/<profile>``), and the notebooks save figures under ``figures/<notebook>/`` and rows
of ``figures/summary.csv``. Whatever happens to one notebook (an error, a cell over its time limit,
a kernel that dies), the others still run; the failures are listed at the end, each with the
notebook's own cell number and the cell's first line, and the command exits with status 1. Kernels
talk to ``survey`` over IPC sockets, not TCP, so a machine with no network interface at all (not
even loopback) runs them.

Errors of the library (an unknown method, a bad configuration value, an unusable checkpoint, a
malformed ``summary.csv``) are printed as one line and exit with status 2; ``--debug`` shows the
traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

PROFILES = ("smoke", "cpu", "full")

#: Default seconds allowed per cell, by profile (``--timeout`` overrides): a stuck cell never hangs a run.
CELL_TIMEOUT_S = {"smoke": 900, "cpu": 7200, "full": 86400}


def repo_root() -> Path:
    """The repository root (the folder holding ``notebooks/``), else the current folder."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "notebooks").is_dir() else Path.cwd()


def find_notebooks(names: Sequence[str] = ()) -> List[Path]:
    """Resolve notebook names (``01_vit``, ``01``, ``1``, ``01_vit.ipynb`` or a path) to paths;
    default: all, sorted.

    A name is a path, a notebook's stem, or a prefix of stems; a number also matches the notebook
    of that number (``1`` is ``01_vit``).

    Raises:
        FileNotFoundError: a name matches no notebook.
        ValueError: a name matches several notebooks; the message lists them.
    """
    nb_dir = repo_root() / "notebooks"
    every = sorted(nb_dir.glob("[0-9]*.ipynb"))
    if not names:
        return every
    out = []
    for name in names:
        p = Path(name)
        if p.suffix == ".ipynb" and p.is_file():
            out.append(p)
            continue
        stem = p.name[:-6] if p.name.endswith(".ipynb") else p.name
        exact = [q for q in every if q.stem == stem]
        number = stem.split("_")[0]
        found = exact or [q for q in every if q.stem.startswith(stem)
                          or (number.isdigit() and q.stem.split("_")[0].isdigit() and int(q.stem.split("_")[0]) == int(number)
                              and "_" not in stem)]
        if not found:
            raise FileNotFoundError(f"no notebook {name!r}; available: {', '.join(q.stem for q in every)}")
        if len(found) > 1:
            raise ValueError(f"notebook name {name!r} matches {len(found)} notebooks: "
                             f"{', '.join(q.stem for q in found)}; give more of the name")
        out.append(found[0])
    return out


def _ipc_kernel_manager():
    """A Jupyter kernel manager whose kernels talk over IPC (Unix sockets) instead of TCP on loopback."""
    import tempfile

    from jupyter_client.manager import AsyncKernelManager  # nbclient's default class: its waits never block
    from traitlets import CaselessStrEnum, default

    class IPCKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        @default("ip")
        def _ip_default(self) -> str:  # one private folder per kernel: kernels started together never share sockets
            return os.path.join(tempfile.mkdtemp(prefix="survey-kernel-"), "ipc")

    return IPCKernelManager


#: The note that replaces a worked solution in a notebook executed without its solutions.
SOLUTION_NOT_RUN = ("*Worked solution (not executed by this run: `survey run` executes the solutions under the "
                    "`smoke` profile only, so that `make figures` costs what the lessons cost; run the cell in "
                    "JupyterLab, or `survey run --with-solutions`):*")


def without_solutions(nb):
    """A copy of notebook ``nb`` (an ``nbformat`` node) in which every code cell tagged ``solution``
    is a markdown cell showing its code, so that an execution skips it but a reader still sees it."""
    import copy

    import nbformat

    out = copy.deepcopy(nb)
    for i, c in enumerate(out.cells):
        if c.cell_type == "code" and "solution" in c.metadata.get("tags", []):
            meta = {k: v for k, v in c.metadata.items() if k != "jupyter"}
            out.cells[i] = nbformat.v4.new_markdown_cell(f"{SOLUTION_NOT_RUN}\n\n```python\n{c.source}\n```", metadata=meta)
    return out


def _papermill_values(value):
    """``value`` with every tuple made a list: papermill writes lists, dicts and scalars as Python
    literals but a tuple as the string of its repr (the notebooks read sequences with ``tuple(...)``)."""
    if isinstance(value, dict):
        return {k: _papermill_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_papermill_values(v) for v in value]
    return value


def run_notebook(path: Path, profile: str, output_dir: Path, progress: bool = True, timeout: Optional[int] = None,
                 with_solutions: Optional[bool] = None, parameters: Optional[dict] = None) -> float:
    """Execute one notebook with papermill (IPC kernel, ``timeout`` seconds per cell); returns its
    wall time in seconds. ``with_solutions``: also execute the exercises' worked solutions (cells
    tagged ``solution``); None: only under ``smoke`` (where CI checks that they run); otherwise
    they are shown, not run (:func:`without_solutions`). ``parameters``: values injected after the
    notebook's ``parameters`` cell besides ``PROFILE`` (``survey run --param``).

    Raises:
        papermill.PapermillExecutionError: a cell failed.  nbclient.exceptions.CellTimeoutError: a
            cell ran longer than ``timeout``.  nbclient.exceptions.DeadKernelError: the kernel died.
    """
    import nbformat
    import papermill as pm

    output_dir.mkdir(parents=True, exist_ok=True)
    source = path
    if not (profile == "smoke" if with_solutions is None else with_solutions):
        source = output_dir / f".{path.stem}.without-solutions.ipynb"
        nbformat.write(without_solutions(nbformat.read(path, as_version=4)), source)
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(
            str(source), str(output_dir / path.name), parameters={**_papermill_values(parameters or {}), "PROFILE": profile},
            kernel_name="python3",
            progress_bar=progress, cwd=str(path.parent), execution_timeout=timeout,
            kernel_manager_class=_ipc_kernel_manager(),
        )
    finally:
        if source != path:
            source.unlink(missing_ok=True)
    return time.perf_counter() - t0


def describe_failure(path: Path, executed: Path, error: BaseException) -> str:
    """One line naming the failing cell as the stored notebook numbers it (1-based, as JupyterLab
    shows the cells), the cell's first source line, and what happened."""
    import nbformat

    source = getattr(error, "source", None)
    if source is None and executed.exists():  # timeouts and dead kernels: the last cell papermill started
        try:
            ran = nbformat.read(executed, as_version=4)
            started = [c for c in ran.cells if c.get("metadata", {}).get("papermill", {}).get("start_time")]
            source = started[-1].source if started else None
        except Exception:  # noqa: BLE001 - the description must never fail
            source = None
    where = "a cell"
    if source is not None:
        stored = nbformat.read(path, as_version=4)
        index = next((i for i, c in enumerate(stored.cells) if c.source.strip() == source.strip()), None)
        first = next((line.strip() for line in source.splitlines() if line.strip()), "")
        where = (f"cell {index + 1}" if index is not None else "the injected parameters cell") + f" ({first[:70]!r})"
    what = (f"{getattr(error, 'ename', type(error).__name__)}: {getattr(error, 'evalue', str(error)).strip().splitlines()[0] if str(error) else ''}")
    return f"{path.name}: {where} raised {what}"


def _run_one(nb: Path, profile: str, output_dir: Path, progress: bool, timeout: int,
             with_solutions: Optional[bool] = None, parameters: Optional[dict] = None
             ) -> Tuple[Path, Optional[float], Optional[str]]:
    from .report import finish_run, start_run

    start_run(nb.stem, profile)
    try:
        secs = run_notebook(nb, profile, output_dir, progress=progress, timeout=timeout, with_solutions=with_solutions,
                            parameters=parameters)
    except Exception as e:  # noqa: BLE001 - one notebook's failure never stops the others
        finish_run(nb.stem, profile, prune=False)
        return nb, None, describe_failure(nb, output_dir / nb.name, e)
    dropped = finish_run(nb.stem, profile)
    if dropped:
        print(f"    {nb.stem}: dropped {dropped} rows of summary.csv that this run no longer writes", flush=True)
    return nb, secs, None


def record_run(figures: Path, profile: str, threads: int, times: dict) -> None:
    """Write what this run measured beside its results: ``run_times.csv`` (each notebook's wall time
    by profile; a re-run replaces its rows) and ``environment.json`` (torch, CPU, threads, per profile)."""
    import csv
    import json

    from .cost import environment

    figures.mkdir(parents=True, exist_ok=True)
    path = figures / "run_times.csv"
    rows = []
    if path.exists():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if not (r["profile"] == profile and r["notebook"] in times)]
    rows += [{"notebook": nb, "profile": profile, "threads": threads, "seconds": f"{secs:.0f}"} for nb, secs in times.items()]
    rows.sort(key=lambda r: (r["profile"], r["notebook"]))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["notebook", "profile", "threads", "seconds"])
        w.writeheader()
        w.writerows(rows)
    env_path = figures / "environment.json"
    env = json.loads(env_path.read_text()) if env_path.exists() else {}
    env[profile] = {**{k: str(v) for k, v in environment().items()}, "threads_per_kernel": threads}
    env_path.write_text(json.dumps(env, indent=1, sort_keys=True) + "\n")


def update_readme_times(readme: Path, figures: Path) -> bool:
    """Replace the table between ``<!-- notebook-times -->`` and ``<!-- /notebook-times -->`` in the
    README by one generated from ``run_times.csv``; returns whether it changed."""
    import csv

    begin, end = "<!-- notebook-times -->", "<!-- /notebook-times -->"
    path = figures / "run_times.csv"
    if not (readme.exists() and path.exists()):
        return False
    original = text = readme.read_text()
    text = update_learning_path(text, path)
    if begin not in text or end not in text:
        if text != original:
            readme.write_text(text)
        return text != original
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    profiles = [p for p in PROFILES if any(r["profile"] == p for r in rows)]
    table = {(r["notebook"], r["profile"]): r for r in rows}
    lines = ["| notebook | " + " | ".join(f"{p} (s)" for p in profiles) + " |", "|---|" + "---|" * len(profiles)]
    for nb in sorted({r["notebook"] for r in rows}):
        cells = [table[(nb, p)]["seconds"] if (nb, p) in table else "" for p in profiles]
        lines.append(f"| `{nb}` | " + " | ".join(cells) + " |")
    totals = [str(sum(int(table[(nb, p)]["seconds"]) for nb in {r["notebook"] for r in rows} if (nb, p) in table))
              for p in profiles]
    lines.append("| all, one after another | " + " | ".join(totals) + " |")
    new = text[:text.index(begin) + len(begin)] + "\n" + "\n".join(lines) + "\n" + text[text.index(end):]
    if new != original:
        readme.write_text(new)
    return new != original


def update_learning_path(text: str, run_times: Optional[Path] = None) -> str:
    """``text`` with the table between ``<!-- learning-path -->`` and ``<!-- /learning-path -->``
    regenerated from :data:`survey_lib.course.LEARNING_PATH` and ``run_times.csv`` (unchanged if
    the markers are missing)."""
    from .course import learning_path_markdown

    begin, end = "<!-- learning-path -->", "<!-- /learning-path -->"
    if begin not in text or end not in text:
        return text
    table = learning_path_markdown(run_times, link_prefix="notebooks/")
    return text[:text.index(begin) + len(begin)] + "\n" + table + "\n" + text[text.index(end):]


def cmd_run(args: argparse.Namespace) -> int:
    """Run the notebooks, ``--jobs`` at a time (default: one per core), each kernel with
    ``--threads`` torch threads (default 1), and record the wall times and the environment."""
    from concurrent.futures import ThreadPoolExecutor

    if args.figures_dir:
        os.environ["SURVEY_FIGURES_DIR"] = str(Path(args.figures_dir).resolve())
    threads = args.threads or 1
    for var in ("SURVEY_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)  # pinned: the same seed gives the same numbers only at the same count
    if args.fresh:
        os.environ["SURVEY_FRESH"] = "1"
    notebooks = find_notebooks(args.notebooks)
    parameters = parse_parameters(getattr(args, "param", None) or [])
    output_dir = Path(args.output_dir or repo_root() / "build" / "notebooks" / args.profile)
    timeout = args.timeout if args.timeout is not None else CELL_TIMEOUT_S[args.profile]
    jobs = max(1, min(len(notebooks), args.jobs or os.cpu_count() or 1))
    progress = not args.quiet and jobs == 1
    print(f"{len(notebooks)} notebooks, profile {args.profile}, {jobs} at a time, {threads} thread(s) per kernel",
          flush=True)
    t0 = time.perf_counter()
    failures, times = [], {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_run_one, nb, args.profile, output_dir, progress, timeout,
                               True if getattr(args, "with_solutions", False) else None, parameters) for nb in notebooks]
        for fut in futures:
            nb, secs, failure = fut.result()
            if failure is None:
                times[nb.stem] = secs
                print(f"    {nb.stem}: done in {secs:.0f} s -> {output_dir / nb.name}", flush=True)
            else:
                print(f"    FAILED {failure}", file=sys.stderr, flush=True)
                failures.append(failure)
    total = time.perf_counter() - t0
    from .report import figures_dir

    figures = figures_dir()
    if parameters:  # not the notebooks' own cost under this profile: run_times.csv keeps the default runs
        print(f"run with parameters {parameters}: wall times not recorded in run_times.csv", flush=True)
    record_run(figures, args.profile, threads, {} if parameters else times)
    if figures.resolve() == (repo_root() / "figures").resolve():
        update_readme_times(repo_root() / "README.md", figures)
    print(f"total wall time {total:.0f} s ({sum(times.values()):.0f} s of notebooks); figures and summary.csv in {figures}")
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


def _literal(text: str):
    """``text`` as a Python literal (``ast.literal_eval``), or the string itself when it is not one."""
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_parameters(items: Sequence[str]) -> dict:
    """``["SEEDS=(0, 1)", "FRACTIONS=(0.1, 1.0)"]`` -> ``{"SEEDS": (0, 1), "FRACTIONS": (0.1, 1.0)}``
    (``survey run --param``): values are Python literals (``ast.literal_eval``), anything else a string.

    Raises:
        ValueError: an item without ``=``, a name that is not an identifier, or ``PROFILE`` (use
            ``--profile``).
    """
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--param {item!r}: expected NAME=VALUE, e.g. --param \"SEEDS=(0, 1)\"")
        name, text = (part.strip() for part in item.split("=", 1))
        if not name.isidentifier():
            raise ValueError(f"--param {item!r}: {name!r} is not a name of the notebook's parameters cell")
        if name == "PROFILE":
            raise ValueError("--param PROFILE=...: use --profile")
        out[name] = _literal(text)
    return out


def parse_overrides(items: Sequence[str]) -> dict:
    """``["train.epochs=5", "distillation='soft'"]`` -> ``{"train": {"epochs": 5}, "distillation": "soft"}``.

    Values are Python literals (``ast.literal_eval``); anything else is kept as a string.

    Raises:
        ValueError: an item without ``=``.
    """
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.epochs=5")
        key, text = item.split("=", 1)
        value = _literal(text)
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
    r.add_argument("--threads", type=int, default=1, help="torch threads per notebook kernel (default 1, pinned)")
    r.add_argument("--jobs", type=int, default=None, help="notebooks run at a time (default: one per core)")
    r.add_argument("--fresh", action="store_true", help="train every model again instead of reading the model cache")
    r.add_argument("--timeout", type=int, default=None,
                   help=f"seconds allowed per cell (default by profile: {CELL_TIMEOUT_S})")
    r.add_argument("--quiet", action="store_true", help="no per-cell progress bar")
    r.add_argument("--with-solutions", action="store_true",
                   help="also execute the exercises' worked solutions (default: only under smoke)")
    r.add_argument("-p", "--param", action="append", metavar="NAME=VALUE",
                   help="set a parameter of the notebooks' parameters cell (a Python literal), e.g. "
                        "-p \"SEEDS=(0, 1)\"; repeatable; wall times are then not recorded")
    r.set_defaults(func=cmd_run)
    r.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of the library's errors")

    ls = sub.add_parser("list", help="list figures and summary rows")
    ls.set_defaults(func=cmd_list)
    ls.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of the library's errors")

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
    t.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of the library's errors")
    st = sub.add_parser("site", help="the executed notebooks as a static HTML site (make site)")
    st.add_argument("--profile", choices=PROFILES, default="cpu",
                    help="read build/notebooks/<profile>/ (what the last `survey run --profile` executed)")
    st.add_argument("--input", default=None, help="folder of executed notebooks (overrides --profile)")
    st.add_argument("--output", default=None, help="the site's folder (default build/site)")
    st.set_defaults(func=cmd_site)
    st.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of the library's errors")
    return p


def cmd_site(args: argparse.Namespace) -> int:
    """Build the static site from the executed notebooks and print where its index is."""
    from .site import SiteError, build_site

    src = Path(args.input) if args.input else repo_root() / "build" / "notebooks" / args.profile
    out = Path(args.output) if args.output else repo_root() / "build" / "site"
    try:
        index = build_site(src, out)
    except SiteError as e:
        print(f"survey: {e}", file=sys.stderr)
        return 2
    print(f"site: {len(list(out.glob('*.html'))) - 1} notebook pages; open {index.resolve().as_uri()}")
    return 0


#: The library's own errors: printed as one line (``--debug`` for the traceback), exit status 2.
LIBRARY_ERRORS = (ValueError, KeyError, FileNotFoundError, PermissionError, TimeoutError, FloatingPointError)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    parser.add_argument("--debug", action="store_true", help="show tracebacks of the library's errors")
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LIBRARY_ERRORS as e:
        if args.debug:
            raise
        text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        print(f"survey: {type(e).__name__}: {text} (--debug for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
