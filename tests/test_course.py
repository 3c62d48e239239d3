"""survey_lib.course: equation -> code tables located from the source, the cost read from
run_times.csv, and the learning path (every notebook on it, its prerequisites named in the notebook)."""
import re
from pathlib import Path

import nbformat
import pytest
import torch

from survey_lib import course
from survey_lib.course import SourceNotFoundError, equation_table, locate
from survey_lib.cost import count_flops
from survey_lib.layers import Attention, Block, attend
from survey_lib.models.swin import WindowAttention
from survey_lib.objectives.dino import DINOLoss

REPO = Path(__file__).resolve().parent.parent
LESSONS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
LESSONS = [p for p in LESSONS if p.stem != "00_index"]


@pytest.mark.parametrize("obj, keyword", [
    (attend, "def attend"), (Block, "class Block"), (Attention.forward, "def forward"),
    (DINOLoss.update_center, "def update_center"),  # decorated with torch.no_grad
    (count_flops, "def count_flops"),  # decorated
    (WindowAttention.relative_position_bias, "def relative_position_bias"),
])
def test_locate_finds_the_lines_of_the_object(obj, keyword):
    where = locate(obj)
    lines = (REPO / where.file).read_text().splitlines()[where.first - 1:where.last]
    assert where.file.startswith("survey_lib/")
    assert lines == [line.rstrip("\n") for line in where.lines]
    assert any(line.lstrip().startswith(keyword) for line in lines), (where, lines[:3])
    name = keyword.split()[1]
    assert where.qualname.endswith(name) and where.qualname.startswith("survey_lib.")
    # the range ends where the object ends: the next non-blank line is not indented deeper than the def
    body_indent = len(lines[where.def_offset()]) - len(lines[where.def_offset()].lstrip())
    rest = [l for l in (REPO / where.file).read_text().splitlines()[where.last:] if l.strip()]
    if rest:
        assert len(rest[0]) - len(rest[0].lstrip()) <= body_indent


@pytest.mark.parametrize("obj", [torch.softmax, len, torch.Tensor.softmax])
def test_objects_without_source_raise_a_clear_error(obj):
    with pytest.raises(SourceNotFoundError, match="no Python source.*pass the survey_lib"):
        locate(obj)


def test_interactive_objects_raise_a_clear_error():
    ns = {}
    exec("def f(x):\n    return x\n", ns)
    with pytest.raises(SourceNotFoundError, match="defined interactively"):
        equation_table([("Eq. 1", "$y = x$", ns["f"])])


def test_equation_table_rows_excerpts_and_markdown():
    table = equation_table([
        ("Eq. 2", r"$\mathrm{softmax}(QK^\top/\sqrt{d})V$", attend, "attn = attn.softmax", 2),
        ("KL", r"$\mathrm{KL}(p \| q)$ and |x|", Block.forward, (0, 1)),
        ("Block", "pre-norm", Block),
    ])
    first, excerpt = table.rows[0].excerpt
    assert "softmax" in excerpt[0] and len(excerpt) == 2
    src = (REPO / "survey_lib/layers.py").read_text().splitlines()
    assert src[first - 1].strip() == excerpt[0].strip()
    assert table.rows[1].excerpt[1][0].lstrip().startswith("def forward")
    assert table.rows[2].excerpt is None
    md = table._repr_markdown_()
    assert "| `survey_lib.layers.attend` | `survey_lib/layers.py` |" in md
    assert r"\Vert" in md and r"\|x\|" in md  # bars never split a table row
    header_cols = md.splitlines()[0].count("|")
    assert all(line.count("|") - line.count(r"\|") == header_cols for line in md.splitlines()[2:5])
    with pytest.raises(ValueError, match="marker"):
        equation_table([("x", "y", attend, "no such line")])
    with pytest.raises(ValueError, match="each row"):
        equation_table([("x", attend)])


def test_cost_is_read_from_run_times_or_says_not_measured(tmp_path, capsys):
    missing = tmp_path / "run_times.csv"
    assert "not measured yet; run `make figures`" in course.cost_markdown("01_vit", missing)
    course.show_cost("01_vit", missing)
    assert "not measured yet; run `make figures`" in capsys.readouterr().out
    missing.write_text("notebook,profile,threads,seconds\n01_vit,smoke,1,12\n01_vit,cpu,1,754\n02_deit,cpu,1,5\n")
    text = course.cost_markdown("01_vit", missing)
    assert "| 12 s | 12 min 34 s | not measured yet |" in text
    assert course.run_times(missing) == {"01_vit": {"smoke": 12.0, "cpu": 754.0}, "02_deit": {"cpu": 5.0}}
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="make figures"):
        course.run_times(bad)


def test_format_seconds():
    assert [course.format_seconds(s) for s in (0.4, 59, 60, 3599, 3600, 7384)] == \
        ["0 s", "59 s", "1 min 00 s", "59 min 59 s", "1 h 00 min", "2 h 03 min"]


def test_every_notebook_is_on_the_learning_path_after_what_it_needs():
    stems = [p.stem for p in LESSONS]
    assert [x.notebook for x in course.LEARNING_PATH] == stems
    seen = set()
    for item in course.LEARNING_PATH:
        assert set(item.needs) <= seen, f"{item.notebook} needs {item.needs}, not all before it on the path"
        seen.add(item.notebook)


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_learning_goals_name_the_prerequisites_and_the_cost_cell_follows_the_parameters(path):
    nb = nbformat.read(path, as_version=4)
    goals = next(c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## Learning goals"))
    n_goals = len(re.findall(r"^\d+\. ", goals.source, re.M))
    assert 3 <= n_goals <= 5, f"{path.name}: {n_goals} learning goals, want 3-5"
    for need in course.lesson(path.stem).needs:
        assert f"`{need}`" in goals.source, f"{path.name}: the learning goals do not name its prerequisite {need}"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert f'show_cost("{path.stem}")' in code[1].source, f"{path.name}: the cell after the parameters shows the cost"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_the_equation_table_of_every_notebook_builds(path):
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "equations" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path.name}: one code cell tagged 'equations'"
    ns = {}
    *body, last = cells[0].source.rstrip().split("\nequation_table(")
    exec("\n".join(body), ns)
    table = eval("equation_table(" + last, ns)
    assert len(table.rows) >= 3
    for row in table.rows:
        assert row.location.file.startswith("survey_lib/"), row


def test_readme_learning_path_is_in_path_order():
    text = (REPO / "README.md").read_text()
    begin, end = "<!-- learning-path -->", "<!-- /learning-path -->"
    assert begin in text and end in text, "README needs the generated learning-path block"
    block = text[text.index(begin):text.index(end)]
    order = re.findall(r"\[`(\d\d_\w+)`\]", block)
    assert order == [x.notebook for x in course.LEARNING_PATH]


def test_survey_run_regenerates_the_readme_learning_path_with_the_times(tmp_path):
    from survey_lib.cli import update_readme_times

    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- learning-path -->\nold\n<!-- /learning-path -->\ny\n"
                      "<!-- notebook-times -->\n<!-- /notebook-times -->\n")
    (tmp_path / "run_times.csv").write_text("notebook,profile,threads,seconds\n01_vit,cpu,1,754\n")
    assert update_readme_times(readme, tmp_path)
    text = readme.read_text()
    assert "old" not in text and "[`01_vit`](notebooks/01_vit.ipynb)" in text
    row = next(line for line in text.splitlines() if "[`01_vit`]" in line)
    assert row.endswith("| - | 12 min 34 s | - |")
    assert "| `01_vit` | 754 |" in text
    assert not update_readme_times(readme, tmp_path)  # nothing changed the second time
