"""The notebooks as a course: the learning path, each notebook's cost per profile, and the tables
that map a paper's equations to the lines of ``survey_lib`` that implement them.

* :data:`LEARNING_PATH`: the notebooks in the order to read them, what each needs first and what it
  teaches (``notebooks/00_index.ipynb``, the README's learning path and ``make site`` read it).
* :func:`run_times`, :func:`show_cost`: a notebook's wall time under each profile, read from
  ``figures/run_times.csv`` (written by ``survey run``), never typed by hand.
* :func:`equation_table`: (equation, code) rows located with :func:`inspect.getsourcelines`, so a
  moved or renamed function changes the table, not a stale comment.

Nothing here trains or draws (except :func:`plot_learning_path`); the models and objectives never
import this module.
"""
from __future__ import annotations

import csv
import inspect
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from .report import figures_dir

__all__ = ["Lesson", "LEARNING_PATH", "lesson", "run_times", "format_seconds", "cost_markdown", "show_cost",
           "SourceNotFoundError", "CodeLocation", "locate", "EquationTable", "equation_table",
           "learning_path_markdown", "plot_learning_path", "PROFILES", "Markdown"]

PROFILES = ("smoke", "cpu", "full")
REPO_ROOT = Path(__file__).resolve().parent.parent


class Markdown(str):
    """Text that Jupyter shows as Markdown and ``print`` shows as it is."""

    def _repr_markdown_(self) -> str:
        return str(self)


def _display(text: str) -> None:
    """Show Markdown in a notebook (as rendered Markdown), else print it."""
    try:
        from IPython import get_ipython
        from IPython.display import Markdown as IMarkdown, display
    except ImportError:  # pragma: no cover - IPython ships with the project
        print(text)
        return
    if get_ipython() is None:
        print(text)
    else:
        display(IMarkdown(text))


# ---------------------------------------------------------------------------------------------
# The learning path
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lesson:
    """One stop of the learning path.

    Args:
        notebook: the notebook's stem, e.g. ``"01_vit"``.
        title: a short title.
        needs: stems of the notebooks to have read (or run) first.
        teaches: one sentence: what a reader can do afterwards.
    """

    notebook: str
    title: str
    needs: Tuple[str, ...]
    teaches: str


LEARNING_PATH: Tuple[Lesson, ...] = (
    Lesson("01_vit", "The Vision Transformer", (),
           "patches to tokens, self-attention, the pre-norm encoder block and the class token; training with "
           "seeds, a validation split and baselines; attention maps and rollout"),
    Lesson("02_deit", "DeiT: distillation through attention", ("01_vit",),
           "soft and hard distillation from a CNN teacher through a distillation token, on all the labels and "
           "on a tenth of them with a transfer set at equal optimiser steps and at the all-labels run's steps; DeiT's KL normalisation; when "
           "agreement with the teacher says more than accuracy; verdicts over seeds"),
    Lesson("03_swin", "Swin: shifted windows", ("01_vit",),
           "window attention as a reshape, the cyclic shift and its mask, the relative position bias, patch "
           "merging into a hierarchy; a Swin against the ViT on MNIST-5k on equal terms over three seeds"),
    Lesson("04_nat", "Neighbourhood attention (NAT, DiNAT)", ("01_vit", "03_swin"),
           "a sliding k x k window shifted inward at the borders, dilation, NA against SASA, translation "
           "equivariance, a NAT against the ViT on MNIST-5k over three seeds, and how the cost of global, window "
           "and neighbourhood attention grows with the tokens"),
    Lesson("05_clip", "CLIP and SimCLR: learning from pairs", ("01_vit",),
           "the symmetric InfoNCE loss, two towers, an ablation of open_clip's choices, zero-shot classification "
           "with unseen prompts, retrieval, a linear probe, and SimCLR's NT-Xent on two views of an image, trained "
           "against the review's Eq. 5 and judged against a random encoder and raw pixels"),
    Lesson("06_mae", "Masked autoencoders", ("01_vit",),
           "random masking by argsort of noise, an encoder on the visible patches, the MSE on removed patches, "
           "norm_pix_loss, reconstructions of real digits, probing a frozen encoder, and fine-tuning it against "
           "the same ViT from scratch with 1%, 10% and 100% of the labels, across mask ratios"),
    Lesson("07_dino", "DINO and DinoNAT: self-distillation", ("01_vit", "02_deit", "04_nat"),
           "multi-crop, the centred and sharpened teacher, the EMA teacher, collapse and its diagnostics, "
           "and a source document's errors tested as experiments"),
    Lesson("08_cnn_vs_vit", "CNN against ViT, measured fairly", ("01_vit",),
           "how to compare two architectures: one framework, one recipe, one machine, five seeds; accuracy "
           "with confidence intervals over seeds and over test images, F1, FLOPs, memory and per-frame latency"),
    Lesson("09_survey_tables", "The survey tables", ("01_vit", "03_swin", "04_nat"),
           "what a dozen ViT variants cost (parameters, FLOPs, latency, memory) measured one way, and "
           "published accuracies against the numbers reviews quote"),
    Lesson("10_small_data", "Small data: multi-task self-distillation", ("07_dino",),
           "DINO plus rotation prediction plus supervision against a supervised ViT at small label "
           "fractions, with the budget held equal and an ablation"),
    Lesson("11_inductive_bias", "Inductive bias, measured", ("01_vit", "03_swin", "04_nat"),
           "ViT, Swin, NAT and a ResNet on equal terms (one dataset, recipe and set of seeds; parameters, FLOPs "
           "and wall time), learning curves over training-set size with a verdict per size, and Swin without "
           "shifted windows"),
)


def lesson(notebook: str) -> Lesson:
    """The :class:`Lesson` of a notebook stem.

    Raises:
        KeyError: the notebook is not on :data:`LEARNING_PATH`; the message lists the stems.
    """
    for item in LEARNING_PATH:
        if item.notebook == notebook:
            return item
    raise KeyError(f"{notebook!r} is not on the learning path; add a Lesson to survey_lib.course.LEARNING_PATH "
                   f"(known: {', '.join(x.notebook for x in LEARNING_PATH)})")


# ---------------------------------------------------------------------------------------------
# Cost per profile, from figures/run_times.csv
# ---------------------------------------------------------------------------------------------
def run_times(path: Optional[Union[str, Path]] = None) -> Dict[str, Dict[str, float]]:
    """Wall times measured by ``survey run``: ``{notebook: {profile: seconds}}``.

    Reads ``run_times.csv`` (columns ``notebook, profile, threads, seconds``; written by
    :func:`survey_lib.cli.record_run`) from ``path`` or :func:`survey_lib.report.figures_dir`.
    A missing file gives ``{}``; rows with an empty or non-numeric ``seconds`` are skipped.

    Raises:
        ValueError: the file has no ``notebook``, ``profile`` or ``seconds`` column.
    """
    path = Path(path) if path else figures_dir() / "run_times.csv"
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = {"notebook", "profile", "seconds"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: no column {', '.join(sorted(missing))}; it is written by `survey run` "
                             f"(`make figures`): delete it and run that again")
        out: Dict[str, Dict[str, float]] = {}
        for row in reader:
            try:
                secs = float(row["seconds"])
            except (TypeError, ValueError):
                continue
            if math.isfinite(secs):
                out.setdefault(row["notebook"], {})[row["profile"]] = secs
    return out


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``: a wall time for a reader."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


NOT_MEASURED = "not measured yet; run `make figures`"


def cost_markdown(notebook: str, path: Optional[Union[str, Path]] = None) -> Markdown:
    """One line per profile with the notebook's measured wall time (see :func:`run_times`), or a
    single "not measured yet; run `make figures`" line when no profile was measured."""
    times = run_times(path).get(notebook, {})
    if not times:
        return Markdown(f"**Cost of `{notebook}`**: {NOT_MEASURED} (`survey run` writes `figures/run_times.csv`).")
    cells = [format_seconds(times[p]) if p in times else "not measured yet" for p in PROFILES]
    return Markdown(f"**Cost of `{notebook}`** (wall time of one `survey run`, one thread per kernel, warm or cold "
                    f"model cache as it was):\n\n| " + " | ".join(PROFILES) + " |\n|" + "---|" * len(PROFILES)
                    + "\n| " + " | ".join(cells) + " |")


def show_cost(notebook: str, path: Optional[Union[str, Path]] = None) -> None:
    """Display :func:`cost_markdown` (rendered in a notebook, printed elsewhere)."""
    _display(cost_markdown(notebook, path))


def learning_path_markdown(path: Optional[Union[str, Path]] = None, link_prefix: str = "") -> Markdown:
    """The learning path as a Markdown table: order, notebook, what it needs first, what it teaches,
    and its time under each profile (from :func:`run_times`; "-" where not measured).

    Args:
        link_prefix: prefix of a link to each notebook (``"notebooks/"`` in the README); empty: no link.
    """
    times = run_times(path)
    head = "| # | notebook | read first | what it teaches | " + " | ".join(PROFILES) + " |"
    lines = [head, "|---|---|---|---|" + "---|" * len(PROFILES)]
    for i, item in enumerate(LEARNING_PATH, 1):
        name = f"[`{item.notebook}`]({link_prefix}{item.notebook}.ipynb)" if link_prefix else f"`{item.notebook}`"
        needs = ", ".join(f"`{n}`" for n in item.needs) or "nothing"
        t = times.get(item.notebook, {})
        cost = [format_seconds(t[p]) if p in t else "-" for p in PROFILES]
        lines.append(f"| {i} | {name}: {item.title} | {needs} | {item.teaches} | " + " | ".join(cost) + " |")
    note = "" if times else f"\n\nTimes: {NOT_MEASURED}."
    return Markdown("\n".join(lines) + note)


def plot_learning_path(figsize: Tuple[float, float] = (11.0, 5.0)):
    """The learning path as a graph: one box per notebook, an arrow from each notebook it needs,
    columns by depth (the longest chain of prerequisites). Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    depth: Dict[str, int] = {}
    for item in LEARNING_PATH:  # LEARNING_PATH lists every notebook after what it needs
        depth[item.notebook] = 1 + max((depth[n] for n in item.needs), default=-1)
    columns: Dict[int, List[str]] = {}
    for item in LEARNING_PATH:
        columns.setdefault(depth[item.notebook], []).append(item.notebook)
    pos = {}
    for d, names in columns.items():
        for j, name in enumerate(names):
            pos[name] = (d, (len(names) - 1) / 2 - j)
    fig, ax = plt.subplots(figsize=figsize)
    for item in LEARNING_PATH:
        for need in item.needs:
            (x0, y0), (x1, y1) = pos[need], pos[item.notebook]
            ax.annotate("", xy=(x1 - 0.3, y1), xytext=(x0 + 0.3, y0),
                        arrowprops=dict(arrowstyle="->", color="0.45", lw=1.2, shrinkA=2, shrinkB=2))
    for item in LEARNING_PATH:
        x, y = pos[item.notebook]
        ax.text(x, y, f"{item.notebook}\n{item.title}", ha="center", va="center", fontsize=9, wrap=True,
                bbox=dict(boxstyle="round,pad=0.4", fc="#dbe9f6", ec="#2b6cb0"))
    ax.set_xlim(-0.6, max(columns) + 0.6)
    ys = [y for _, y in pos.values()]
    ax.set_ylim(min(ys) - 0.7, max(ys) + 0.7)
    ax.axis("off")
    ax.set_title("Learning path: an arrow points from a notebook to one that builds on it")
    return fig


# ---------------------------------------------------------------------------------------------
# Equation -> code tables
# ---------------------------------------------------------------------------------------------
class SourceNotFoundError(TypeError):
    """The object has no Python source that :mod:`inspect` can find (a builtin, a C extension, an
    object defined interactively); the message says what to pass instead."""


@dataclass
class CodeLocation:
    """Where an object's source is.

    Attributes:
        qualname: ``module.QualName`` of the object.
        file: the file, relative to the repository root when it is inside it (else relative to the
            folder on ``sys.path`` that holds the package, e.g. ``torch/nn/functional.py``).
        first, last: 1-based line numbers of the first (decorators included) and last line.
        lines: the source lines, ``lines[0]`` is line ``first``.
    """

    qualname: str
    file: str
    first: int
    last: int
    lines: List[str] = field(repr=False)

    def excerpt(self, spec: Union[None, str, Tuple[int, int]], context: int = 3) -> Tuple[int, List[str]]:
        """A few lines of the source: ``spec`` a marker (the first line containing it and the
        ``context - 1`` lines after it) or ``(start, stop)`` line offsets from the ``def``/``class``
        line of the object (0 is that line; ``stop`` exclusive). Returns (first line number, lines).

        Raises:
            ValueError: the marker is not in the source, or the range is empty or outside it.
        """
        if isinstance(spec, str):
            hits = [i for i, line in enumerate(self.lines) if spec in line]
            if not hits:
                raise ValueError(f"marker {spec!r} is not in the source of {self.qualname} ({self.file} lines "
                                 f"{self.first}-{self.last}); pick a string from one of its lines")
            start, stop = hits[0], hits[0] + context
        else:
            offset = self.def_offset()
            start, stop = offset + int(spec[0]), offset + int(spec[1])
        stop = min(stop, len(self.lines))
        if not 0 <= start < stop:
            raise ValueError(f"excerpt {spec!r} selects no line of {self.qualname} ({len(self.lines)} lines)")
        return self.first + start, [line.rstrip("\n") for line in self.lines[start:stop]]

    def def_offset(self) -> int:
        """Index in :attr:`lines` of the ``def`` or ``class`` line (after any decorators)."""
        for i, line in enumerate(self.lines):
            if line.lstrip().startswith(("def ", "async def ", "class ")):
                return i
        return 0


def _unwrap(obj):
    """The function behind a property, a classmethod/staticmethod, a partial or a decorator."""
    import functools

    if isinstance(obj, property):
        obj = obj.fget
    if isinstance(obj, (classmethod, staticmethod)):
        obj = obj.__func__
    while isinstance(obj, functools.partial):
        obj = obj.func
    return inspect.unwrap(obj)


def _relative(file: Path, module: str) -> str:
    """The file relative to the repository, or (outside it) the module's path, ``torch/nn/functional.py``."""
    try:
        return file.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        pass
    stem = module.replace(".", "/") if module else file.stem
    return f"{stem}/__init__.py" if file.name == "__init__.py" else f"{stem}.py"


def locate(obj) -> CodeLocation:
    """Find the source of a function, method, class or property.

    Raises:
        SourceNotFoundError: ``obj`` has no Python source (a builtin such as ``torch.softmax``, a C
            extension, or something defined in a notebook cell); pass the Python function or class
            of ``survey_lib`` that implements the equation.
    """
    target = _unwrap(obj)
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or repr(target)
    try:
        lines, first = inspect.getsourcelines(target)
        file = inspect.getsourcefile(target)
    except (TypeError, OSError) as e:
        raise SourceNotFoundError(f"{name!r} has no Python source that inspect can read ({e}); it is a builtin, "
                                  f"a C extension or defined interactively: pass the survey_lib function, method "
                                  f"or class that implements the equation") from None
    if file is None or first == 0 and inspect.ismodule(target):
        raise SourceNotFoundError(f"{name!r}: pass a function, method or class, not a module")
    module = getattr(target, "__module__", None) or inspect.getmodulename(file) or ""
    return CodeLocation(qualname=f"{module}.{name}" if module else name, file=_relative(Path(file), module),
                        first=first, last=first + len(lines) - 1, lines=list(lines))


_MATH = re.compile(r"\$\$.*?\$\$|\$[^$]*\$", re.S)


def _cell(text: str) -> str:
    """Markdown for a table cell: a bar would end the cell, so inside math it becomes ``\\vert``
    (``\\|`` becomes ``\\Vert``), outside it is escaped; line breaks become spaces."""
    def math(m: "re.Match") -> str:
        return m.group(0).replace("\\|", "\\Vert ").replace("|", "\\vert ")

    parts, last = [], 0
    for m in _MATH.finditer(text):
        parts += [text[last:m.start()].replace("|", "\\|"), math(m)]
        last = m.end()
    parts.append(text[last:].replace("|", "\\|"))
    return " ".join("".join(parts).split())


@dataclass
class EquationRow:
    """One row of an :class:`EquationTable`: the equation and where its code is."""

    label: str
    equation: str
    location: CodeLocation
    excerpt: Optional[Tuple[int, List[str]]] = None


class EquationTable:
    """Equations beside the code that implements them; shown as Markdown in a notebook.

    Attributes:
        rows: one :class:`EquationRow` per equation, in the order given.
    """

    def __init__(self, rows: List[EquationRow]) -> None:
        self.rows = rows

    def to_markdown(self) -> str:
        out = ["| equation | | implemented by | file | lines |", "|---|---|---|---|---|"]
        for r in self.rows:
            out.append(f"| {_cell(r.label)} | {_cell(r.equation)} | `{r.location.qualname}` | `{r.location.file}` | "
                       f"{r.location.first}-{r.location.last} |")
        for r in self.rows:
            if r.excerpt is None:
                continue
            start, lines = r.excerpt
            out += ["", f"**{_cell(r.label)}**, `{r.location.qualname}`, `{r.location.file}` lines {start}-{start + len(lines) - 1}:", "",
                    "```python", *_dedent(lines), "```"]
        return "\n".join(out)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def __str__(self) -> str:
        return self.to_markdown()

    __repr__ = __str__


def _dedent(lines: List[str]) -> List[str]:
    import textwrap

    return textwrap.dedent("\n".join(lines)).splitlines()


Excerpt = Union[None, str, Tuple[int, int]]
EquationSpec = Union[Tuple[str, str, object], Tuple[str, str, object, Excerpt], Tuple[str, str, object, Excerpt, int]]


def equation_table(rows: Sequence[EquationSpec], context: int = 3) -> EquationTable:
    """Build the equation -> code table of a notebook from its source, so it cannot go stale.

    Args:
        rows: tuples ``(label, equation, obj[, excerpt[, n_lines]])``: ``label`` such as
            ``"ViT Eq. 1"``; ``equation`` Markdown (LaTeX between ``$...$``, words around it);
            ``obj`` the function, method, class or property of ``survey_lib`` that implements it;
            ``excerpt`` (optional) a marker string (the first line of the source containing it and
            the lines after it, ``n_lines`` in all) or ``(start, stop)`` line offsets from the
            object's ``def``/``class`` line: the few lines a reader should see, never the whole
            function; None for no excerpt.
        context: the default ``n_lines`` shown from a marker.

    Returns:
        an :class:`EquationTable` (shown as Markdown in a notebook): for each row the file relative
        to the repository, the qualified name and the line range, then the excerpts.

    Raises:
        SourceNotFoundError: an object without Python source (see :func:`locate`).
        ValueError: a row of the wrong length, or an excerpt that selects nothing.
    """
    built = []
    for spec in rows:
        if len(spec) not in (3, 4, 5):
            raise ValueError(f"each row is (label, equation, obj[, excerpt[, n_lines]]), got {spec!r}")
        label, equation, obj = spec[:3]
        excerpt_spec = spec[3] if len(spec) > 3 else None
        n_lines = int(spec[4]) if len(spec) > 4 else context
        where = locate(obj)
        excerpt = where.excerpt(excerpt_spec, n_lines) if excerpt_spec is not None else None
        built.append(EquationRow(str(label), str(equation), where, excerpt))
    return EquationTable(built)
