"""Every registered recipe runs end to end under ``smoke``, resumes from its checkpoint, and a recipe
defined outside the package registers and trains through ``survey train`` without editing it."""
import math

import pytest
import torch
from torch import nn

from survey_lib.cli import main as survey
from survey_lib.data import DigitsDataset
from survey_lib.evaluate import accuracy
from survey_lib.recipes import (Recipe, RecipeData, RecipeResult, UnknownRecipeError, get_recipe, list_recipes,
                                merge_config, register)

#: What the package must provide (a new method adds to it; none may silently disappear).
EXPECTED = {"vit", "deit", "cnn_teacher", "swin", "nat", "clip", "open_clip_clip", "simclr", "mae", "mae_finetune", "dino", "dino_nat",
            "multitask", "supervised_baseline"}


def test_the_methods_of_the_survey_are_registered():
    assert EXPECTED <= set(list_recipes())


@pytest.mark.parametrize("name", list_recipes())
def test_every_recipe_trains_under_smoke_and_resumes_from_its_checkpoint(name, tmp_path):
    recipe = get_recipe(name)
    ckpt = str(tmp_path / f"{name}.pt")
    first = recipe.run("smoke", seed=0, checkpoint=ckpt, progress=False, cache=False)
    assert isinstance(first, RecipeResult) and first.recipe == name and first.profile == "smoke"
    assert len(first.history.rows) == first.config["train"]["epochs"]
    assert first.metrics and all(v is None or math.isfinite(v) for v in first.metrics.values())
    assert not first.model.training
    # The same command again finds the finished checkpoint: nothing is retrained, the same model returns.
    again = recipe.run("smoke", seed=0, checkpoint=ckpt, progress=False, cache=False)
    assert again.history.rows == first.history.rows
    assert again.history.step_losses == first.history.step_losses
    for (k, a), b in zip(first.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_overrides_are_merged_and_typos_are_refused():
    recipe = get_recipe("vit")
    cfg = recipe.config("smoke", {"train": {"epochs": 1}})
    assert cfg["train"]["epochs"] == 1 and cfg["train"]["batch_size"] == recipe.configs["smoke"]["train"]["batch_size"]
    assert recipe.configs["smoke"]["train"]["epochs"] == 2  # the registered configuration is untouched
    with pytest.raises(KeyError, match="unknown configuration key 'epoch'"):
        recipe.config("smoke", {"train": {"epoch": 1}})
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        recipe.config("huge")
    assert merge_config({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


def test_unknown_recipe_lists_the_registered_ones():
    with pytest.raises(UnknownRecipeError, match="unknown method 'vitt'.*vit"):
        get_recipe("vitt")


# ---------------------------------------------------------------------------------------------
# a new method is new files: a toy recipe defined here, registered and run through the CLI
# ---------------------------------------------------------------------------------------------
class _PixelClassifier(nn.Module):
    """Logistic regression on the 8 x 8 digits' pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _toy_data(cfg, seed):
    test = DigitsDataset(train=False, img_size=8)
    return RecipeData(train=DigitsDataset(train=True, img_size=8), val=test, test=test)


TOY = Recipe(
    name="toy_pixels",
    summary="logistic regression on raw pixels (a test's toy recipe)",
    configs={p: {"train": dict(epochs=e, batch_size=64, lr=1e-2, warmup_epochs=0)} for p, e in
             (("smoke", 3), ("cpu", 3), ("full", 3))},
    data=_toy_data,
    build=lambda cfg, data: _PixelClassifier(),
    evaluate=lambda model, data, cfg, history: {"test_acc": accuracy(model, data.test)},
)


def test_a_recipe_from_outside_the_package_trains_through_survey_train(capsys, tmp_path):
    register(TOY, replace=True)
    assert survey(["train", "--list"]) == 0
    assert "toy_pixels" in capsys.readouterr().out
    assert survey(["train", "toy_pixels", "--profile", "smoke", "--checkpoint", str(tmp_path / "toy.pt"),
                   "--set", "train.epochs=2"]) == 0
    out = capsys.readouterr().out
    assert "'recipe': 'toy_pixels'" in out and "'test_acc'" in out
    state = torch.load(tmp_path / "toy.pt", weights_only=False)
    assert state["epoch"] == 2  # the override reached the loop
    result = get_recipe("toy_pixels").run("smoke", progress=False)
    assert result["test_acc"] > 0.8  # logistic regression on the digits' pixels learns in 3 epochs
    with pytest.raises(ValueError, match="already registered"):
        register(Recipe(**{**TOY.__dict__, "summary": "another"}))


# ---------------------------------------------------------------------------------------------
# the model cache
# ---------------------------------------------------------------------------------------------
def test_the_same_run_comes_from_the_cache_and_a_changed_one_trains(monkeypatch, tmp_path):
    monkeypatch.setenv("SURVEY_CACHE", str(tmp_path / "cache"))
    recipe = get_recipe("vit")
    first = recipe.run("smoke", seed=0, progress=False)
    assert first.extras["cache"] == "stored"
    hit = recipe.run("smoke", seed=0, progress=False)
    assert hit.extras["cache"] == "hit" and hit.metrics == first.metrics and hit.history.rows == first.history.rows
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), hit.model.state_dict().values()))
    assert accuracy(hit.model, get_recipe("vit").data(hit.config, 0).test) == first.metrics["test_acc"]
    changed = recipe.run("smoke", seed=0, progress=False, overrides={"train": {"lr": 2e-3}})
    assert changed.extras["cache"] == "stored" and changed.history.step_losses != first.history.step_losses
    assert recipe.run("smoke", seed=1, progress=False).extras["cache"] == "stored"  # another seed, another key


def test_a_corrupt_cache_entry_is_reported_and_retrained(monkeypatch, tmp_path):
    monkeypatch.setenv("SURVEY_CACHE", str(tmp_path / "cache"))
    recipe = get_recipe("vit")
    first = recipe.run("smoke", seed=0, progress=False)
    (entry,) = (tmp_path / "cache" / "vit").glob("*.pt")
    entry.write_bytes(entry.read_bytes()[:100])  # truncated
    with pytest.warns(RuntimeWarning, match="cannot be used.*training again"):
        again = recipe.run("smoke", seed=0, progress=False)
    assert again.extras["cache"] == "stored" and again.metrics == first.metrics
    assert recipe.run("smoke", seed=0, progress=False).extras["cache"] == "hit"
    monkeypatch.setenv("SURVEY_FRESH", "1")  # survey run --fresh: train again, replace the entry
    assert recipe.run("smoke", seed=0, progress=False).extras["cache"] == "stored"


def test_the_code_version_ignores_docstrings_and_comments_but_not_statements():
    from survey_lib.recipes.cache import _code_text

    src = 'def f(x):\n    """Doc."""\n    return x + 1  # one\n'
    assert _code_text(src) == _code_text('def f(x):\n    """Other doc, with a measured 97%."""\n    return x + 1\n')
    assert _code_text(src) == _code_text("def f(x):\n    return x + 1\n")
    assert _code_text(src) != _code_text('def f(x):\n    """Doc."""\n    return x + 2\n')
    assert _code_text('X = dict(a=1)\n') != _code_text('X = dict(a=2)\n')
    assert _code_text("def broken(:\n") == "def broken(:\n"  # unparsable: hashed as text


def test_a_recipes_code_version_follows_its_imports_and_nothing_else(monkeypatch):
    from survey_lib.recipes import cache

    vit = cache.code_modules(tuple(get_recipe("vit").code_roots()))
    for needed in ("survey_lib.recipes.vit", "survey_lib.recipes.base", "survey_lib.models.vit", "survey_lib.layers",
                   "survey_lib.train", "survey_lib.data.mnist", "survey_lib.evaluate"):
        assert needed in vit, needed
    for other in ("survey_lib.recipes.dino", "survey_lib.objectives.dino", "survey_lib.models.clip", "survey_lib.recipes.mae"):
        assert other not in vit, other
    deit = cache.code_modules(tuple(get_recipe("deit").code_roots()))
    assert {"survey_lib.recipes.teacher", "survey_lib.models.resnet", "survey_lib.objectives.distillation"} <= set(deit)
    assert TOY.code_roots() is None  # defined here: its imports cannot be followed, all code counts
    # a statement changed in a module the ViT imports changes its version; one in DINO's objective does not
    before = {n: cache.code_version(tuple(get_recipe(n).code_roots())) for n in ("vit", "dino")}
    real = cache._code_text
    for changed in ("models/vit.py", "objectives/dino.py"):
        cache.code_version.cache_clear()
        monkeypatch.setattr(cache, "_code_text", lambda src, real=real, target=changed: real(src) + (
            "changed" if src == (cache._PACKAGE / target).read_text(encoding="utf-8") else ""))
        after = {n: cache.code_version(tuple(get_recipe(n).code_roots())) for n in ("vit", "dino")}
        assert after["dino"] != before["dino"]  # DINO imports both
        assert (after["vit"] != before["vit"]) == (changed == "models/vit.py")
    cache.code_version.cache_clear()
    with pytest.raises(ValueError, match="not modules"):
        cache.code_modules(("numpy",))


def test_seeds_runner_reports_each_seed_and_the_spread(monkeypatch, tmp_path):
    from survey_lib.recipes import run_seeds

    monkeypatch.setenv("SURVEY_CACHE", str(tmp_path / "cache"))
    runs = run_seeds("vit", "smoke", seeds=(0, 1, 2), overrides={"train": {"epochs": 1}}, progress=False)
    accs = runs.values("test_acc")
    assert len(accs) == 3 and runs.seeds == [0, 1, 2]
    assert runs.mean("test_acc") == pytest.approx(sum(accs) / 3)
    assert runs.std("test_acc") == pytest.approx(torch.tensor(accs).std().item())
    assert runs.summary()["test_acc"][2] == 3
