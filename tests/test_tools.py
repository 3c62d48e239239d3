"""evaluate, viz, report and the CLI."""
import csv
import subprocess
import sys

import matplotlib
import pytest
import torch
from matplotlib.figure import Figure

from survey_lib import viz
from survey_lib.cost import count_flops, count_parameters, latency, throughput
from survey_lib.evaluate import knn_classify, linear_probe
from survey_lib.recipes.vit import vit_for_profile
from survey_lib.report import Reporter, read_summary, record_result
from survey_lib.train import History


def test_flops_match_the_analytic_count():
    lin = torch.nn.Linear(10, 20, bias=False)
    assert count_flops(lin, (3, 10)) == 2 * 3 * 10 * 20
    m = vit_for_profile("smoke")  # 16 patches + CLS, D=32, 1 block, mlp 2x
    N, D = 17, 32
    per_block = 2 * N * D * 3 * D + 2 * (2 * N * N * D) + 2 * N * D * D + 2 * (2 * N * D * 2 * D)
    patch = 2 * 16 * (8 * 8 * 1) * D
    head = 2 * D * 10
    assert count_flops(m, (1, 1, 32, 32)) == per_block + patch + head


def test_parameter_count_and_speed_fields():
    m = vit_for_profile("smoke")
    assert count_parameters(m) == sum(p.numel() for p in m.parameters())
    m.head.weight.requires_grad_(False)
    assert count_parameters(m, trainable_only=True) == count_parameters(m) - m.head.weight.numel()
    t = latency(m, (1, 1, 32, 32), warmup=1, repeats=5, num_threads=1)
    assert 0 < t["median_ms"] <= t["p90_ms"] and t["threads"] == 1
    assert throughput(m, (8, 1, 32, 32), warmup=1, repeats=3, num_threads=1) > 0


def test_knn_and_linear_probe_on_separable_features():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=g) * 5
    y = torch.arange(60) % 3
    x = centres[y] + torch.randn(60, 8, generator=g) * 0.1
    assert knn_classify(x[:45], y[:45], x[45:], y[45:], k=5) == 1.0
    assert linear_probe(x[:45], y[:45], x[45:], y[45:]) == 1.0
    # labels carry no information -> about chance
    y_rand = torch.randint(0, 3, (60,), generator=g)
    assert knn_classify(x[:45], y_rand[:45], x[45:], y_rand[45:], k=5) < 0.7
    with pytest.raises(ValueError, match="k=50"):
        knn_classify(x[:45], y[:45], x[45:], y[45:], k=50)
    # per-sample correctness for paired tests (McNemar): its mean is the accuracy
    for probe_fn, kw in ((knn_classify, dict(k=5)), (linear_probe, {})):
        c = probe_fn(x[:45], y_rand[:45], x[45:], y_rand[45:], return_correct=True, **kw)
        assert c.dtype == bool and c.shape == (15,)
        assert c.mean() == pytest.approx(probe_fn(x[:45], y_rand[:45], x[45:], y_rand[45:], **kw))


def test_rollout_of_identity_attention_is_identity_and_rows_are_distributions():
    eye = torch.eye(5).expand(2, 3, 5, 5)
    torch.testing.assert_close(viz.attention_rollout([eye, eye]), torch.eye(5).expand(2, 5, 5))
    a = torch.softmax(torch.randn(2, 3, 5, 5), -1)
    r = viz.attention_rollout([a, a, a])
    torch.testing.assert_close(r.sum(-1), torch.ones(2, 5))
    a_hat = 0.5 * a.mean(1) + 0.5 * torch.eye(5)
    torch.testing.assert_close(viz.attention_rollout([a, a]), a_hat @ a_hat)


def test_figure_helpers_return_figures():
    h = History(rows=[{"epoch": 1, "train_loss": 1.0, "val_acc": 0.5}, {"epoch": 2, "train_loss": 0.5, "val_acc": 0.8}])
    m = vit_for_profile("smoke").eval()
    x = torch.randn(2, 1, 32, 32)
    maps = m.get_attention_maps(x)
    figs = [
        viz.plot_history(h), viz.plot_history({"a": h, "b": h}),
        viz.plot_confusion_matrix(torch.eye(3).numpy() * 5, ["a", "b", "c"]),
        viz.plot_patch_grid(x[0], 8), viz.plot_attention_heads(x[0], maps[-1][0], (4, 4)),
        viz.plot_rollout(x, maps, (4, 4)), viz.plot_pos_embed_similarity(m.pos_embed, (4, 4)),
    ]
    assert all(isinstance(f, Figure) for f in figs)
    import matplotlib.pyplot as plt

    plt.close("all")


def test_summary_rows_are_replaced_not_duplicated(figures_tmp):
    record_result("01_vit", "vit", "digits", "cpu", "test_acc", 0.9, 10)
    record_result("01_vit", "vit", "digits", "cpu", "test_acc", 0.95, 12)
    record_result("01_vit", "vit", "digits", "smoke", "test_acc", 0.3, 1)
    rows = read_summary()
    assert len(rows) == 2
    assert {r["profile"]: r["value"] for r in rows} == {"cpu": "0.95", "smoke": "0.3"}
    with open(figures_tmp / "summary.csv") as f:
        assert next(csv.reader(f)) == ["notebook", "method", "dataset", "profile", "metric", "value", "std", "n_seeds",
                                       "seconds"]
    with pytest.raises(ValueError, match="fraction"):
        record_result("01_vit", "vit", "digits", "cpu", "test_acc", 97.5)
    with pytest.raises(ValueError, match="non-finite"):
        record_result("01_vit", "vit", "digits", "cpu", "loss", float("nan"))
    r = Reporter("01_vit", "cpu")
    fig = Figure()
    fig.add_subplot().plot([0, 1])
    assert r.save(fig, "line") == figures_tmp / "01_vit" / "line.png"
    assert (figures_tmp / "01_vit" / "line.png").stat().st_size > 0


def test_only_rank_0_writes_figures_and_rows(figures_tmp, monkeypatch):
    """Under torchrun every rank runs the same script; ranks other than 0 check but never write."""
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    fig = Figure()
    fig.add_subplot().plot([0, 1])
    path = Reporter("01_vit", "cpu").save(fig, "line")
    record_result("01_vit", "vit", "digits", "cpu", "test_acc", 0.9, 10)
    assert not path.exists() and read_summary() == []
    with pytest.raises(ValueError, match="fraction"):
        record_result("01_vit", "vit", "digits", "cpu", "test_acc", 97.5)
    monkeypatch.setenv("RANK", "0")
    record_result("01_vit", "vit", "digits", "cpu", "test_acc", 0.9, 10)
    assert Reporter("01_vit", "cpu").save(fig, "line").exists() and len(read_summary()) == 1


def test_cli_names_the_failing_cell(tmp_path, figures_tmp):
    import nbformat

    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell('PROFILE = "cpu"')
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("raise RuntimeError('boom ' + PROFILE)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "99_bad.ipynb"
    nbformat.write(nb, path)
    proc = subprocess.run([sys.executable, "-m", "survey_lib.cli", "run", "--profile", "smoke", "--quiet",
                           "--output-dir", str(tmp_path / "out"), str(path)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "99_bad.ipynb: cell" in proc.stderr and "RuntimeError: boom smoke" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "survey_lib.cli", "run", "no_such_notebook"], capture_output=True, text=True)
    assert proc.returncode == 2 and "no notebook 'no_such_notebook'" in proc.stderr


def test_worked_solutions_run_under_smoke_only_unless_asked(tmp_path, figures_tmp):
    """`survey run` executes cells tagged `solution` under smoke (CI checks them) and, under the other
    profiles, shows their code without running it (so `make figures` costs what the lessons cost),
    unless --with-solutions; the stored notebook is never changed."""
    import nbformat

    from survey_lib.cli import SOLUTION_NOT_RUN, without_solutions

    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell('PROFILE = "cpu"')
    p.metadata["tags"] = ["parameters"]
    sol = nbformat.v4.new_code_cell("raise RuntimeError('the solution ran under ' + PROFILE)")
    sol.metadata.update(tags=["solution"], jupyter={"source_hidden": True, "outputs_hidden": True})
    nb.cells = [p, nbformat.v4.new_code_cell("x = 1"), sol]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    shown = without_solutions(nb)
    assert [c.cell_type for c in shown.cells] == ["code", "code", "markdown"] and nb.cells[2].cell_type == "code"
    assert SOLUTION_NOT_RUN in shown.cells[2].source and sol.source in shown.cells[2].source
    assert shown.cells[2].metadata["tags"] == ["solution"]
    path = tmp_path / "98_sol.ipynb"
    nbformat.write(nb, path)
    before = path.read_text()

    def run(*flags):
        return subprocess.run([sys.executable, "-m", "survey_lib.cli", "run", "--quiet", "--output-dir",
                               str(tmp_path / "out"), *flags, str(path)], capture_output=True, text=True)

    cpu = run("--profile", "cpu")
    assert cpu.returncode == 0, cpu.stderr
    executed = nbformat.read(tmp_path / "out" / "98_sol.ipynb", as_version=4)
    assert executed.cells[-1].cell_type == "markdown" and SOLUTION_NOT_RUN in executed.cells[-1].source
    smoke = run("--profile", "smoke")
    assert smoke.returncode == 1 and "the solution ran under smoke" in smoke.stderr
    asked = run("--profile", "cpu", "--with-solutions")
    assert asked.returncode == 1 and "the solution ran under cpu" in asked.stderr
    assert path.read_text() == before and not list((tmp_path / "out").glob(".*without-solutions*"))


def test_survey_run_param_sets_the_parameters_cell_and_records_no_time(tmp_path, figures_tmp):
    """`survey run -p NAME=VALUE` injects Python literals after the parameters cell (PROFILE stays the
    --profile's; a tuple arrives as a list, which the notebooks read with tuple()); such a run is not
    the notebook's default cost, so run_times.csv does not get it."""
    import nbformat

    from survey_lib.cli import parse_parameters

    assert parse_parameters(["SEEDS=(0, 1)", " NAME = vit ", "X=0.5"]) == {"SEEDS": (0, 1), "NAME": "vit", "X": 0.5}
    for bad, match in (("SEEDS", "expected NAME=VALUE"), ("1X=2", "not a name"), ("PROFILE=cpu", "use --profile")):
        with pytest.raises(ValueError, match=match):
            parse_parameters([bad])
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell('PROFILE = "cpu"\nSEEDS = (0, 1, 2)')
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell("assert tuple(SEEDS) == (5,) and PROFILE == 'smoke', (SEEDS, PROFILE)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "97_param.ipynb"
    nbformat.write(nb, path)

    def run(*flags):
        return subprocess.run([sys.executable, "-m", "survey_lib.cli", "run", "--quiet", "--profile", "smoke",
                               "--output-dir", str(tmp_path / "out"), *flags, str(path)], capture_output=True, text=True)

    assert run().returncode == 1  # the default SEEDS fail the cell
    ok = run("-p", "SEEDS=(5,)")
    assert ok.returncode == 0, ok.stderr
    assert "not recorded" in ok.stdout
    assert "97_param" not in (figures_tmp / "run_times.csv").read_text()
    bad = run("-p", "PROFILE=cpu")
    assert bad.returncode != 0 and "use --profile" in bad.stderr
