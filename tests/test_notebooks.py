"""Every notebook: stored without outputs, one ``parameters`` cell with PROFILE, no measured number
typed into its markdown, no reference to a file outside the repository, and it executes top to
bottom under papermill with ``PROFILE="smoke"`` (this is how CI smoke-trains every method)."""
import re
from pathlib import Path

import nbformat
import pytest

from survey_lib.report import read_summary

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9]*.ipynb"))


#: The lessons (every notebook but the index): each must have these parts, found by a markdown heading
#: (``("heading", "Learning goals")`` matches a line ``## Learning goals``) or by a cell tag
#: (``("tag", "verdict")``). A later part is one more line here.
LESSONS = [p for p in NOTEBOOKS if p.stem != "00_index"]
REQUIRED_PARTS = [
    ("heading", "Learning goals"),
    ("heading", "Equations in code"),
    ("tag", "exercise"),
    ("tag", "solution"),
    ("tag", "verdict"),
]
#: Parts that some lessons do not have yet: {part: notebook stems}. An entry goes when those
#: notebooks get the part. 01_vit computes its verdicts (McNemar against the SVM) in cells not yet
#: tagged ``verdict``.
NOT_YET: dict = {}


def missing_parts(nb, parts=REQUIRED_PARTS) -> list:
    """The required parts a notebook lacks."""
    headings = {m.group(1).strip() for c in nb.cells if c.cell_type == "markdown"
                for m in re.finditer(r"^#{2,3}\s+(.+?)\s*$", c.source, re.M)}
    tags = {t for c in nb.cells for t in c.metadata.get("tags", [])}
    return [(kind, name) for kind, name in parts if name not in (headings if kind == "heading" else tags)]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_every_lesson_has_the_required_parts(path):
    parts = [p for p in REQUIRED_PARTS if path.stem not in NOT_YET.get(p, ())]
    missing = missing_parts(nbformat.read(path, as_version=4), parts)
    assert not missing, f"{path.name} lacks {missing}"


def solution_cells(nb) -> list:
    """The code cells tagged ``solution``."""
    return [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_solutions_are_hidden_code_cells_after_their_exercise(path):
    """A worked solution stays collapsed in JupyterLab until the reader clicks it: a code cell with
    ``source_hidden`` and ``outputs_hidden``, under a markdown line that says how to open it."""
    nb = nbformat.read(path, as_version=4)
    for i, c in enumerate(nb.cells):
        if "solution" not in c.metadata.get("tags", []):
            continue
        hidden = c.metadata.get("jupyter", {})
        assert c.cell_type == "code", f"{path.name}: cell {i} is tagged 'solution' but is not code"
        assert hidden.get("source_hidden") is True and hidden.get("outputs_hidden") is True, \
            f"{path.name}: solution cell {i} must set metadata.jupyter.source_hidden and outputs_hidden"
        assert nb.cells[i - 1].cell_type == "markdown" and "click" in nb.cells[i - 1].source.lower(), \
            f"{path.name}: solution cell {i} needs a markdown line before it saying how to open it"


#: The source documents of the survey, by title: a box on a source document's error names one.
SOURCE_TITLES = (
    "Self-supervised learning with Neighborhood Attention Transformers",
    "CNN vs Transformers for real-time facial emotion recognition",
    "Vision transformers, self-supervised and cross-modal learning",
    "Bringing Vision Transformers Closer to Individuals",
)
REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_source_error_boxes_name_their_document_and_stay_in_the_repository(path):
    """A cell tagged ``source-error`` is an alert box that names the source document by its title,
    cites the paper (an arXiv id), and points only at files that exist in the repository."""
    nb = nbformat.read(path, as_version=4)
    for i, c in enumerate(nb.cells):
        if "source-error" not in c.metadata.get("tags", []):
            continue
        text = " ".join(c.source.split())
        assert c.cell_type == "markdown" and 'class="alert' in text, f"{path.name}: cell {i} is not an alert box"
        assert any(t.lower() in text.lower() for t in SOURCE_TITLES), \
            f"{path.name}: source-error cell {i} names none of the source documents by title {SOURCE_TITLES}"
        assert "arxiv" in text.lower(), f"{path.name}: source-error cell {i} cites no paper by its arXiv id"
        assert not re.search(r"DESIGN\.md|SOURCES\.md|STYLE\.md|architecture\.json|\.\./shared", text), path.name
        for ref in re.findall(r"`((?:tests|survey_lib|notebooks|benchmarks)/[\w./-]+)`", text):
            assert (REPO / ref).exists(), f"{path.name}: source-error cell {i} refers to {ref}, not in the repository"


def test_the_parts_check_finds_headings_and_tags():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# T\n\n## Learning goals\n\n1. x"),
                nbformat.v4.new_code_cell("1", metadata={"tags": ["verdict"]})]
    parts = [("heading", "Learning goals"), ("heading", "Equations in code"), ("tag", "verdict"), ("tag", "solution")]
    assert missing_parts(nb, parts) == [("heading", "Equations in code"), ("tag", "solution")]


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found under notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_clean(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear outputs before committing"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, f"{path.name}: needs exactly one cell tagged 'parameters', found {len(params)}"
    assert "PROFILE" in params[0].source, f"{path.name}: the parameters cell must define PROFILE"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert first_code is params[0], f"{path.name}: the parameters cell must be the first code cell"


#: What looks like a measured number in prose: a decimal percentage (``94.7%``), a time (``290 s``,
#: ``6 minutes``), a speed-up (``3x faster``), or a whole percentage in a sentence about accuracy.
MEASURED = re.compile(
    r"(?<![\w.])\d+\.\d+\s?%"
    r"|(?<![\w.])\d+(?:\.\d+)?\s?(?:ms|s|sec|seconds?|min|minutes?|h|hours?)\b"
    r"|(?<![\w.])\d+(?:\.\d+)?\s?x\s(?:faster|slower|better|worse|more|less|fewer)"
    r"|(?<![\w.])\d+%(?=[^.\n]*\b(?:accuracy|reach|score|k-NN|probe|top-1))"
)
#: A sentence (or its cell's first line) naming a source may quote numbers: a paper, a table, a
#: source document (S1-S4), a target.
SOURCE = re.compile(r"arXiv|et al\.|\bTables?\b|\bTab\.|\bFig\.|\bSec\.|\bpaper\b|published|quot|\bclaim|thesis|"
                    r"\breview\b|\bS[1-4]\b|source|\btarget\b|\baim\b", re.I)
CODE = re.compile(r"```.*?```|`[^`]*`|\$\$.*?\$\$|\$[^$]*\$", re.S)


def typed_numbers(nb) -> list:
    """(cell index, number, sentence) of every measured-looking number without a source in the markdown."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        text = CODE.sub(" ", cell.source)
        first = text.strip().splitlines()[0] if text.strip() else ""
        if SOURCE.search(first):
            continue
        for sentence in re.split(r"(?<=[.!?])\s+|\n\s*\n|\n[-*] ", text):
            if not SOURCE.search(sentence):
                found += [(i, m.group(0), sentence.strip()[:100]) for m in MEASURED.finditer(sentence)]
    return found


def test_the_numbers_rule_catches_typed_results_and_spares_quotes():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("The ViT reached 98.9% after 290 s."),
                nbformat.v4.new_markdown_cell("ViT-B reaches 77.9% on ImageNet (the paper, Table 5)."),
                nbformat.v4.new_markdown_cell("We mask 75% of the patches; the target is 98.0%."),
                nbformat.v4.new_markdown_cell("Code is exempt: `acc = 0.95%`.")]
    assert [(i, n) for i, n, _ in typed_numbers(nb)] == [(0, "98.9%"), (0, "290 s")]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_measured_number_is_typed_into_markdown(path):
    """Measured numbers are written by the code from the results (``IPython.display.Markdown``);
    numbers quoted from papers and source documents name their source in the same sentence."""
    found = typed_numbers(nbformat.read(path, as_version=4))
    assert not found, f"{path.name}: measured-looking numbers typed into markdown: {found}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_notebook_refers_to_a_file_outside_the_repository(path):
    text = path.read_text()
    assert not re.search(r"DESIGN\.md|SOURCES\.md|STYLE\.md|architecture\.json|\.\./shared", text), path.name


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_under_smoke(path, tmp_path, monkeypatch):
    import papermill as pm

    figs = tmp_path / "figures"
    monkeypatch.setenv("SURVEY_FIGURES_DIR", str(figs))
    pm.execute_notebook(str(path), str(tmp_path / path.name), parameters={"PROFILE": "smoke"},
                        kernel_name="python3", progress_bar=False, cwd=str(path.parent))
    pngs = list((figs / path.stem).glob("*.png"))
    assert pngs, f"{path.name} saved no figure under figures/{path.stem}/"
    rows = read_summary(figs / "summary.csv")
    assert all(r["profile"] == "smoke" for r in rows)
