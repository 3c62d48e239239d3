"""Confidence intervals (survey_lib.intervals) and the figures of notebook 08 that draw them
(survey_lib.viz.cnn_vs_vit): the t-interval's coverage and its agreement with the paired t-test of
compare_seeds, the Clopper-Pearson interval against its Beta-quantile definition and its exact
coverage, Wilson's interval against its closed form, bad input, and figure sizes, colours and ticks."""
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from survey_lib.evaluate import compare_seeds
from survey_lib.intervals import binomial_interval, seed_interval
from survey_lib.train import History
from survey_lib.viz import cnn_vs_vit as V
from survey_lib.viz.compare import MODEL_COLORS

matplotlib.use("Agg")


# ---------------------------------------------------------------------------------------------
# the t-interval over seeds
# ---------------------------------------------------------------------------------------------
def test_seed_interval_by_hand():
    ci = seed_interval([0.90, 0.92, 0.94, 0.96, 0.98])
    std = math.sqrt(sum((x - 0.94) ** 2 for x in (0.90, 0.92, 0.94, 0.96, 0.98)) / 4)
    assert ci["mean"] == pytest.approx(0.94) and ci["std"] == pytest.approx(std) and ci["n"] == 5
    assert ci["t"] == pytest.approx(2.7764451, abs=1e-6)  # t_{0.975, 4}, from a table
    assert ci["half_width"] == pytest.approx(2.7764451 * std / math.sqrt(5), rel=1e-6)
    assert ci["low"] == pytest.approx(0.94 - ci["half_width"]) and ci["high"] == pytest.approx(0.94 + ci["half_width"])
    wider = seed_interval([0.90, 0.92, 0.94, 0.96, 0.98], confidence=0.99)
    assert wider["half_width"] > ci["half_width"]


def test_seed_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = [(lambda c: c["low"] <= 0.9 <= c["high"])(seed_interval(rng.normal(0.9, 0.02, size=5))) for _ in range(4000)]
    assert 0.935 < np.mean(hits) < 0.965


def test_the_interval_of_paired_differences_excludes_zero_exactly_when_compare_seeds_rejects():
    rng = np.random.default_rng(1)
    agree = 0
    for _ in range(300):
        b = rng.normal(0.95, 0.01, size=5)
        a = b + rng.normal(rng.uniform(-0.02, 0.02), 0.01, size=5)
        ci = seed_interval(a - b)
        excludes = ci["low"] > 0 or ci["high"] < 0
        agree += excludes == (compare_seeds(a, b)["p_value"] < 0.05)
    assert agree == 300


def test_identical_seeds_give_a_zero_width_interval():
    ci = seed_interval([0.98, 0.98, 0.98])
    assert ci["half_width"] == 0.0 and ci["low"] == ci["high"] == pytest.approx(0.98)


@pytest.mark.parametrize("values, confidence, match", [
    ([0.9], 0.95, "at least 2 values"), ([], 0.95, "at least 2 values"), ([0.9, float("nan")], 0.95, "non-finite"),
    ([0.9, 0.8], 1.0, "confidence"), ([0.9, 0.8], 0.0, "confidence"), ([0.9, 0.8], 95, "confidence"),
])
def test_seed_interval_rejects_bad_input(values, confidence, match):
    with pytest.raises(ValueError, match=match):
        seed_interval(values, confidence)


# ---------------------------------------------------------------------------------------------
# binomial intervals on one test split
# ---------------------------------------------------------------------------------------------
def test_clopper_pearson_equals_its_beta_quantile_definition():
    for k, n in ((45, 50), (50, 50), (0, 50), (1, 3), (977, 1000)):
        ci = binomial_interval(k, n)
        low = 0.0 if k == 0 else stats.beta.ppf(0.025, k, n - k + 1)
        high = 1.0 if k == n else stats.beta.ppf(0.975, k + 1, n - k)
        assert ci["low"] == pytest.approx(low, abs=1e-9) and ci["high"] == pytest.approx(high, abs=1e-9)
        assert ci["low"] <= ci["acc"] == k / n <= ci["high"]


def test_clopper_pearson_never_covers_less_than_95_percent_on_50_images():
    n = 50
    bounds = [binomial_interval(k, n) for k in range(n + 1)]
    pmf_k = np.arange(n + 1)
    for p in np.linspace(0.01, 0.99, 99):  # exact coverage: the probability of the k whose interval holds p
        cover = sum(stats.binom.pmf(k, n, p) for k in pmf_k if bounds[k]["low"] <= p <= bounds[k]["high"])
        assert cover >= 0.95 - 1e-9, (p, cover)


def test_wilson_equals_its_closed_form_and_is_shorter_than_the_exact_interval():
    z = stats.norm.ppf(0.975)
    for k, n in ((45, 50), (43, 50), (10, 50)):
        w = binomial_interval(k, n, method="wilson")
        centre = (k + z * z / 2) / (n + z * z)
        half = z / (n + z * z) * math.sqrt(k * (n - k) / n + z * z / 4)
        assert w["low"] == pytest.approx(centre - half, abs=1e-9) and w["high"] == pytest.approx(centre + half, abs=1e-9)
        e = binomial_interval(k, n)
        assert w["high"] - w["low"] < e["high"] - e["low"]


def test_one_image_of_the_lfw_test_split_is_two_points_and_the_interval_shrinks_with_more_images():
    small, large = binomial_interval(45, 50), binomial_interval(900, 1000)
    assert small["one_image"] == pytest.approx(0.02) and large["one_image"] == pytest.approx(0.001)
    assert (small["high"] - small["low"]) > 3 * (large["high"] - large["low"])


@pytest.mark.parametrize("args, match", [
    ((51, 50), "correct must lie"), ((-1, 50), "correct must lie"), ((1, 0), "at least 1"),
    ((2.5, 50), "whole number"), ((True, 50), "whole number"), ((5, 50, 0.95, "normal"), "unknown method"),
    ((5, 50, 1.5), "confidence"),
])
def test_binomial_interval_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        binomial_interval(*args)


# ---------------------------------------------------------------------------------------------
# the figures
# ---------------------------------------------------------------------------------------------
def _pixels(fig, name):
    """The saved size (w, h) in pixels of ``fig`` (the caller points SURVEY_FIGURES_DIR at a temporary folder)."""
    from PIL import Image

    from survey_lib.report import save_figure

    path = save_figure(fig, "t", name)
    with Image.open(path) as im:
        return im.size


def _results():
    rows = []
    for ds, base in (("mnist5k", 0.98), ("lfw", 0.9)):
        for m, shift in (("vit", -0.01), ("resnet", 0.0)):
            for s in range(5):
                rows.append({"dataset": ds, "model": m, "seed": s, "test_acc": base + shift + 0.002 * s})
    return pd.DataFrame(rows)


def test_accuracy_figure_draws_each_models_interval_in_its_colour(tmp_path, monkeypatch):
    monkeypatch.setenv("SURVEY_FIGURES_DIR", str(tmp_path))
    res = _results()
    b = {("lfw", "vit"): binomial_interval(44, 50)}
    fig = V.plot_accuracy_intervals(res, binomial=b, models=("vit", "resnet"))
    ax = fig.axes[1]  # lfw
    vals = res[(res.dataset == "lfw") & (res.model == "vit")].test_acc
    ci = seed_interval(vals)
    # the error bars: vertical segments; the t-interval of the ViT spans 100 * (low, high), in its colour
    segs = [(c, s) for c in ax.collections if hasattr(c, "get_segments") for s in c.get_segments()]
    spans = [(round(float(s[0][1]), 6), round(float(s[1][1]), 6), tuple(np.round(c.get_colors()[0][:3], 3))) for c, s in segs]
    vit_rgb = tuple(np.round(matplotlib.colors.to_rgb(MODEL_COLORS["vit"]), 3))
    assert (round(100 * ci["low"], 6), round(100 * ci["high"], 6), vit_rgb) in spans
    assert (round(100 * b[("lfw", "vit")]["low"], 6), round(100 * b[("lfw", "vit")]["high"], 6), vit_rgb) in spans
    assert ax.get_ylim()[1] == pytest.approx(100.5) and ax.get_ylim()[0] <= 96.0
    w, h = _pixels(fig, "acc")
    assert 300 <= h and 300 <= w <= 4000


def test_accuracy_figure_rejects_missing_columns_and_single_seeds():
    with pytest.raises(ValueError, match="lacks the columns"):
        V.plot_accuracy_intervals(pd.DataFrame({"model": ["vit"], "test_acc": [0.9]}))
    one = pd.DataFrame([{"dataset": "lfw", "model": "vit", "seed": 0, "test_acc": 0.9}])
    with pytest.raises(ValueError, match="at least 2 values"):
        V.plot_accuracy_intervals(one)


def test_a_two_class_confusion_matrix_is_big_enough_for_a_slide_and_shows_counts(tmp_path, monkeypatch):
    monkeypatch.setenv("SURVEY_FIGURES_DIR", str(tmp_path))
    fig = V.plot_confusion(np.array([[18, 7], [0, 25]]), ["non-face", "face"], title="lfw: ViT")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "18\n72%" in texts and "0\n0%" in texts and "25\n100%" in texts
    assert len(fig.axes) == 2  # the matrix and its colour bar
    w, h = _pixels(fig, "cm")
    assert w >= 300 and h >= 300
    with pytest.raises(ValueError, match="square"):
        V.plot_confusion(np.zeros((2, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="class names"):
        V.plot_confusion(np.zeros((2, 2)), ["a"])
    with pytest.raises(ValueError, match="negative"):
        V.plot_confusion(-np.ones((2, 2)), ["a", "b"])


def test_sample_grid_of_two_rows_is_above_the_slide_floor(tmp_path, monkeypatch):
    monkeypatch.setenv("SURVEY_FIGURES_DIR", str(tmp_path))
    rows = {name: [(torch.rand(1, 25, 25), f"{name} {j}") for j in range(8)] for name in ("mnist5k", "lfw")}
    w, h = _pixels(V.plot_sample_grid(rows), "grid")
    assert w >= 300 and h >= 300
    with pytest.raises(ValueError, match="at least one"):
        V.plot_sample_grid({"lfw": []})


def test_latency_ticks_are_round_numbers_spanning_the_range():
    assert V.latency_ticks(0.8, 33.3) == [0.5, 1, 2, 5, 10, 20, 50]
    assert V.latency_ticks(1.0, 1.0) == [0.5, 1, 2]  # one round tick on each side of the range
    with pytest.raises(ValueError):
        V.latency_ticks(0.0, 1.0)
    with pytest.raises(ValueError):
        V.latency_ticks(2.0, 1.0)


def test_stream_figure_has_plain_millisecond_ticks_the_budget_and_model_colours(tmp_path, monkeypatch):
    monkeypatch.setenv("SURVEY_FIGURES_DIR", str(tmp_path))
    rng = np.random.default_rng(0)
    fig = V.plot_stream_latency({"vit": rng.uniform(0.9, 3.0, 200), "resnet": rng.uniform(0.8, 2.0, 200)})
    fig.canvas.draw()
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["0.5", "1", "2", "5", "10", "20", "50"]
    assert any(abs(line.get_xdata()[0] - 1000 / 30) < 1e-9 for line in ax.get_lines())
    cdf = {line.get_label(): line.get_color() for line in fig.axes[1].get_lines()}
    assert cdf["ViT"] == MODEL_COLORS["vit"] and cdf["ResNet"] == MODEL_COLORS["resnet"]
    w, h = _pixels(fig, "stream")
    assert w >= 300 and h >= 300
    with pytest.raises(ValueError, match="positive"):
        V.plot_stream_latency({"vit": [1.0, 0.0]})
    with pytest.raises(ValueError, match="no frames"):
        V.plot_stream_latency({"vit": []})


def test_seed_curves_draw_one_mean_per_model():
    hs = {m: [History(rows=[{"epoch": e, "train_loss": 1.0 / e + s, "val_acc": 0.5 + 0.1 * e} for e in (1, 2, 3)])
              for s in range(3)] for m in ("vit", "resnet")}
    fig = V.plot_seed_curves(hs)
    means = [line for line in fig.axes[0].get_lines() if line.get_label().startswith("ViT")]
    assert len(means) == 1 and np.allclose(means[0].get_ydata(), [1 + 1, 0.5 + 1, 1 / 3 + 1])
    assert np.allclose([line for line in fig.axes[1].get_lines() if line.get_label().startswith("ResNet")][0].get_ydata(),
                       [60, 70, 80])
    with pytest.raises(ValueError, match="without histories"):
        V.plot_seed_curves({"vit": []})
