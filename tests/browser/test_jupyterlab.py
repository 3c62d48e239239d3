"""The course in a real JupyterLab and the site in a real browser, driven by headless Chromium:

* 01_vit.ipynb runs every cell without error under ``PROFILE = "smoke"``, draws its figures inline,
  and its attention explorer renders and answers a slider change and a click on a patch;
* every notebook opens: all its cells load, its markdown renders (title, "Learning goals"), its kernel
  starts and is idle (running each one's smoke profile here too would add minutes to CI; ``make test``
  runs every notebook under papermill);
* ``make site`` on the notebook executed above opens from ``file://`` with every network request
  refused: the index links the page, the page shows its figures and links back.

Screenshots go to ``build/test-artifacts/``. Run with ``make test-browser`` (Debian's ``chromium`` +
Playwright for Python; Playwright never downloads a browser here: it drives ``/usr/bin/chromium``).
Everything listens on 127.0.0.1 only.
"""
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "01_vit.ipynb"
ARTIFACTS = ROOT / "build" / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_S, PAGE_S, RUN_ALL_S = 120, 120, 900

playwright_api = pytest.importorskip("playwright.sync_api", reason="run `make test-browser` (it pip-installs playwright)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _smoke_copy(dest: Path) -> Path:
    """The notebook with its parameters cell set to PROFILE = "smoke" (outputs stay empty)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source, n = re.subn(r'^PROFILE\s*=\s*"[a-z]+"', 'PROFILE = "smoke"', cell.source, flags=re.M)
    assert n == 1, f"no PROFILE assignment in the parameters cell:\n{cell.source}"
    path = dest / NOTEBOOK.name
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 (random port, random token) serving a smoke copy of the notebook."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test-browser` (it installs Debian's chromium)", pytrace=False)
    work = tmp_path_factory.mktemp("lab")
    _smoke_copy(work)
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "SURVEY_FIGURES_DIR": str(work / "figures"), "SURVEY_NUM_THREADS": "1",
           "OMP_NUM_THREADS": "1", "SURVEY_PROGRESS": "0", "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
           "JUPYTER_CONFIG_DIR": str(work / "config"), "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces")}
    env.pop("MPLBACKEND", None)  # tests/conftest.py sets Agg; a student's kernel draws inline, and so must this one
    # nothing may reach out of the machine: no news feed, no update check, no PyPI extension manager
    (work / "config").mkdir()
    (work / "config" / "jupyter_lab_config.py").write_text(
        "c.LabApp.news_url = None\n"
        "c.LabApp.extension_manager = 'readonly'\n"
        "c.LabApp.check_for_updates_class = 'jupyterlab.NeverCheckForUpdate'\n"
        "c.LabApp.expose_app_in_browser = True\n")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
           f"--LabApp.user_settings_dir={work / 'settings'}", f"--LabApp.workspaces_dir={work / 'workspaces'}"]
    if os.geteuid() == 0:  # CI and this machine run as root
        cmd.append("--allow-root")
    log = open(work / "jupyterlab.log", "w")
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {proc.returncode}:\n{(work / 'jupyterlab.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"JupyterLab did not answer within {SERVER_START_S} s")
            time.sleep(0.5)
        yield {"base": base, "token": token, "dir": work}
    finally:
        _stop_server(proc, base, token)
        log.close()


def _stop_server(proc: subprocess.Popen, base: str, token: str) -> None:
    """Ask the server to shut down (it stops its kernels), then SIGTERM / SIGKILL our own process group."""
    if proc.poll() is None:
        try:
            req = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST", data=b"")
            urllib.request.urlopen(req, timeout=10).close()
            proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            break
        os.killpg(proc.pid, sig)  # the group created by start_new_session: only this server
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass


CELL_STATE_JS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  const errors = [];
  cells.forEach((c, i) => c.model.outputs.toJSON().forEach(o => {
    if (o.output_type === 'error') errors.push({cell: i, ename: o.ename, evalue: o.evalue});
  }));
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return {n: cells.length, executed: cells.filter(c => c.model.executionCount !== null).length,
          errors: errors, status: kernel ? kernel.status : 'none'};
}"""


CAPTION_JS = "document.querySelector('.attention-explorer-caption').textContent"


def _caption(page) -> str:
    """The explorer's caption once it names a query patch: the HTML widget's text can arrive after the
    image is drawn (a CI run read it empty), so wait for it rather than read it at once."""
    page.wait_for_function(f"() => document.querySelector('.attention-explorer-caption') "
                           f"&& /query patch \\d+/.test({CAPTION_JS})")
    return page.evaluate(f"() => {CAPTION_JS}")


def _query_in_caption(text: str) -> int:
    return int(re.search(r"query patch (\d+)", text).group(1))


def _row_col_in_caption(text: str):
    m = re.search(r"query patch \d+ \(row (\d+), column (\d+)\)", text)
    return int(m.group(1)), int(m.group(2))


def test_notebook_runs_in_jupyterlab_and_the_explorer_responds(lab):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(PAGE_S * 1000)
            page.goto(f"{lab['base']}/lab/tree/{NOTEBOOK.name}?token={lab['token']}")
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget "
                                   "&& window.jupyterapp.shell.currentWidget.sessionContext "
                                   "&& window.jupyterapp.shell.currentWidget.sessionContext.session "
                                   "&& window.jupyterapp.shell.currentWidget.sessionContext.session.kernel "
                                   "&& window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'")
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            deadline = time.monotonic() + RUN_ALL_S
            while True:
                state = page.evaluate(CELL_STATE_JS)
                if state["errors"] or (state["executed"] == state["n"] and state["status"] == "idle"):
                    break
                if time.monotonic() > deadline:
                    page.screenshot(path=str(ARTIFACTS / "jupyterlab_timeout.png"))
                    pytest.fail(f"run-all did not finish in {RUN_ALL_S} s: {state}")
                time.sleep(1.0)
            run_s = time.monotonic() - t0
            if state["errors"]:
                page.screenshot(path=str(ARTIFACTS / "jupyterlab_error.png"), full_page=True)
            assert not state["errors"], f"cells raised in JupyterLab: {state['errors']}"

            explorer = page.locator(".attention-explorer")
            explorer.scroll_into_view_if_needed()
            view = explorer.locator("img.attention-explorer-view")
            view.wait_for(state="visible")
            before_caption, before_png = _caption(page), view.get_attribute("src")
            q0 = _query_in_caption(before_caption)
            page.wait_for_timeout(500)
            explorer.screenshot(path=str(ARTIFACTS / "jupyterlab_explorer_before.png"))

            # a slider change, as a person makes it: focus the query slider's handle, press the right arrow
            handle = page.locator(".attention-explorer-query-patch .noUi-handle")
            handle.focus()
            page.keyboard.press("ArrowRight")
            page.wait_for_function(f"() => /query patch {q0 + 1} /.test({CAPTION_JS})")
            page.wait_for_function(f"(src) => document.querySelector('img.attention-explorer-view').src !== src", arg=before_png)
            assert page.locator(".attention-explorer-query-patch .widget-readout").inner_text().strip() == str(q0 + 1)

            # clicks on the rollout panel (ipyevents) move the query to the patch under the pointer: a
            # click near the panel's left edge, then one near its right edge at the same height, must
            # select the same row and a column further right (the panel spans about 0.76-0.99 of the width)
            box = view.bounding_box()
            caption = _caption(page)
            view.click(position={"x": box["width"] * 0.78, "y": box["height"] * 0.35})
            page.wait_for_function(f"(c) => {CAPTION_JS} !== c", arg=caption)
            q_click = _query_in_caption(_caption(page))
            row1, col1 = _row_col_in_caption(_caption(page))
            assert q_click != q0 + 1
            assert page.locator(".attention-explorer-query-patch .widget-readout").inner_text().strip() == str(q_click)
            caption = _caption(page)
            view.click(position={"x": box["width"] * 0.95, "y": box["height"] * 0.35})
            page.wait_for_function(f"(c) => {CAPTION_JS} !== c", arg=caption)
            row2, col2 = _row_col_in_caption(_caption(page))
            assert row2 == row1 and col2 >= col1 + 2, ((row1, col1), (row2, col2))
            q_click = _query_in_caption(_caption(page))
            page.wait_for_timeout(500)
            explorer.screenshot(path=str(ARTIFACTS / "jupyterlab_explorer_after.png"))
            page.screenshot(path=str(ARTIFACTS / "jupyterlab_01_vit.png"))

            # the saved notebook agrees: every code cell executed, no error output
            page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
            page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty")
        finally:
            browser.close()
    saved = nbformat.read(lab["dir"] / NOTEBOOK.name, as_version=4)
    code = [c for c in saved.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs), "no figure was drawn inline"
    (ARTIFACTS / "jupyterlab_timing.json").write_text(json.dumps(
        {"open_and_run_all_s": round(run_s, 1), "total_s": round(time.monotonic() - t0, 1),
         "query_after_arrow": q0 + 1, "query_after_click": q_click}))


NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

OPENED_JS = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.content.widgets) return null;
  const s = panel.sessionContext && panel.sessionContext.session;
  const headings = Array.from(panel.node.querySelectorAll('.jp-RenderedMarkdown h1, .jp-RenderedMarkdown h2'))
    .map(h => h.innerText.replace(/\\u00b6/g, '').trim());
  return {cells: panel.content.widgets.length, kernel: s && s.kernel ? s.kernel.status : 'none', headings: headings};
}"""


def _shutdown_sessions(lab) -> None:
    """Stop every kernel the server runs (REST: DELETE /api/sessions/<id>)."""
    with urllib.request.urlopen(f"{lab['base']}/api/sessions?token={lab['token']}", timeout=10) as r:
        sessions = json.load(r)
    for s in sessions:
        req = urllib.request.Request(f"{lab['base']}/api/sessions/{s['id']}?token={lab['token']}", method="DELETE")
        urllib.request.urlopen(req, timeout=30).close()


def test_every_notebook_opens_in_jupyterlab_with_its_kernel(lab):
    """Every notebook of the course opens in JupyterLab: all its cells load, its markdown renders (the
    title and the "Learning goals" heading), and its kernel starts and becomes idle. (Running every
    notebook's smoke profile here as well would add several minutes to CI; ``make test`` runs each
    under papermill, and 01_vit runs in this browser above.)"""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for nb_path in NOTEBOOKS:
        if nb_path != NOTEBOOK:  # 01_vit is there already, as its smoke copy
            (lab["dir"] / nb_path.name).write_bytes(nb_path.read_bytes())
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(PAGE_S * 1000)
            for nb_path in NOTEBOOKS:
                cells = nbformat.read(nb_path, as_version=4).cells
                n_cells = len(cells)
                has_goals = any("learning-goals" in c.metadata.get("tags", []) for c in cells)
                # ?reset: a fresh workspace, so the tabs of the notebooks before are not restored
                page.goto(f"{lab['base']}/lab/tree/{nb_path.name}?reset&token={lab['token']}")
                page.wait_for_function(f"() => {{ const s = ({OPENED_JS})(); return s && s.cells === {n_cells} "
                                       "&& s.kernel === 'idle' && s.headings.length > 1; }")
                state = page.evaluate(OPENED_JS)
                page.screenshot(path=str(ARTIFACTS / f"jupyterlab_open_{nb_path.stem}.png"))
                assert state["headings"][0].startswith(nb_path.stem[:2]), (nb_path.name, state["headings"][:3])
                assert not has_goals or "Learning goals" in state["headings"], (nb_path.name, state["headings"])
                _shutdown_sessions(lab)  # its kernel stops before the next notebook opens
        finally:
            browser.close()


def test_the_site_opens_from_file_without_the_network(lab, tmp_path):
    """``make site`` on the notebook the first test executed and saved in JupyterLab: the index lists
    it, its page opens from ``file://`` with every request refused but ``file:``, shows its figures
    (embedded PNGs that decode) and links back to the index."""
    from survey_lib.site import build_site

    saved = lab["dir"] / NOTEBOOK.name
    nb = nbformat.read(saved, as_version=4)
    if not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"):
        pytest.fail("01_vit was not executed by test_notebook_runs_in_jupyterlab_and_the_explorer_responds (run the module)",
                    pytrace=False)
    executed = tmp_path / "executed"
    executed.mkdir()
    nbformat.write(nb, executed / NOTEBOOK.name)
    index = build_site(executed, tmp_path / "site")
    refused = []
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(PAGE_S * 1000)

            def only_files(route):
                if route.request.url.startswith("file:"):
                    route.continue_()
                else:
                    refused.append(route.request.url)
                    route.abort()

            page.route("**/*", only_files)
            page.goto(index.as_uri())
            link = page.locator(f'a[href="{NOTEBOOK.stem}.html"]').first
            link.click()
            page.wait_for_load_state("load")
            assert page.url.endswith(f"{NOTEBOOK.stem}.html")
            images = page.locator('img[src^="data:image/png"]')
            assert images.count() > 0
            widths = page.evaluate("() => Array.from(document.querySelectorAll('img[src^=\"data:image/png\"]'))"
                                   ".map(i => i.naturalWidth)")
            assert min(widths) > 0, widths
            page.screenshot(path=str(ARTIFACTS / "site_01_vit.png"))
            page.locator('a[href="index.html"]').first.click()
            page.wait_for_load_state("load")
            assert page.url.endswith("index.html")
            page.screenshot(path=str(ARTIFACTS / "site_index.png"))
        finally:
            browser.close()
    assert not refused, f"the site asked the network for {refused[:5]}"
