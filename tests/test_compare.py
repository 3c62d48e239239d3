"""The inductive-bias comparison (survey_lib.recipes.compare): every model on the same data, recipe
and seeds; training-set fractions with their epochs; the study trains and evaluates each run."""
import math

import pytest

from survey_lib.recipes.compare import (COMPARED, compared_overrides, compared_recipe, epochs_for_fraction,
                                        equal_terms_study, model_costs, row_name)


def test_every_model_trains_on_the_same_data_with_the_same_recipe():
    configs = {name: compared_recipe(name).config("cpu", compared_overrides(name, "cpu")) for name in COMPARED}
    for name, cfg in configs.items():
        assert cfg["data"] == configs["vit"]["data"], name
        assert cfg["train"] == configs["vit"]["train"], name
        assert cfg["data"]["dataset"] == "mnist5k" and cfg["data"]["img_size"] == 28
    assert configs["vit"] == compared_recipe("vit").config("cpu")  # the ViT of notebook 01, unchanged
    assert configs["swin"]["model"]["shifted_windows"] and not configs["swin_no_shift"]["model"]["shifted_windows"]
    assert {k: v for k, v in configs["swin"]["model"].items() if k != "shifted_windows"} == \
        {k: v for k, v in configs["swin_no_shift"]["model"].items() if k != "shifted_windows"}
    full = compared_recipe("swin").config("full", compared_overrides("swin", "full"))
    assert full["data"]["dataset"] == "mnist" and full["model"] == configs["swin"]["model"]
    assert compared_overrides("swin", "smoke") is None  # smoke: the recipe's own smoke configuration


def test_a_fraction_of_the_training_split_trains_for_more_epochs():
    assert epochs_for_fraction(150, 1.0) == 150
    assert epochs_for_fraction(150, 0.25) == 300
    assert epochs_for_fraction(150, 0.05) == math.ceil(150 / math.sqrt(0.05))
    cfg = compared_recipe("nat").config("cpu", compared_overrides("nat", "cpu", 0.1))
    assert cfg["data"]["label_fraction"] == 0.1 and cfg["train"]["epochs"] == epochs_for_fraction(150, 0.1)
    assert cfg["model"] == compared_recipe("nat").config("cpu", compared_overrides("nat", "cpu"))["model"]
    assert cfg["train"]["eval_every"] == 4  # 475 epochs: about 150 evaluations, as on all the data
    assert "eval_every" not in compared_recipe("nat").config("cpu", compared_overrides("nat", "cpu"))["train"]
    tc = compared_recipe("nat").train_config(cfg, seed=0, profile="cpu")
    assert tc.eval_every == 4 and tc.epochs == 475
    with pytest.raises(KeyError, match="unknown configuration key 'not_a_field'"):
        compared_recipe("nat").config("cpu", {"train": {"not_a_field": 1}})
    assert row_name("nat", 0.1) == "nat_f010" and row_name("nat") == "nat"
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            epochs_for_fraction(150, bad)
    with pytest.raises(ValueError, match="unknown model 'cnn'.*resnet"):
        compared_overrides("cnn", "cpu")


def test_costs_count_each_model_as_the_comparison_builds_it():
    costs = model_costs("cpu")
    assert costs["swin"] == costs["swin_no_shift"]  # shifting moves tokens, it adds nothing
    assert costs["vit"]["params"] == 139018 and all(c["flops"] > 1e6 for c in costs.values())


def test_the_study_trains_every_model_at_every_fraction(monkeypatch, tmp_path):
    monkeypatch.setenv("SURVEY_CACHE", str(tmp_path / "cache"))
    study = equal_terms_study("smoke", seeds=(0,), fractions=(1.0, 0.5), models=("swin_no_shift", "resnet"), progress=False)
    assert set(study) == {(m, f) for m in ("swin_no_shift", "resnet") for f in (1.0, 0.5)}
    for (name, f), runs in study.items():
        (run,) = runs.results
        assert 0.0 <= run.metrics["test_acc"] <= 1.0 and "val_acc" in run.history.last
        assert run.config["data"]["label_fraction"] == f
    whole, half = (study[("resnet", f)].results[0] for f in (1.0, 0.5))
    assert len(half.history.rows) == epochs_for_fraction(len(whole.history.rows), 0.5)
    assert not any(b.shift_size != (0, 0) for st in study[("swin_no_shift", 1.0)].results[0].model.layers for b in st.blocks)


def _fake_study():
    from types import SimpleNamespace

    from survey_lib.train import History

    def run(seed, acc, secs):
        h = History(rows=[{"epoch": e, "seconds": secs, "val_acc": acc * e / 3} for e in (1, 2, 3)])
        return SimpleNamespace(seed=seed, history=h, metrics={"test_acc": acc})

    return {(m, f): SimpleNamespace(results=[run(s, base * f + 0.01 * s, 2.0 if m == "vit" else 5.0) for s in (0, 1, 2)])
            for m, base in (("vit", 0.8), ("resnet", 0.9)) for f in (0.5, 1.0)}


def test_the_frames_hold_one_row_per_run_and_per_epoch():
    from survey_lib.viz.compare import curves_frame, results_frame

    study = _fake_study()
    res = results_frame(study, {0.5: 100, 1.0: 200})
    assert len(res) == 12 and set(res.train_images) == {100, 200}
    assert res[(res.model == "vit") & (res.fraction == 1.0)].test_acc.tolist() == pytest.approx([0.8, 0.81, 0.82])
    assert res.seconds.max() == 15.0  # three epochs of 5 s
    cur = curves_frame(study, 1.0)
    assert len(cur) == 2 * 3 * 3 and cur[cur.model == "vit"].groupby("seed").seconds.max().tolist() == [6.0] * 3


def test_the_figures_draw_one_line_per_model_in_its_colour_and_refuse_bad_frames():
    import matplotlib.pyplot as plt
    import pandas as pd

    from survey_lib.viz.compare import MODEL_COLORS, curves_frame, model_color, plot_accuracy_vs_time, plot_learning_curves, results_frame

    study = _fake_study()
    fig = plot_learning_curves(results_frame(study, {0.5: 100, 1.0: 200}), models=("vit", "resnet"))
    lines = fig.axes[0].get_lines()
    assert [ln.get_color() for ln in lines] == [MODEL_COLORS["vit"], MODEL_COLORS["resnet"]]
    assert lines[1].get_ydata().tolist() == pytest.approx([46.0, 91.0])  # mean over seeds, in percent
    assert fig.axes[0].get_xscale() == "log" and len(fig.axes[0].collections) == 2  # one band per model
    plt.close(fig)
    fig = plot_accuracy_vs_time(curves_frame(study), budget=6.0)
    assert len(fig.axes[0].get_lines()) == 3  # two models and the budget line
    plt.close(fig)
    assert len(set(MODEL_COLORS.values())) == len(MODEL_COLORS) and model_color("unknown") == "#7f7f7f"
    with pytest.raises(ValueError, match="results_frame"):
        plot_learning_curves(pd.DataFrame({"model": ["vit"]}))
    with pytest.raises(ValueError, match="curves_frame"):
        plot_accuracy_vs_time(pd.DataFrame({"model": ["vit"]}))


def test_seconds_per_epoch_times_every_model_in_turn():
    from survey_lib.recipes.compare import seconds_per_epoch

    spe = seconds_per_epoch("smoke", ("vit", "resnet"), steps=2, rounds=1)
    assert set(spe) == {"vit", "resnet"} and all(v > 0 for v in spe.values())
    with pytest.raises(ValueError, match="steps and rounds"):
        seconds_per_epoch("smoke", ("vit",), steps=0)
    with pytest.raises(ValueError, match="unknown model"):
        seconds_per_epoch("smoke", ("cnn",))
