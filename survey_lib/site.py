"""A static HTML site of the executed notebooks (``make site``), readable from ``file://`` with no network.

``build_site`` turns the notebooks that ``survey run`` executed (``build/notebooks/<profile>/*.ipynb``)
into ``<out>/<notebook>.html`` pages and an ``index.html`` that lists them in the order of
:data:`survey_lib.course.LEARNING_PATH` (then any other notebook, by name).

Offline by construction: nbconvert's ``lab`` template loads require.js, MathJax, mermaid and the
widget manager from a CDN; the template used here (``lab`` with those blocks replaced) loads none of
them. Figures are inline (``data:`` URIs) and the CSS is inlined by nbconvert. Equations are typeset
by the copy of MathJax 2.7 that the ``jupyter-server-mathjax`` package ships (a project dependency),
copied into ``<out>/mathjax/`` and loaded by a relative path; without that package the pages still
build and show the equations as TeX source.
"""
from __future__ import annotations

import html
import re
import shutil
import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Union

import nbformat

__all__ = ["build_site", "mathjax_dir", "notebook_title", "site_order", "SiteError"]

MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"

#: ``lab``'s index template without anything that reaches the network.
OFFLINE_TEMPLATE = r"""{%- extends 'index.html.j2' -%}
{% from 'mathjax.html.j2' import mathjax %}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_js_mathjax -%}
{%- if resources.survey_mathjax -%}{{ mathjax(resources.mathjax_url) }}{%- endif -%}
{%- endblock html_head_js_mathjax -%}
"""


class SiteError(RuntimeError):
    """The site cannot be built (no executed notebooks, MathJax required but missing); the message
    says what to run."""


def mathjax_dir() -> Optional[Path]:
    """The folder holding ``MathJax.js`` shipped by ``jupyter-server-mathjax``, or None if it is not installed."""
    try:
        import jupyter_server_mathjax
    except ImportError:
        return None
    static = Path(jupyter_server_mathjax.__file__).parent / "static"
    return static if (static / "MathJax.js").exists() else None


def notebook_title(nb) -> str:
    """The text of the notebook's first ``# `` heading (Markdown stripped), else its name in metadata."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if m:
                return re.sub(r"[*_`]", "", m.group(1)).strip()
    return str(nb.metadata.get("title", "untitled notebook"))


def _summary(nb) -> str:
    """The first paragraph of prose after the title (for notebooks not on the learning path)."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for para in re.split(r"\n\s*\n", cell.source):
            para = para.strip()
            if para and not para.startswith("#") and not para.startswith("*") and not para.startswith("|"):
                return re.sub(r"\s+", " ", re.sub(r"[*_`]", "", para))[:300]
    return ""


def site_order(stems: Sequence[str]) -> List[str]:
    """``stems`` in learning-path order: ``00_index`` first, then :data:`LEARNING_PATH`, then the rest by name."""
    from .course import LEARNING_PATH

    path = [x.notebook for x in LEARNING_PATH]
    first = [s for s in stems if s == "00_index"]
    on_path = [s for s in path if s in stems]
    rest = sorted(s for s in stems if s not in on_path and s not in first)
    return first + on_path + rest


_MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]*\$", re.S)
_PRIMES = re.compile(r"(?<=[\w}\)\]])('+)")


def _primes(text: str) -> str:
    """``z'`` written as ``z^{\\prime}`` inside math: the packaged MathJax 2.7 fails on the ``'``
    shorthand ("Math Processing Error") and typesets the explicit form."""
    return _MATH.sub(lambda m: _PRIMES.sub(lambda q: "^{" + r"\prime" * len(q.group(1)) + "}", m.group(0)), text)


def _fix_math(nb):
    """Apply :func:`_primes` to the Markdown cells and Markdown outputs of a notebook (in place)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _primes(cell.source)
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "text/markdown" in data:
                md = data["text/markdown"]
                data["text/markdown"] = _primes("".join(md) if isinstance(md, list) else md)
    return nb


def _exporter(with_mathjax: bool):
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"survey_offline.html.j2": OFFLINE_TEMPLATE})],
                            embed_images=True)
    exporter.template_file = "survey_offline.html.j2"
    exporter.mathjax_url = f"mathjax/MathJax.js?config={MATHJAX_CONFIG}" if with_mathjax else ""
    return exporter


def _nav(order: List[str], i: int, titles: dict) -> str:
    links = ['<a href="index.html">index</a>']
    if i > 0:
        links.append(f'<a href="{order[i - 1]}.html">&larr; {html.escape(titles[order[i - 1]])}</a>')
    if i + 1 < len(order):
        links.append(f'<a href="{order[i + 1]}.html">{html.escape(titles[order[i + 1]])} &rarr;</a>')
    return ('<nav class="survey-nav" style="font-family: sans-serif; padding: 0.5em 1em; '
            'border-bottom: 1px solid #ccc;">' + " &middot; ".join(links) + "</nav>")


def build_site(notebooks: Union[str, Path], out: Union[str, Path], mathjax: Union[bool, str] = "auto",
               title: str = "vit-survey: vision transformers, a course in notebooks") -> Path:
    """Render every ``*.ipynb`` of ``notebooks`` (executed, with outputs) into ``out``; return ``out/index.html``.

    Args:
        notebooks: the folder of executed notebooks, e.g. ``build/notebooks/cpu``.
        out: the site's folder (created; pages it wrote before are overwritten).
        mathjax: ``"auto"`` uses the packaged MathJax when installed (else TeX source and a
            warning); True requires it; False never loads it.
        title: the index page's heading.

    Raises:
        SiteError: ``notebooks`` holds no notebook (run ``make figures`` first), or ``mathjax=True``
            and ``jupyter-server-mathjax`` is not installed.
    """
    from .course import LEARNING_PATH

    src, out = Path(notebooks), Path(out)
    paths = sorted(src.glob("*.ipynb")) if src.is_dir() else []
    if not paths:
        raise SiteError(f"no executed notebooks in {src}; run `make figures` (PROFILE=cpu) or "
                        f"`survey run --profile smoke` first, then `make site`")
    mj = mathjax_dir() if mathjax else None
    if mathjax is True and mj is None:
        raise SiteError("MathJax not found: `pip install jupyter-server-mathjax` (a dependency of this project), "
                        "or build with mathjax=False")
    if mathjax == "auto" and mj is None:
        warnings.warn("jupyter-server-mathjax is not installed: equations are shown as TeX source "
                      "(`pip install jupyter-server-mathjax`, then `make site` again)", stacklevel=2)
    out.mkdir(parents=True, exist_ok=True)
    if mj is not None:
        shutil.copytree(mj, out / "mathjax", dirs_exist_ok=True)

    nbs = {p.stem: _fix_math(nbformat.read(p, as_version=4)) for p in paths}
    order = site_order(list(nbs))
    titles = {s: notebook_title(nbs[s]) for s in order}
    exporter = _exporter(mj is not None)
    for i, stem in enumerate(order):
        body, _ = exporter.from_notebook_node(nbs[stem], resources={"survey_mathjax": mj is not None,
                                                                    "metadata": {"name": titles[stem]}})
        body = body.replace("<main>", "<main>\n" + _nav(order, i, titles), 1)
        (out / f"{stem}.html").write_text(body, encoding="utf-8")

    lessons = {x.notebook: x for x in LEARNING_PATH}
    items = []
    for stem in order:
        item = lessons.get(stem)
        teaches = item.teaches if item else _summary(nbs[stem])
        needs = ""
        if item and item.needs:
            needs = " <span class='needs'>Read first: " + ", ".join(
                f'<a href="{n}.html">{n}</a>' if n in nbs else n for n in item.needs) + ".</span>"
        items.append(f'<li><a href="{stem}.html"><strong>{html.escape(titles[stem])}</strong></a>'
                     f'<br><span class="teaches">{html.escape(teaches)}</span>{needs}</li>')
    index = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 52em; margin: 2em auto; padding: 0 1em; line-height: 1.45; color: #222; }}
li {{ margin-bottom: 1em; }}
.needs {{ color: #555; font-size: 0.9em; }}
</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p>The notebooks in learning-path order, executed (outputs and figures included) from <code>{html.escape(src.name)}</code>
notebooks. Each page opens with its learning goals, what to read first and its cost.</p>
<ol>
{chr(10).join(items)}
</ol>
</body>
</html>
"""
    index_path = out / "index.html"
    index_path.write_text(index, encoding="utf-8")
    return index_path
