"""`make site` (survey_lib.site.build_site): an index in learning-path order linking every page, and
nothing that reaches the network (the pages must work from file:// offline)."""
import re

import nbformat
import pytest

from survey_lib.course import LEARNING_PATH
from survey_lib.site import SiteError, build_site, mathjax_dir

REMOTE = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.I)
REMOTE_CSS = re.compile(r"""@import\s+(?:url\()?["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//""", re.I)


def _executed(path, title):
    """A tiny notebook as papermill leaves it: markdown with math, a code cell with a PNG output."""
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\nAttention $\\mathrm{{softmax}}(QK^\\top/\\sqrt{{d}})V$."),
                nbformat.v4.new_code_cell("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
                                          "%matplotlib inline\nplt.plot([0, 1]); plt.show()")]
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    src = tmp_path_factory.mktemp("executed")
    _executed(src / f"{LEARNING_PATH[1].notebook}.ipynb", "Second on the path")
    for stem, title in ((LEARNING_PATH[0].notebook, "First on the path"), ("zz_extra", "Not on the path")):
        (src / f"{stem}.ipynb").write_bytes((src / f"{LEARNING_PATH[1].notebook}.ipynb").read_bytes()
                                            .replace(b"Second on the path", title.encode()))
    out = tmp_path_factory.mktemp("site")
    return build_site(src, out), out


def test_index_links_every_page_in_learning_path_order(site):
    index, out = site
    assert index.exists() and index.name == "index.html"
    links = re.findall(r'<li><a href="([^"]+)\.html">', index.read_text())
    assert links == [LEARNING_PATH[0].notebook, LEARNING_PATH[1].notebook, "zz_extra"]
    for stem in links:
        page = (out / f"{stem}.html").read_text()
        assert 'href="index.html"' in page
    assert LEARNING_PATH[1].teaches in index.read_text().replace("&#x27;", "'")


def test_no_page_loads_anything_from_the_network(site):
    _, out = site
    for page in out.glob("*.html"):
        text = page.read_text()
        assert not REMOTE.findall(text), f"{page.name} loads {REMOTE.findall(text)[:3]}"
        assert not REMOTE_CSS.findall(text), f"{page.name} imports remote CSS {REMOTE_CSS.findall(text)[:3]}"
        assert "require.js" not in text and "unpkg" not in text


def test_figures_are_embedded(site):
    _, out = site
    page = (out / f"{LEARNING_PATH[1].notebook}.html").read_text()
    assert re.search(r'<img\b[^>]*\bsrc="data:image/png;base64,', page)


def test_mathjax_is_local_when_installed(site):
    _, out = site
    page = (out / f"{LEARNING_PATH[1].notebook}.html").read_text()
    if mathjax_dir() is None:
        assert "MathJax.js" not in page
        pytest.skip("jupyter-server-mathjax is not installed: equations stay TeX source")
    assert re.search(r'<script src="mathjax/MathJax\.js\?config=', page)
    assert (out / "mathjax" / "MathJax.js").exists()


def test_no_executed_notebooks_is_a_clear_error(tmp_path):
    with pytest.raises(SiteError, match="make figures"):
        build_site(tmp_path / "nothing", tmp_path / "site")


def test_primes_are_rewritten_for_the_packaged_mathjax():
    from survey_lib.site import _primes

    assert _primes(r"don't: $z'_\ell = x''$ and $$f'(x)$$") == r"don't: $z^{\prime}_\ell = x^{\prime\prime}$ and $$f^{\prime}(x)$$"
