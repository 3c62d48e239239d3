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
