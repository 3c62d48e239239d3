"""Every notebook: stored without outputs, one ``parameters`` cell with PROFILE, and it executes top
to bottom under papermill with ``PROFILE="smoke"`` (this is how CI smoke-trains every method)."""
from pathlib import Path

import nbformat
import pytest

from survey_lib.report import read_summary

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9]*.ipynb"))


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
