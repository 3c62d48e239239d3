"""The model cache: a trained model is stored once and reused by every notebook that needs it.

A recipe run (:meth:`survey_lib.recipes.base.Recipe.run`) is stored under a key that hashes
everything that determines it: the recipe's name and version, its whole configuration (model,
data, dataset and split, training), the profile, the seed, the torch thread count (the same seed
gives the same numbers only at the same thread count) and the code: the source of the modules
the recipe's functions import, followed through every ``import`` of ``survey_lib`` they make, at any
depth (:func:`code_modules`): for the ViT recipe its model, ``layers``, ``train``, the data it loads,
its metrics. A changed configuration or a changed statement of that code is a different key, so a
stale model is never reused; a change elsewhere (another method's recipe, model or objective) keeps
the recipe's trained runs, and so do docstrings and comments (documenting a model keeps them too).

An entry holds the model's weights, the history, the metrics and the plain extras, written
atomically (:func:`survey_lib.train.save_checkpoint`) and read with ``weights_only=True``. An
entry that cannot be read is reported (a warning) and retrained; it is never fatal and never
silently wrong. The folder is ``$SURVEY_CACHE`` if set, else ``.cache/models`` in the repository
(git-ignored); ``SURVEY_FRESH=1`` (``survey run --fresh``) ignores the cache and overwrites it.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from ..train import save_checkpoint

__all__ = ["cache_dir", "cache_enabled", "code_modules", "code_version", "cache_key", "load_entry", "store_entry", "dataset_fingerprint",
           "cached_fit"]

_PACKAGE = Path(__file__).resolve().parent.parent
#: What the code version hashes: every module that builds, feeds or trains a model.
_CODE = ("layers.py", "train.py", "distributed.py", "models", "objectives", "data", "recipes")


def cache_dir() -> Path:
    """``$SURVEY_CACHE``, else ``<repository>/.cache/models`` (read when called)."""
    env = os.environ.get("SURVEY_CACHE")
    return Path(env) if env else _PACKAGE.parent / ".cache" / "models"


def cache_enabled() -> bool:
    """False when ``SURVEY_FRESH`` is set to anything but ``0`` (``survey run --fresh``)."""
    return os.environ.get("SURVEY_FRESH", "0") in ("", "0")


def _code_text(source: str) -> str:
    """What the code version hashes of one module: its syntax tree without docstrings (so comments,
    docstrings and layout can change without retraining anything; every statement counts). A file
    that does not parse is hashed as text."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


def _module_file(name: str) -> Optional[Path]:
    """The source file of module ``name`` of this package (a package's ``__init__.py``), or None."""
    parts = name.split(".")
    if parts[0] != _PACKAGE.name:
        return None
    base = _PACKAGE.joinpath(*parts[1:])
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def _imported_modules(name: str) -> set:
    """The modules of this package that module ``name``'s ``import`` statements (anywhere in it,
    functions included) bring in. ``from pkg import obj`` counts the module that defines ``obj``
    (a function or class re-exported by a package counts where it is written, not the package's
    ``__init__``); a submodule counts itself; anything else (a constant) counts ``pkg``."""
    import ast
    import importlib

    path = _module_file(name)
    is_package = path is not None and path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if _module_file(a.name) is not None)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                here = name.split(".") if is_package else name.split(".")[:-1]
                here = here[: len(here) - (node.level - 1)]
                base = ".".join(here + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if _module_file(base) is None:
                continue
            for alias in node.names:
                if _module_file(f"{base}.{alias.name}") is not None:
                    out.add(f"{base}.{alias.name}")
                    continue
                obj = getattr(importlib.import_module(base), alias.name, None)
                where = getattr(obj, "__module__", None) if callable(obj) else None
                out.add(where if where and _module_file(where) is not None else base)
    return out


@functools.lru_cache(maxsize=None)
def code_modules(roots: Tuple[str, ...]) -> Tuple[str, ...]:
    """Every module of this package that the modules ``roots`` import, directly or through others
    (:func:`_imported_modules`, followed to a fixed point), ``roots`` included; sorted.

    Raises:
        ValueError: a root is not a module of this package.
    """
    missing = [r for r in roots if _module_file(r) is None]
    if missing:
        raise ValueError(f"not modules of {_PACKAGE.name}: {missing}")
    seen, todo = set(roots), list(roots)
    while todo:
        for dep in _imported_modules(todo.pop()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return tuple(sorted(seen))


@functools.lru_cache(maxsize=None)
def code_version(roots: Optional[Tuple[str, ...]] = None) -> str:
    """SHA-256 (first 16 hex digits) of the code that trains: the modules ``roots`` import
    (:func:`code_modules`; a recipe passes the modules its functions are written in), or, with no
    roots, every module that builds, feeds or trains a model (``layers``, ``train``,
    ``distributed``, ``models/``, ``objectives/``, ``data/``, ``recipes/``). Each module counts by its
    syntax tree without docstrings or comments (:func:`_code_text`), so documenting a model does not
    invalidate the models trained with it."""
    if roots is None:
        files = [f for part in _CODE for f in (sorted((_PACKAGE / part).rglob("*.py")) if (_PACKAGE / part).is_dir()
                                               else [_PACKAGE / part])]
    else:
        files = [_module_file(m) for m in code_modules(tuple(roots))]
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(_PACKAGE)).encode())
        h.update(_code_text(f.read_text(encoding="utf-8")).encode())
    return h.hexdigest()[:16]


def _plain(x: Any) -> Any:
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in sorted(x.items())}
    if isinstance(x, float) and not math.isfinite(x):
        return repr(x)
    return x


def cache_key(description: Dict[str, Any], code: Optional[Sequence[str]] = None) -> str:
    """SHA-256 of ``description`` as canonical JSON (sorted keys, tuples as lists), plus the code
    version of the modules ``code`` import (:func:`code_version`; None: all the training code)."""
    version = code_version(tuple(sorted(code)) if code is not None else None)
    text = json.dumps({"code": version, **_plain(description)}, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def _path(recipe: str, key: str) -> Path:
    return cache_dir() / recipe / f"{key[:32]}.pt"


def load_entry(recipe: str, key: str) -> Optional[Dict[str, Any]]:
    """The cached entry of ``key``, or None when there is none or it cannot be used (then a warning
    says which file and why, and the caller retrains, overwriting it)."""
    path = _path(recipe, key)
    if not path.exists():
        return None
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(entry, dict) or entry.get("key") != key or "model" not in entry:
            raise ValueError("not an entry of this key")
        return entry
    except Exception as e:  # noqa: BLE001 - a bad cache entry is retrained, never fatal
        warnings.warn(f"model cache: {path} cannot be used ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); "
                      f"training again and replacing it", RuntimeWarning, stacklevel=3)
        return None


def store_entry(recipe: str, key: str, entry: Dict[str, Any]) -> Path:
    """Write ``entry`` (tensors and plain data) for ``key`` atomically; returns its path."""
    path = _path(recipe, key)
    save_checkpoint(path, {**entry, "key": key})
    return path


# ---------------------------------------------------------------------------------------------
# training outside a recipe (a notebook's own comparison), cached the same way
# ---------------------------------------------------------------------------------------------
def dataset_fingerprint(data: Any) -> Dict[str, Any]:
    """What identifies a dataset for the cache: its class, size, the SHA-256 of its tensors
    (``images``/``targets`` of the in-memory datasets; a ``Subset``'s indices and base; every item
    of a plain list), and the ``repr`` of its transform. A DataLoader is described by its dataset,
    batch size and collate function."""
    from torch.utils.data import DataLoader, Subset

    if isinstance(data, (list, tuple)):  # e.g. a list of images, or of (image, label) pairs
        h = hashlib.sha256()
        for item in data:
            for t in (item if isinstance(item, (list, tuple)) else (item,)):
                h.update(t.detach().cpu().contiguous().numpy().tobytes() if isinstance(t, torch.Tensor) else repr(t).encode())
        return {"class": type(data).__name__, "len": len(data), "sha256": h.hexdigest()[:16]}
    if isinstance(data, DataLoader):
        return {"loader": dataset_fingerprint(data.dataset), "batch_size": data.batch_size,
                "collate": repr(getattr(data.collate_fn, "__self__", data.collate_fn)), "sampler": type(data.sampler).__name__}
    out: Dict[str, Any] = {"class": type(data).__name__, "len": len(data)}
    if isinstance(data, Subset):
        out.update(indices=hashlib.sha256(repr(list(data.indices)).encode()).hexdigest()[:16],
                   base=dataset_fingerprint(data.dataset))
        return out
    for name in ("images", "targets", "tokens"):
        t = getattr(data, name, None)
        if isinstance(t, torch.Tensor):
            out[name] = hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
    for name in ("transform", "digits", "dataset", "templates"):
        v = getattr(data, name, None)
        if v is not None:
            out[name] = dataset_fingerprint(v) if isinstance(v, torch.utils.data.Dataset) else repr(v)
    return out


def cached_fit(name: str, build, train_set, val_set=None, config=None, step_fn=None, eval_fn=None,
               describe: Optional[Dict[str, Any]] = None, cache: Optional[bool] = None):
    """:func:`survey_lib.train.fit` through the model cache, for a notebook's own training runs.

    ``build()`` must create the model from scratch (it is called after the config's seed is set);
    the key holds ``name``, the model's architecture (class, config, every shape), the training
    configuration, both datasets' fingerprints (:func:`dataset_fingerprint`), the step and
    evaluation functions' names, ``describe`` (whatever else the run depends on: an objective's
    hyper-parameters, a teacher's key, ...), the thread count and the code version.

    Returns: ``(model, history, hit)``; ``hit`` says whether it came from the cache.
    """
    from ..train import History, TrainConfig, architecture_signature, fit, seed_everything

    config = config or TrainConfig()
    seed_everything(config.seed)
    model = build()
    description = {"fit": name, "arch": architecture_signature(model), "train": config.fingerprint(),
                   "train_data": dataset_fingerprint(train_set),
                   "val_data": dataset_fingerprint(val_set) if val_set is not None else None,
                   "step": getattr(step_fn, "__qualname__", repr(step_fn)), "eval": getattr(eval_fn, "__qualname__", repr(eval_fn)),
                   "describe": describe or {}, "threads": torch.get_num_threads()}
    key = cache_key(description)
    read = cache_enabled() if cache is None else cache
    entry = load_entry("fit", key) if read else None
    if entry is not None:
        model.load_state_dict(entry["model"])
        model.eval()
        return model, History(rows=entry["history"]["rows"], step_losses=entry["history"]["step_losses"]), True
    history = fit(model, train_set, val_set, config, step_fn=step_fn, eval_fn=eval_fn)
    if cache is not False:
        store_entry("fit", key, {"model": model.state_dict(), "description": description,
                                 "history": {"rows": history.rows, "step_losses": history.step_losses}})
    return model, history, False
