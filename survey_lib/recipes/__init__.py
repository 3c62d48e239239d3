"""Recipes: how each method is trained, one module per method, registered by name.

A recipe module holds its method's per-profile model and training configuration and registers a
:class:`~survey_lib.recipes.base.Recipe`; :meth:`Recipe.run` is the one path every method follows
(seed -> data -> build -> fit -> evaluate, :mod:`survey_lib.recipes.base`). Every module of this
package is imported here, so a new method is a new file: it registers itself, and ``survey train
--list`` shows it.

    vit, swin, nat, teacher (DeiT's CNN teacher), deit, clip, simclr, mae, dino (+ dino_nat),
    multitask (+ supervised_baseline)
"""
import importlib
import pkgutil

from .base import (PROFILES, Recipe, RecipeData, RecipeResult, RunContext, SeedsResult, UnknownRecipeError,
                   get_recipe, list_recipes, merge_config, profile_config, register, run_recipe, run_seeds)

__all__ = ["PROFILES", "Recipe", "RecipeData", "RecipeResult", "RunContext", "SeedsResult", "UnknownRecipeError",
           "get_recipe", "list_recipes", "merge_config", "profile_config", "register", "run_recipe", "run_seeds"]

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "cache", "common"):
        importlib.import_module(f"{__name__}.{_module.name}")
