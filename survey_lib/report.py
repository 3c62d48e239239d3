"""Where results go: figures under ``figures/<notebook>/<name>.png`` and rows of ``figures/summary.csv``.

``summary.csv`` has the columns ``notebook, method, dataset, profile, metric, value, std, n_seeds,
seconds``: accuracies as fractions in [0, 1]; ``value`` is the mean over ``n_seeds`` seeds and
``std`` their sample standard deviation (``ddof=1``; empty for one seed or a value that has no
seeds, such as a parameter count); ``seconds`` is the wall time that produced the value (summed over
the seeds), or empty. A row is identified by ``(notebook, method, dataset, profile, metric)``:
recording it again replaces it, so re-running a notebook never duplicates rows. A file written
before ``std`` and ``n_seeds`` existed is read with those fields empty and rewritten in the new layout.

Under ``torchrun`` only rank 0 writes: on the other ranks ``save_figure`` and ``record_result`` check
their input and return without touching the disk, so a script run on N processes writes each figure
and each row once.

The output folder is ``$SURVEY_FIGURES_DIR`` if set (the test-suite points it at a temporary
folder so smoke runs never touch the committed figures), else ``figures/`` at the repository root.
"""
from __future__ import annotations

import csv
import fcntl
import json
import math
import os
import shutil
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Union

__all__ = ["figures_dir", "save_figure", "record_result", "read_summary", "format_number", "Reporter",
           "SUMMARY_COLUMNS", "SummaryFormatError", "start_run", "finish_run"]

SUMMARY_COLUMNS = ["notebook", "method", "dataset", "profile", "metric", "value", "std", "n_seeds", "seconds"]
#: The layout before ``std`` and ``n_seeds``; read, then rewritten as :data:`SUMMARY_COLUMNS`.
OLD_COLUMNS = ["notebook", "method", "dataset", "profile", "metric", "value", "seconds"]
_KEY = SUMMARY_COLUMNS[:5]


def figures_dir() -> Path:
    """The folder figures and ``summary.csv`` are written to (see the module docstring)."""
    env = os.environ.get("SURVEY_FIGURES_DIR")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").exists():
        return repo / "figures"
    return Path.cwd() / "figures"


def _is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a single process (``$RANK`` unset)."""
    from .distributed import is_main_process

    return is_main_process()


def save_figure(fig, notebook: str, name: str, dpi: int = 120) -> Path:
    """Save ``fig`` as ``<figures_dir>/<notebook>/<name>.png`` and return the path (on ranks other
    than 0 of a torchrun job, return the path without writing)."""
    if not name or "/" in name or name.endswith(".png"):
        raise ValueError(f"figure name {name!r} must be a plain stem such as 'attention_maps'")
    path = figures_dir() / notebook / f"{name}.png"
    if not _is_main_process():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


class SummaryFormatError(ValueError):
    """``summary.csv`` does not parse as this module writes it (header, field count, numbers); the
    message names the line. The file is never rewritten while it is in this state."""


#: Seconds a writer waits for another process's lock on ``summary.csv`` before giving up.
LOCK_TIMEOUT_S = 60.0


@contextmanager
def _locked(path: Path, timeout: Optional[float] = None) -> Iterator[None]:
    """An exclusive ``fcntl`` lock on ``<path>.lock`` for the block, waiting at most ``timeout`` seconds.

    Raises:
        TimeoutError: another process held the lock for the whole timeout.
    """
    timeout = LOCK_TIMEOUT_S if timeout is None else timeout
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_suffix(".lock")
    with open(lock_path, "w") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{lock_path} has been held by another process for {timeout:.0f} s; if no "
                                       f"other notebook or `survey run` is writing results, delete the lock file") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_summary(path: Optional[Union[str, Path]] = None) -> List[dict]:
    """Rows of ``summary.csv`` as dicts of strings (empty list if there is none yet).

    Read strictly: a UTF-8 byte-order mark (a spreadsheet's CSV) is tolerated; the header must be
    :data:`SUMMARY_COLUMNS` (or the older :data:`OLD_COLUMNS`); every row must have every field, a
    number in ``value``, and a number or nothing in ``std``, ``n_seeds`` and ``seconds``.

    Raises:
        SummaryFormatError: the file does not parse that way; the message names the line.
    """
    path = Path(path) if path else figures_dir() / "summary.csv"
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, strict=True)
        line = 1  # where the record being read starts (a quoted field may span lines)
        try:
            header = next(reader, None)
            if header is None:
                return []
            if header not in (SUMMARY_COLUMNS, OLD_COLUMNS):
                raise SummaryFormatError(f"{path}, line 1: header {header} is not {SUMMARY_COLUMNS}; restore it "
                                         f"(a backup of the last good file is {path.name}.bak)")
            columns = header
            rows = []
            while True:
                line = reader.line_num + 1
                fields = next(reader, None)
                if fields is None:
                    break
                if not fields:
                    continue
                if len(fields) != len(columns):
                    raise SummaryFormatError(f"{path}, line {line}: expected {len(columns)} fields "
                                             f"({', '.join(columns)}), got {len(fields)} (a stray quote or "
                                             f"comma?); fix the line or restore {path.name}.bak")
                row = {"std": "", "n_seeds": "", **dict(zip(columns, fields))}
                for col, optional in (("value", False), ("std", True), ("n_seeds", True), ("seconds", True)):
                    if optional and row[col] == "":
                        continue
                    try:
                        float(row[col])
                    except ValueError:
                        raise SummaryFormatError(f"{path}, line {line}: {col} {row[col]!r} is not a number") from None
                rows.append(row)
        except csv.Error as e:
            raise SummaryFormatError(f"{path}, line {line}: {e} (a stray quote?); fix the line or restore "
                                     f"{path.name}.bak") from None
    return rows


def format_number(value: float) -> str:
    """A number as text without loss: integers exactly (86,567,656 stays ``86567656``), other floats
    with ``repr`` (the shortest text that reads back to the same float)."""
    value = float(value)
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _write_rows(path: Path, rows: List[dict]) -> None:
    """Back up the current file to ``summary.csv.bak``, then replace it atomically."""
    if path.exists():
        backup_tmp = path.with_name(path.name + ".bak.tmp")
        shutil.copyfile(path, backup_tmp)
        os.replace(backup_tmp, path.with_name(path.name + ".bak"))
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def record_result(notebook: str, method: str, dataset: str, profile: str, metric: str, value: float,
                  seconds: Optional[float] = None, std: Optional[float] = None, n_seeds: Optional[int] = None) -> None:
    """Add or replace one row of ``summary.csv`` (atomic rewrite under a file lock, after a backup);
    on ranks other than 0 of a torchrun job the row is checked but not written.

    Args:
        value: the number, or the mean over ``n_seeds`` seeds.  std: their standard deviation
            (``ddof=1``), None for a single seed.  n_seeds: how many seeds ``value`` averages.

    Raises:
        ValueError: a non-finite value, an accuracy-like metric outside [0, 1], a negative std,
            or n_seeds below 1.
        SummaryFormatError: the existing file does not parse (it is left as it is).
        TimeoutError: another process held the lock too long.
    """
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{metric} of {method} is {value}; refusing to record a non-finite number")
    if ("acc" in metric or "recall" in metric) and not 0.0 <= value <= 1.0:
        raise ValueError(f"{metric}={value} must be a fraction in [0, 1], not a percentage")
    if std is not None and not (math.isfinite(float(std)) and float(std) >= 0):
        raise ValueError(f"std of {metric} of {method} is {std}; it must be a finite number >= 0")
    if n_seeds is not None and int(n_seeds) < 1:
        raise ValueError(f"n_seeds of {metric} of {method} is {n_seeds}; it must be >= 1")
    path = figures_dir() / "summary.csv"
    row = dict(notebook=notebook, method=method, dataset=dataset, profile=profile, metric=metric,
               value=format_number(value), std="" if std is None else format_number(std),
               n_seeds="" if n_seeds is None else str(int(n_seeds)),
               seconds="" if seconds is None else f"{float(seconds):.1f}")
    if not _is_main_process():
        return
    with _locked(path):
        rows = [r for r in read_summary(path) if [r[k] for k in _KEY] != [row[k] for k in _KEY]]
        rows.append(row)
        rows.sort(key=lambda r: [r[k] for k in _KEY])
        _write_rows(path, rows)
        keys = _run_keys_path(notebook, profile)
        if keys.exists():  # a `survey run` of this notebook is under way: remember what it wrote
            with open(keys, "a") as f:
                f.write(json.dumps([row[k] for k in _KEY]) + "\n")


def _run_keys_path(notebook: str, profile: str) -> Path:
    return figures_dir() / ".run_keys" / f"{notebook}.{profile}.jsonl"


def start_run(notebook: str, profile: str) -> None:
    """Begin remembering the rows a run of ``notebook`` under ``profile`` writes (``survey run`` calls
    it; :func:`record_result` appends each row's key to ``figures/.run_keys/<notebook>.<profile>.jsonl``)."""
    path = _run_keys_path(notebook, profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")


def finish_run(notebook: str, profile: str, prune: bool = True) -> int:
    """End a run begun by :func:`start_run`; with ``prune`` (the run succeeded), drop the rows of
    ``(notebook, profile)`` that this run did not write again: results of an earlier version of the
    notebook, which would otherwise stay in ``summary.csv`` as if they were current.

    Returns:
        the number of rows dropped (0 without ``prune`` or without a matching :func:`start_run`).

    Raises:
        SummaryFormatError: ``summary.csv`` does not parse (it is then left unchanged).
        TimeoutError: the summary lock is held longer than ``LOCK_TIMEOUT_S``.
    """
    keys_path = _run_keys_path(notebook, profile)
    if not keys_path.exists():
        return 0
    written = {tuple(json.loads(line)) for line in keys_path.read_text().splitlines() if line.strip()}
    keys_path.unlink()
    if not prune:
        return 0
    path = figures_dir() / "summary.csv"
    with _locked(path):
        rows = read_summary(path)
        kept = [r for r in rows if not (r["notebook"] == notebook and r["profile"] == profile)
                or tuple(r[k] for k in _KEY) in written]
        if len(kept) != len(rows):
            _write_rows(path, kept)
    return len(rows) - len(kept)


class Reporter:
    """A notebook's handle on its outputs: ``report.save(fig, name)``, ``report.record(...)``.

    Args:
        notebook: the notebook's stem, e.g. ``"01_vit"``.
        profile: the run's profile (``smoke``, ``cpu`` or ``full``), stored in every row.
    """

    def __init__(self, notebook: str, profile: str) -> None:
        self.notebook = notebook
        self.profile = profile

    def save(self, fig, name: str, close: bool = False) -> Path:
        """Save ``fig`` under ``figures/<notebook>/<name>.png`` (and close it if asked)."""
        path = save_figure(fig, self.notebook, name)
        if close:
            import matplotlib.pyplot as plt

            plt.close(fig)
        return path

    def record(self, method: str, dataset: str, metric: str, value: float, seconds: Optional[float] = None,
               std: Optional[float] = None, n_seeds: Optional[int] = None) -> None:
        """Add or replace a row of ``summary.csv`` for this notebook and profile."""
        record_result(self.notebook, method, dataset, self.profile, metric, value, seconds, std, n_seeds)

    def record_seeds(self, method: str, dataset: str, metric: str, values: Sequence[float],
                     seconds: Optional[float] = None) -> None:
        """One row holding the mean, the standard deviation (``ddof=1``; none for one seed) and the
        number of ``values``, one per seed (e.g. ``runs.values("test_acc")`` of
        :func:`survey_lib.recipes.run_seeds`)."""
        values = [float(v) for v in values]
        if not values:
            raise ValueError(f"no values to record for {metric} of {method}")
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if len(values) > 1 else None
        self.record(method, dataset, metric, mean, seconds, std, len(values))
