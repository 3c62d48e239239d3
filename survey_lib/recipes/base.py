"""The one path every method is trained by: seed -> data -> build -> ``fit`` -> evaluate.

A :class:`Recipe` is a method's per-profile configuration plus the few functions that differ between
methods (which data, which model, which training step, which final metrics). :meth:`Recipe.run` is
the path, written once: resolve the configuration, load the data, prepare what the model needs
(e.g. DeiT's teacher), seed, build the model, :func:`survey_lib.train.fit` it (checkpointed and
resumable), evaluate it. Every recipe has the same signature and returns a :class:`RecipeResult`.

Recipes register themselves (:func:`register`) when their module is imported; ``survey train
--list`` and ``survey train <name>`` read the registry, and a recipe defined outside the package
(a test, a notebook, a user's script) registers the same way.

Configurations are nested dicts, one per profile (``smoke``, ``cpu``, ``full``), with at least a
``train`` section of :class:`survey_lib.train.TrainConfig` fields; the other sections are the
recipe's own (``model``, ``crops``, ``head``, ...). Overrides are merged section by section
(:func:`merge_config`), so ``overrides={"train": {"epochs": 5}}`` changes one field.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

from torch import nn
from torch.utils.data import DataLoader, Dataset

import torch

from ..train import History, TrainConfig, fit, seed_everything
from . import cache as model_cache

__all__ = [
    "PROFILES",
    "RecipeData",
    "RunContext",
    "RecipeResult",
    "Recipe",
    "UnknownRecipeError",
    "merge_config",
    "profile_config",
    "register",
    "get_recipe",
    "list_recipes",
    "run_recipe",
    "SeedsResult",
    "run_seeds",
]

PROFILES = ("smoke", "cpu", "full")


class UnknownRecipeError(ValueError):
    """No recipe of that name is registered; the message lists the registered ones."""


@dataclass
class RecipeData:
    """What a recipe trains and evaluates on.

    Attributes:
        train: a Dataset (batched and shuffled by ``fit``) or a ready DataLoader.
        val: evaluated after every epoch by ``fit``'s default evaluation (loss and accuracy), when the
            recipe has no ``eval_fn`` of its own.
        test: the split the final metrics are computed on.
        extras: anything else the recipe's functions share (probe sets, a tokenizer, the teacher).
    """

    train: Union[Dataset, DataLoader]
    val: Optional[Dataset] = None
    test: Optional[Dataset] = None
    extras: Dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    """The arguments of one :meth:`Recipe.run`, for a recipe's ``prepare`` step (e.g. to train a
    teacher with the same profile, seed and checkpoint folder)."""

    profile: str
    seed: int
    checkpoint: Optional[str]
    resume: bool
    progress: Optional[bool]


@dataclass
class RecipeResult:
    """What every recipe returns.

    Attributes:
        recipe, profile, seed: what was run.  config: the resolved configuration.
        model: the trained model (eval mode).  history: its :class:`~survey_lib.train.History`.
        metrics: the final numbers (accuracies as fractions in [0, 1]).
        extras: other products (e.g. DeiT's ``teacher``), and ``prepare_seconds``.

    ``result["test_acc"]`` reads a metric (then ``model``, ``history``, ``seconds``, an extra), so
    notebooks can treat the result like the dicts they print.
    """

    recipe: str
    profile: str
    seed: int
    config: Dict[str, Any]
    model: nn.Module
    history: History
    metrics: Dict[str, float]
    extras: Dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        """Training wall time in seconds: the run's epochs plus what ``prepare`` trained (a teacher)."""
        return self.history.seconds + float(self.extras.get("prepare_seconds", 0.0))

    def __getitem__(self, key: str) -> Any:
        if key in self.metrics:
            return self.metrics[key]
        if key in ("model", "history", "seconds", "config"):
            return getattr(self, key)
        if key in self.extras:
            return self.extras[key]
        raise KeyError(f"{key!r}: the result of {self.recipe} has metrics {sorted(self.metrics)} "
                       f"and extras {sorted(self.extras)}")

    def summary(self) -> Dict[str, Any]:
        """A printable dict: recipe, profile, seed, the metrics and the seconds."""
        return {"recipe": self.recipe, "profile": self.profile, "seed": self.seed, **self.metrics,
                "seconds": round(self.seconds, 1)}


def merge_config(base: Mapping[str, Any], overrides: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """``base`` with ``overrides`` merged into it: nested dicts key by key, anything else replaced.

    Raises:
        KeyError: an override names a key the configuration does not have (a typo would otherwise
            be silently ignored); the message lists the keys that exist.
    """
    out = copy.deepcopy(dict(base))
    for key, value in (overrides or {}).items():
        if key not in out:
            raise KeyError(f"unknown configuration key {key!r}; the configuration has {sorted(out)}")
        if isinstance(out[key], dict) and isinstance(value, Mapping):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def profile_config(configs: Mapping[str, Any], profile: str, what: str = "recipe") -> Any:
    """``configs[profile]`` (deep-copied).

    Raises:
        ValueError: an unknown profile; the message lists the profiles.
    """
    if profile not in configs:
        raise ValueError(f"unknown profile {profile!r} for {what}; choose one of {sorted(configs)}")
    return copy.deepcopy(configs[profile])


Config = Dict[str, Any]

#: TrainConfig fields that :meth:`Recipe.run` sets itself (never from a configuration).
_RUN_FIELDS = ("seed", "checkpoint_path", "resume", "progress", "desc", "meta")


@dataclass
class Recipe:
    """A method's training recipe: per-profile configurations and the functions that differ.

    Attributes:
        name: the registry key (``survey train <name>``).  summary: one line for ``--list``.
        configs: ``{profile: config}``; each config has a ``train`` section (TrainConfig fields) and
            optionally ``eval_every`` (``"end"``: only after the last epoch).
        data: ``(config, seed) -> RecipeData``; must not draw from the global random generators
            (loaders get their own seeded generator), so that seeding before the model is enough.
        build: ``(config, data) -> nn.Module``, called right after ``seed_everything(seed)``.
        evaluate: ``(model, data, config, history) -> {metric: float}``, the final numbers.
        step: ``(config, data, model) -> step_fn`` for ``fit`` (default: cross-entropy).
        eval_fn: ``(config, data) -> eval_fn`` run by ``fit`` every ``eval_every`` epochs (default:
            ``fit``'s loss and accuracy on ``data.val``).
        prepare: ``(config, data, RunContext) -> None``, run before seeding (e.g. train DeiT's
            teacher into ``data.extras``); may set ``data.extras["prepare_seconds"]``.
        optimizer: ``(config, model) -> torch.optim.Optimizer`` (default: ``fit``'s AdamW over
            :func:`survey_lib.train.param_groups`), e.g. other parameter groups or AdamW's ``eps``;
            ``fit``'s schedule still sets every group's learning rate at every step.
        version: bump when the recipe's code changes what it trains.
    """

    name: str
    summary: str
    configs: Mapping[str, Config]
    data: Callable[[Config, int], RecipeData]
    build: Callable[[Config, RecipeData], nn.Module]
    evaluate: Callable[[nn.Module, RecipeData, Config, History], Dict[str, float]]
    step: Optional[Callable[[Config, RecipeData, nn.Module], Callable]] = None
    eval_fn: Optional[Callable[[Config, RecipeData], Callable]] = None
    prepare: Optional[Callable[[Config, RecipeData, RunContext], None]] = None
    optimizer: Optional[Callable[[Config, nn.Module], torch.optim.Optimizer]] = None
    version: str = "1"

    def config(self, profile: str, overrides: Optional[Mapping[str, Any]] = None) -> Config:
        """The configuration of ``profile`` with ``overrides`` merged in (see :func:`merge_config`).

        The ``train`` section may also be given any other :class:`~survey_lib.train.TrainConfig`
        field (e.g. ``{"train": {"eval_every": 5}}``), which then joins the resolved configuration.

        Raises:
            ValueError: an unknown profile.  KeyError: an override of a key that does not exist.
        """
        base = profile_config(self.configs, profile, f"recipe {self.name!r}")
        extra = set((overrides or {}).get("train", None) or {}) - set(base["train"])
        fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        base["train"].update({k: fields[k] for k in extra if k in fields and k not in _RUN_FIELDS})
        return merge_config(base, overrides)

    def code_roots(self) -> Optional[List[str]]:
        """The modules the recipe's functions are written in (with this one, which runs them): the
        roots of the code its cache key hashes (:func:`survey_lib.recipes.cache.code_version`).
        None (hash all the training code) when a function lives outside ``survey_lib`` (a recipe
        defined in a test or a notebook), whose imports the hash cannot follow."""
        modules = {__name__}
        for fn in (self.data, self.build, self.evaluate, self.step, self.eval_fn, self.prepare, self.optimizer):
            while isinstance(fn, functools.partial):
                fn = fn.func
            if fn is None:
                continue
            module = getattr(fn, "__module__", None) or ""
            if module.split(".")[0] != __name__.split(".")[0]:
                return None
            modules.add(module)
        return sorted(modules)

    def train_config(self, cfg: Config, seed: int, profile: str, checkpoint: Optional[str] = None,
                     resume: bool = True, progress: Optional[bool] = None, desc: Optional[str] = None) -> TrainConfig:
        """The :class:`~survey_lib.train.TrainConfig` of a resolved configuration."""
        kwargs = dict(cfg["train"])
        every = cfg.get("eval_every")
        if every is not None:
            kwargs["eval_every"] = kwargs["epochs"] if every == "end" else int(every)
        meta = {"recipe": self.name, "version": self.version, "config": {k: v for k, v in cfg.items() if k != "train"}}
        return TrainConfig(**kwargs, seed=seed, checkpoint_path=checkpoint, resume=resume, progress=progress,
                           desc=desc or f"{self.name} [{profile}]", meta=meta)

    def run(self, profile: str = "cpu", seed: int = 0, checkpoint: Optional[str] = None, resume: bool = True,
            overrides: Optional[Mapping[str, Any]] = None, progress: Optional[bool] = None,
            desc: Optional[str] = None, cache: Optional[bool] = None) -> RecipeResult:
        """Train and evaluate the method: seed -> data -> build -> fit -> evaluate.

        Args:
            profile: ``smoke``, ``cpu`` or ``full``.  seed: seeds the model, the data order and the
                augmentation.  checkpoint: a path; training writes it every epoch and resumes from
                it when it exists (``resume=False`` starts over).  overrides: merged into the
                configuration.  progress: show the progress bar (None: unless ``SURVEY_PROGRESS=0``).
                desc: its label (default ``"<name> [<profile>]"``).
            cache: reuse the model cache (:mod:`survey_lib.recipes.cache`) when it holds this exact
                run, and store the run there otherwise; None: yes, except that ``SURVEY_FRESH=1``
                trains again (and replaces the entry); False: neither read nor write it. A run
                given a ``checkpoint`` trains (or resumes) from it and only writes the cache.

        Raises:
            ValueError: an unknown profile, or a bad configuration value.  KeyError: an override of a
                key that does not exist.
        """
        cfg = self.config(profile, overrides)
        read_cache = model_cache.cache_enabled() if cache is None else cache  # SURVEY_FRESH: write, don't read
        write_cache = cache is not False
        description = {"recipe": self.name, "version": self.version, "profile": profile, "seed": seed, "config": cfg,
                       "threads": torch.get_num_threads()}
        key = model_cache.cache_key(description, self.code_roots())
        entry = model_cache.load_entry(self.name, key) if read_cache and checkpoint is None else None
        data = self.data(cfg, seed)
        if self.prepare is not None:
            self.prepare(cfg, data, RunContext(profile, seed, checkpoint, resume, progress))
        seed_everything(seed)
        model = self.build(cfg, data)
        if entry is not None:  # the same run was trained before: its weights, history and metrics
            model.load_state_dict(entry["model"])
            model.eval()
            history = History(rows=entry["history"]["rows"], step_losses=entry["history"]["step_losses"])
            extras = dict(data.extras, **entry["extras"], cache="hit", cache_key=key)
            return RecipeResult(self.name, profile, seed, cfg, model, history, dict(entry["metrics"]), extras)
        step_fn = self.step(cfg, data, model) if self.step is not None else None
        eval_fn = self.eval_fn(cfg, data) if self.eval_fn is not None else None
        tc = self.train_config(cfg, seed, profile, checkpoint, resume, progress, desc)
        optimizer = self.optimizer(cfg, model) if self.optimizer is not None else None
        history = fit(model, data.train, data.val if eval_fn is None else None, tc, step_fn=step_fn, eval_fn=eval_fn,
                      optimizer=optimizer)
        t0 = time.perf_counter()
        metrics = dict(self.evaluate(model, data, cfg, history))
        extras = dict(data.extras, evaluate_seconds=time.perf_counter() - t0)
        if write_cache:
            plain = {k: v for k, v in extras.items() if v is None or isinstance(v, (bool, int, float, str))}
            model_cache.store_entry(self.name, key, {
                "model": model.state_dict(), "metrics": metrics, "extras": plain, "description": description,
                "history": {"rows": history.rows, "step_losses": history.step_losses}})
            extras.update(cache="stored", cache_key=key)
        return RecipeResult(self.name, profile, seed, cfg, model, history, metrics, extras)


_REGISTRY: Dict[str, Recipe] = {}


def register(recipe: Recipe, replace: bool = False) -> Recipe:
    """Add ``recipe`` to the registry (``survey train <name>``) and return it.

    Raises:
        ValueError: a recipe of that name is already registered (pass ``replace=True`` to replace it),
            or its configurations lack a ``train`` section or a profile.
    """
    if recipe.name in _REGISTRY and not replace and _REGISTRY[recipe.name] is not recipe:
        raise ValueError(f"a recipe named {recipe.name!r} is already registered; pick another name or pass replace=True")
    missing = [p for p in PROFILES if p not in recipe.configs]
    if missing:
        raise ValueError(f"recipe {recipe.name!r} has no configuration for profile(s) {missing}")
    no_train = [p for p, c in recipe.configs.items() if "train" not in c]
    if no_train:
        raise ValueError(f"recipe {recipe.name!r}: the configuration of {no_train} has no 'train' section")
    _REGISTRY[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    """The registered recipe ``name``.

    Raises:
        UnknownRecipeError: no such recipe; the message lists the registered ones.
    """
    if name not in _REGISTRY:
        raise UnknownRecipeError(f"unknown method {name!r}; choose one of {', '.join(list_recipes())}")
    return _REGISTRY[name]


def list_recipes() -> List[str]:
    """Names of the registered recipes, sorted."""
    return sorted(_REGISTRY)


def run_recipe(name: str, profile: str = "cpu", seed: int = 0, **kwargs) -> RecipeResult:
    """``get_recipe(name).run(profile, seed, **kwargs)``."""
    return get_recipe(name).run(profile, seed, **kwargs)


@dataclass
class SeedsResult:
    """One recipe run with several seeds: every seed's result, and each metric's mean and spread.

    ``values("test_acc")`` is the list over seeds; ``mean``/``std`` (``ddof=1``; None for one seed)
    summarise it; ``seconds`` sums the seeds' training time.
    """

    recipe: str
    profile: str
    seeds: List[int]
    results: List[RecipeResult]

    def values(self, metric: str) -> List[float]:
        return [float(r.metrics[metric]) for r in self.results]

    def mean(self, metric: str) -> float:
        v = self.values(metric)
        return sum(v) / len(v)

    def std(self, metric: str) -> Optional[float]:
        v = self.values(metric)
        if len(v) < 2:
            return None
        m = sum(v) / len(v)
        return (sum((x - m) ** 2 for x in v) / (len(v) - 1)) ** 0.5

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.results)

    def summary(self) -> Dict[str, Any]:
        """``{metric: (mean, std, n)}`` for every numeric metric of the runs."""
        metrics = [k for k, v in self.results[0].metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return {k: (self.mean(k), self.std(k), len(self.results)) for k in metrics}


def run_seeds(recipe: Union[str, Recipe], profile: str = "cpu", seeds=(0, 1, 2), **kwargs) -> SeedsResult:
    """Run a recipe once per seed (each run from the model cache when it holds it).

    Args:
        recipe: a registered name or a :class:`Recipe`.  seeds: the seeds (at least 3 for any
            comparison under ``cpu``).  kwargs: passed to :meth:`Recipe.run` (``overrides``, ...).

    Raises:
        ValueError: no seeds.
    """
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("run_seeds needs at least one seed")
    return SeedsResult(recipe.name, profile, seeds, [recipe.run(profile, seed=s, **kwargs) for s in seeds])
