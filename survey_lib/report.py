"""Where results go: figures under ``figures/<notebook>/<name>.png`` and rows of ``figures/summary.csv``.

``summary.csv`` has the columns ``notebook, method, dataset, profile, metric, value, seconds``
(accuracies as fractions in [0, 1]; ``seconds`` is the wall time that produced the value, or empty).
A row is identified by ``(notebook, method, dataset, profile, metric)``: recording it again
replaces it, so re-running a notebook never duplicates rows.

Under ``torchrun`` only rank 0 writes: on the other ranks ``save_figure`` and ``record_result`` check
their input and return without touching the disk, so a script run on N processes writes each figure
and each row once.

The output folder is ``$SURVEY_FIGURES_DIR`` if set (the test-suite points it at a temporary
folder so smoke runs never touch the committed figures), else ``figures/`` at the repository root.
"""
from __future__ import annotations

import csv
import fcntl
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Union

__all__ = ["figures_dir", "save_figure", "record_result", "read_summary", "Reporter", "SUMMARY_COLUMNS"]

SUMMARY_COLUMNS = ["notebook", "method", "dataset", "profile", "metric", "value", "seconds"]
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


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_summary(path: Optional[Union[str, Path]] = None) -> List[dict]:
    """Rows of ``summary.csv`` as dicts (empty list if there is none yet)."""
    path = Path(path) if path else figures_dir() / "summary.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def record_result(notebook: str, method: str, dataset: str, profile: str, metric: str, value: float,
                  seconds: Optional[float] = None) -> None:
    """Add or replace one row of ``summary.csv`` (atomic rewrite under a file lock); on ranks other
    than 0 of a torchrun job the row is checked but not written.

    Raises:
        ValueError: a non-finite value, or an accuracy-like metric outside [0, 1].
    """
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{metric} of {method} is {value}; refusing to record a non-finite number")
    if ("acc" in metric or "recall" in metric) and not 0.0 <= value <= 1.0:
        raise ValueError(f"{metric}={value} must be a fraction in [0, 1], not a percentage")
    path = figures_dir() / "summary.csv"
    row = dict(notebook=notebook, method=method, dataset=dataset, profile=profile, metric=metric,
               value=f"{value:.6g}", seconds="" if seconds is None else f"{float(seconds):.1f}")
    if not _is_main_process():
        return
    with _locked(path):
        rows = [r for r in read_summary(path) if [r[k] for k in _KEY] != [row[k] for k in _KEY]]
        rows.append(row)
        rows.sort(key=lambda r: [r[k] for k in _KEY])
        tmp = path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS)
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, path)


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

    def record(self, method: str, dataset: str, metric: str, value: float, seconds: Optional[float] = None) -> None:
        """Add or replace a row of ``summary.csv`` for this notebook and profile."""
        record_result(self.notebook, method, dataset, self.profile, metric, value, seconds)
