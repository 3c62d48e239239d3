"""DINO's study (notebook 07, ``benchmarks/dino_study.py``): the full method over seeds, the collapse
ablations and the DinoNAT paper's two errors at the full schedule, DinoNAT at the same budget, the
controls, the verdicts; how much of each attention head falls on the stroke; and the colour-to-
thermal-like simulation of the DinoNAT paper's cross-modal claim, with a loader for a local folder of
real colour / thermal pairs.

Every trained run is a run of the ``dino`` / ``dino_nat`` / ``dino_photo`` recipes
(:mod:`survey_lib.recipes.dino`) with the overrides of its variant (:data:`VARIANTS`), so notebook 07
and the benchmark read the same entries of the model cache. This module trains nothing of its own
and no recipe imports it: editing it keeps every cached run.

Sources: Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers",
arXiv:2104.14294 (the method, Sec. 5.3 ablations of centring and sharpening); the DinoNAT paper
("Self-supervised learning with Neighborhood Attention Transformers", a Russian conference paper:
the NAT backbone, its Algorithm 1's sign, its prose's once-per-epoch teacher, its claim that colour
and thermal images give the same features).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..data import classification_dataset
from ..evaluate import compare_seeds, extract_features, knn_classify, linear_probe, mcnemar
from ..train import seed_everything
from .base import SeedsResult, get_recipe, run_seeds

__all__ = ["Variant", "VARIANTS", "ABLATIONS", "STUDY_SEEDS", "initial_model", "probe_controls", "DinoStudy",
           "dino_study", "test_correct", "collapse_state", "study_verdicts", "stroke_attention",
           "thermal_like", "crossmodal_study", "crossmodal_verdict", "ThermalPairs", "THERMAL_FOLDER"]


@dataclass(frozen=True)
class Variant:
    """One row of the study: the recipe it runs, the overrides that make it, and its label."""

    recipe: str
    overrides: Mapping[str, Any]
    label: str


#: The study's rows (``figures/summary.csv`` method names): the recipe and the switches of each.
VARIANTS: Dict[str, Variant] = {
    "dino_vit": Variant("dino", {}, "DINO (ViT)"),
    "dino_no_centering": Variant("dino", {"loss": {"centering": False}}, "no centring"),
    "dino_no_sharpening": Variant("dino", {"loss": {"sharpening": False}}, "no sharpening"),
    "dino_source_sign": Variant("dino", {"loss": {"variant": "source_sign"}}, "the source's sign (+t log s)"),
    "dino_epoch_teacher": Variant("dino", {"teacher_update": "epoch"}, "teacher updated once per epoch"),
    "dino_nat": Variant("dino_nat", {}, "DinoNAT"),
}
#: The ablation rows, each judged against the full method and against the random ViT.
ABLATIONS: Tuple[str, ...] = ("dino_no_centering", "dino_no_sharpening", "dino_source_sign", "dino_epoch_teacher")
#: Seeds per row by default: 3 for the full method, 2 for each ablation, 1 for DinoNAT (a NAT epoch
#: costs about 2.6 ViT epochs under ``cpu``; three seeds would push notebook 07 past 40 minutes of one
#: core with a cold cache; ``benchmarks/dino_study.py --variants dino_nat --seeds 0,1,2`` adds them).
STUDY_SEEDS: Dict[str, Tuple[int, ...]] = {"dino_vit": (0, 1, 2), "dino_nat": (0,),
                                           **{a: (0, 1) for a in ABLATIONS}}


def _variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose one of {sorted(VARIANTS)}")
    return VARIANTS[name]


def _merge(a: Optional[Mapping[str, Any]], b: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    out = dict(a or {})
    for k, v in (b or {}).items():
        out[k] = _merge(out.get(k), v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def initial_model(profile: str = "cpu", seed: int = 0, variant: str = "dino_vit",
                  overrides: Optional[Mapping[str, Any]] = None):
    """The untrained DINO a run of ``variant`` with ``seed`` starts from (the same weights: the run
    seeds the same way right before it builds the model). Its teacher is the student's copy, so
    ``initial_model(...).teacher_embed`` is the "random ViT" (or random NAT) control of that seed.

    Raises:
        ValueError: an unknown profile or variant.
    """
    v = _variant(variant)
    recipe = get_recipe(v.recipe)
    cfg = recipe.config(profile, _merge(v.overrides, overrides))
    from .dino import build_model

    seed_everything(seed)
    return build_model(cfg).eval()


def _probe_sets(profile: str, overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Dataset]:
    cfg = get_recipe("dino").config(profile, overrides)
    d = cfg["data"]
    return {split: classification_dataset(d["dataset"], split, img_size=d["img_size"]) for split in ("train", "val", "test")}


def _probe(encoder, sets: Dict[str, Dataset], split: str) -> Dict[str, float]:
    a, ya = extract_features(encoder, sets["train"])
    b, yb = extract_features(encoder, sets[split])
    return {"knn_acc": float(knn_classify(a, ya, b, yb)), "linear_acc": float(linear_probe(a, ya, b, yb))}


def probe_controls(profile: str = "cpu", seeds: Sequence[int] = (0, 1, 2), split: str = "test",
                   overrides: Optional[Mapping[str, Any]] = None, nat: bool = True) -> Dict[str, Dict[str, Any]]:
    """The floors DINO is judged against, with the same probes (weighted k-NN, k = 20, and the
    logistic-regression probe; the un-augmented training split as the memory bank) on ``split``:

    * ``"raw_pixels"``: the normalised images flattened (one number each: nothing is random);
    * ``"random_vit"``: the recipe's ViT at initialisation, one value per seed (:func:`initial_model`);
    * ``"random_nat"`` (with ``nat``): the same for ``dino_nat``'s NAT.

    Returns: ``{name: {"knn_acc": value or [per seed], "linear_acc": ..., "seeds": [...]}}``.

    Raises:
        ValueError: an unknown profile or split.
    """
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    sets = _probe_sets(profile, overrides)
    out: Dict[str, Dict[str, Any]] = {"raw_pixels": {**_probe(lambda x: x.flatten(1), sets, split), "seeds": []}}
    for name, variant in (("random_vit", "dino_vit"), ("random_nat", "dino_nat"))[: 2 if nat else 1]:
        per_seed = []
        for s in seeds:
            with torch.no_grad():
                per_seed.append(_probe(initial_model(profile, s, variant, overrides).teacher_embed, sets, split))
        out[name] = {"knn_acc": [r["knn_acc"] for r in per_seed], "linear_acc": [r["linear_acc"] for r in per_seed],
                     "seeds": [int(s) for s in seeds]}
    return out


@dataclass
class DinoStudy:
    """The study's runs and controls.

    ``runs[name]`` is the :class:`~survey_lib.recipes.base.SeedsResult` of a :data:`VARIANTS` row
    (metrics ``knn_acc`` / ``linear_acc`` on test, ``val_knn_acc`` / ``val_linear_acc``, the last
    epoch's ``teacher_entropy``, ``teacher_marginal_entropy``, ``kl``); ``controls[split]`` the
    :func:`probe_controls` of ``"val"`` and ``"test"``.
    """

    profile: str
    runs: Dict[str, SeedsResult]
    controls: Dict[str, Dict[str, Dict[str, Any]]]
    out_dim: int = 0

    def seeds(self, method: str) -> List[int]:
        """The seeds of a row or a control (raw pixels: none).

        Raises:
            KeyError: an unknown method.
        """
        if method in self.runs:
            return list(self.runs[method].seeds)
        if method in self.controls["test"]:
            return list(self.controls["test"][method]["seeds"])
        raise KeyError(f"unknown method {method!r}; choose one of {self.methods()}")

    def methods(self) -> List[str]:
        """Every row and control, in table order."""
        return [*self.runs, *self.controls["test"]]

    def values(self, method: str, metric: str = "knn_acc", split: str = "test") -> List[float]:
        """Per-seed values of ``metric`` (``knn_acc`` or ``linear_acc``; for runs also the collapse
        diagnostics) of ``method`` on ``split`` (raw pixels: one value).

        Raises:
            KeyError: an unknown method or metric.  ValueError: an unknown split.
        """
        if split not in self.controls:
            raise ValueError(f"split must be one of {sorted(self.controls)}, got {split!r}")
        if method in self.runs:
            key = metric if split == "test" or metric not in ("knn_acc", "linear_acc") else f"val_{metric}"
            return self.runs[method].values(key)
        if method in self.controls[split]:
            v = self.controls[split][method][metric]
            return [float(x) for x in v] if isinstance(v, list) else [float(v)]
        raise KeyError(f"unknown method {method!r}; choose one of {self.methods()}")

    def paired(self, a: str, b: str, metric: str = "knn_acc", split: str = "test") -> Tuple[List[float], List[float], List[int]]:
        """The values of ``a`` and ``b`` on the seeds both have (raw pixels: its one value repeated), and those seeds."""
        va, vb = self.values(a, metric, split), self.values(b, metric, split)
        sa, sb = self.seeds(a), self.seeds(b)
        if not sb:
            return va, vb * len(va), sa
        if not sa:
            return va * len(vb), vb, sb
        common = [s for s in sa if s in sb]
        return [va[sa.index(s)] for s in common], [vb[sb.index(s)] for s in common], common

    def table(self):
        """A pandas DataFrame: one row per method, test ``knn_acc`` / ``linear_acc`` mean and std, the
        number of seeds, the last epoch's teacher entropy (runs) and the training seconds (summed)."""
        import pandas as pd

        rows = []
        for m in self.methods():
            row: Dict[str, Any] = {"method": m, "label": VARIANTS[m].label if m in VARIANTS else m.replace("_", " ")}
            for metric in ("knn_acc", "linear_acc"):
                v = self.values(m, metric)
                row[metric] = float(np.mean(v))
                row[f"{metric}_std"] = float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
            row["n_seeds"] = len(self.seeds(m)) or None
            if m in self.runs:
                row["teacher_entropy"] = float(np.mean(self.values(m, "teacher_entropy")))
                row["seconds"] = self.runs[m].seconds
            rows.append(row)
        return pd.DataFrame(rows).set_index("method")

    def rows(self) -> List[Tuple[str, str, List[float], Optional[float]]]:
        """``(method, metric, values, seconds)`` for ``summary.csv``: test ``knn_acc`` and
        ``linear_acc`` of every row and control, and the teacher entropy of every row."""
        out = []
        for m in self.methods():
            seconds = self.runs[m].seconds if m in self.runs else None
            for metric in ("knn_acc", "linear_acc"):
                out.append((m, metric, self.values(m, metric), seconds))
            if m in self.runs:
                out.append((m, "teacher_entropy", self.values(m, "teacher_entropy"), seconds))
        return out


def dino_study(profile: str = "cpu", seeds: Optional[Mapping[str, Sequence[int]]] = None,
               variants: Optional[Sequence[str]] = None, overrides: Optional[Mapping[str, Any]] = None,
               controls: bool = True, progress: Optional[bool] = None) -> DinoStudy:
    """Train (or read from the model cache) every row of ``variants`` for its seeds, and compute the
    controls on validation and test. Notebook 07 and ``benchmarks/dino_study.py`` both call it.

    Args:
        seeds: ``{variant: seeds}`` (default :data:`STUDY_SEEDS`; a variant missing from it takes
            the default).  variants: the rows (default: all of :data:`VARIANTS`).
        overrides: merged into every row's configuration (e.g. a shorter schedule), under its own.
        controls: compute the random-init and raw-pixel controls (for the seeds of ``dino_vit``).

    Raises:
        ValueError: an unknown profile or variant, or a variant with no seeds.
    """
    names = list(variants or VARIANTS)
    for n in names:
        _variant(n)
    seeds = {**STUDY_SEEDS, **{k: tuple(v) for k, v in (seeds or {}).items()}}
    runs = {}
    for n in names:
        v = VARIANTS[n]
        runs[n] = run_seeds(v.recipe, profile, seeds[n], overrides=_merge(overrides, v.overrides), progress=progress,
                            desc=f"{n} [{profile}]")
    ctrl_seeds = seeds["dino_vit"]
    ctl = ({split: probe_controls(profile, ctrl_seeds, split, overrides, nat="dino_nat" in names) for split in ("val", "test")}
           if controls else {"val": {}, "test": {}})
    out_dim = get_recipe("dino").config(profile, overrides)["head"]["out_dim"]
    return DinoStudy(profile, runs, ctl, out_dim)


def test_correct(encoder, profile: str = "cpu", overrides: Optional[Mapping[str, Any]] = None,
                 linear: bool = False) -> np.ndarray:
    """Right / wrong of the k-NN (or the linear probe) of an encoder's frozen features on every test
    image, in order, for :func:`survey_lib.evaluate.mcnemar`. Shapes: returns (n_test,) bool."""
    sets = _probe_sets(profile, overrides)
    a, ya = extract_features(encoder, sets["train"])
    b, yb = extract_features(encoder, sets["test"])
    return np.asarray(linear_probe(a, ya, b, yb, return_correct=True) if linear
                      else knn_classify(a, ya, b, yb, return_correct=True))


def collapse_state(teacher_entropy: float, out_dim: int) -> str:
    """``"one prototype"`` (entropy below a tenth of log K), ``"uniform"`` (above nine tenths of
    log K) or ``"no"``: a reading of the last epoch's mean teacher entropy (DINO Sec. 5.3, Fig. 7).

    Raises:
        ValueError: ``out_dim`` < 2.
    """
    if out_dim < 2:
        raise ValueError(f"out_dim must be >= 2, got {out_dim}")
    log_k = math.log(out_dim)
    return "one prototype" if teacher_entropy < 0.1 * log_k else "uniform" if teacher_entropy > 0.9 * log_k else "no"


def study_verdicts(study: DinoStudy, metric: str = "knn_acc") -> List[Dict[str, Any]]:
    """The computed verdicts of the study on the test split, each a paired t-test over the seeds both
    sides have (:func:`survey_lib.evaluate.compare_seeds`; raw pixels: its one value against every seed):

    * DINO better than the random ViT, and than raw pixels (a reference on digits, not the paper's claim);
    * for each ablation: the full method better than it; it better than the random ViT;
    * DinoNAT better than the random NAT; DinoNAT against DINO-ViT at the same epochs.

    Returns: a list of ``{"claim", "a", "b", "seeds", **compare_seeds(...)}``, rows of the study only.
    """
    have = set(study.methods())
    pairs = [("dino_vit", "random_vit", "DINO's features are better than the same ViT at initialisation"),
             ("dino_vit", "raw_pixels", "DINO's features are better than raw pixels")]
    for a in ABLATIONS:
        pairs.append(("dino_vit", a, f"the full method is better than {VARIANTS[a].label}"))
        pairs.append((a, "random_vit", f"{VARIANTS[a].label} is better than the random ViT"))
    pairs += [("dino_nat", "random_nat", "DinoNAT is better than the same NAT at initialisation"),
              ("dino_nat", "dino_vit", "DinoNAT is better than DINO-ViT at the same epochs")]
    out = []
    for a, b, claim in pairs:
        if a not in have or b not in have:
            continue
        va, vb, seeds = study.paired(a, b, metric)
        out.append({"claim": claim, "a": a, "b": b, "seeds": seeds, **compare_seeds(va, vb)})
    return out


# ---------------------------------------------------------------------------------------------
# does a head find the stroke?
# ---------------------------------------------------------------------------------------------
def stroke_attention(backbone, images: torch.Tensor, pixels: torch.Tensor, threshold: float = 0.5,
                     batch_size: int = 256) -> Dict[str, torch.Tensor]:
    """How much of each head's last-layer CLS attention falls on the stroke, against the stroke's
    share of the image.

    A patch's attention is spread evenly over its pixels, so the attention mass on stroke pixels is
    ``sum_p a_p f_p`` (``a_p``: the CLS query's weight on patch p, renormalised over the patches;
    ``f_p``: the fraction of patch p's pixels that are stroke, ``pixels > threshold``). A head that
    ignores the content puts ``mean_p f_p`` there (uniform weights): the stroke's share of the image.
    The ratio of the two is 1 for such a head, above 1 for a head that looks at the stroke.

    Args:
        backbone: a ViT with ``get_last_selfattention`` and one prefix (CLS) token.
        images: (n, C, H, W) the model's (normalised) inputs.  pixels: (n, 1, H, W) the same images in
            [0, 1] (the stroke mask's source).  threshold: stroke = pixel above it.

    Returns: ``{"mass": (n, h), "share": (n,), "ratio": (n, h)}``.

    Raises:
        ValueError: shapes that do not match, or a patch grid that does not tile the image.
    """
    if images.shape[0] != pixels.shape[0] or images.shape[-2:] != pixels.shape[-2:]:
        raise ValueError(f"images {tuple(images.shape)} and pixels {tuple(pixels.shape)} must be the same images")
    P = backbone.patch_embed.patch_size[0]
    H, W = images.shape[-2:]
    if H % P or W % P:
        raise ValueError(f"the {P}-pixel patches do not tile {H} x {W} images")
    masses = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            a = backbone.get_last_selfattention(images[i:i + batch_size])[:, :, 0, 1:]  # (b, h, N)
            masses.append(a / a.sum(-1, keepdim=True))
    attn = torch.cat(masses)  # (n, h, N)
    stroke = (pixels[:, :1] > threshold).float()  # (n, 1, H, W)
    f = F.avg_pool2d(stroke, P).flatten(1)  # (n, N): stroke fraction of each patch
    mass = torch.einsum("nhp,np->nh", attn, f)  # (n, h)
    share = f.mean(1)  # (n,)
    return {"mass": mass, "share": share, "ratio": mass / share.clamp_min(1e-6)[:, None]}


# ---------------------------------------------------------------------------------------------
# colour vs thermal-like: a simulation of the DinoNAT paper's cross-modal claim
# ---------------------------------------------------------------------------------------------
def thermal_like(img: torch.Tensor, sigma: float = 1.0, noise: float = 0.03, invert: bool = False,
                 seed: int = 0) -> torch.Tensor:
    """A luminance-only, thermal-looking rendering of colour images in [0, 1] (a simulation, not a
    thermal image): ITU-R BT.601 luminance, a Gaussian blur (a thermal sensor's few pixels), automatic
    gain (min-max per image), Gaussian sensor noise (seeded), optionally inverted ("black-hot"),
    repeated to 3 channels so a colour model takes it.

    Shapes: (3, H, W) or (B, 3, H, W) -> the same.

    Raises:
        ValueError: not 3 channels.
    """
    from torchvision.transforms import v2

    x = img if img.ndim == 4 else img[None]
    if x.shape[1] != 3:
        raise ValueError(f"thermal_like expects colour images (…, 3, H, W), got {tuple(img.shape)}")
    y = 0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]  # (B, 1, H, W) luminance
    y = v2.functional.gaussian_blur(y, kernel_size=[5, 5], sigma=[sigma, sigma])
    lo, hi = y.amin(dim=(1, 2, 3), keepdim=True), y.amax(dim=(1, 2, 3), keepdim=True)
    y = (y - lo) / (hi - lo + 1e-6)
    y = (y + noise * torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)
    y = 1 - y if invert else y
    y = y.expand(-1, 3, -1, -1)
    return y if img.ndim == 4 else y[0]


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a @ b) / (a.norm() * b.norm() + 1e-12))


def crossmodal_study(profile: str = "cpu", seed: int = 0, scenes: Sequence[str] = ("astronaut", "chelsea", "coffee", "rocket"),
                     scene_size: int = 56, progress: Optional[bool] = None) -> Dict[str, Any]:
    """The DINO photo run (recipe ``dino_photo``, colour crops of scikit-image's photographs, from the
    model cache) probed on colour and thermal-like renderings of held-out crops, against the random
    ViT of the same seed and raw pixels; and the teacher's last-layer CLS attention on whole scenes,
    colour vs thermal-like.

    Returns ``{"result": RecipeResult, "knn": {features: {queries: accuracy}}, "correct": {features:
    {queries: (n,) bool}}, "same": [corr per scene], "other": [corr per pair of different scenes],
    "maps": (colour (S, g, g), thermal (S, g, g)), "scenes": (colour (S, 3, s, s), thermal ...),
    "heads": (the thermal first scene's attention (h, 1 + N, 1 + N)), "grid": g}``; for the random
    ViT ``"same_random"`` / ``"other_random"`` too.

    Raises:
        ValueError: an unknown profile.
    """
    from ..data import load_photo
    from .dino import PHOTO_MEAN, PHOTO_STD, RECIPE_PHOTO, build_model

    res = RECIPE_PHOTO.run(profile, seed=seed, progress=progress)
    cfg = res.config
    seed_everything(seed)
    random_model = build_model(cfg).eval()
    mean = torch.tensor(PHOTO_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PHOTO_STD).view(1, 3, 1, 1)
    norm = lambda x: (x - mean) / std  # noqa: E731
    gal_x, gal_y = res.extras["gallery"]
    qry_x, qry_y = res.extras["queries"]
    queries = {"colour": qry_x, "thermal-like": thermal_like(qry_x, seed=seed),
               "thermal-like, inverted": thermal_like(qry_x, invert=True, seed=seed)}
    encoders = {"DINO teacher": res.model.teacher.backbone.eval(), "random ViT": random_model.teacher.backbone}
    knn, correct = {}, {}
    with torch.no_grad():
        for name, enc in encoders.items():
            g = enc.embed(norm(gal_x))
            correct[name] = {q: knn_classify(g, gal_y, enc.embed(norm(x)), qry_y, return_correct=True) for q, x in queries.items()}
        correct["raw pixels"] = {q: knn_classify(gal_x.flatten(1), gal_y, x.flatten(1), qry_y, return_correct=True)
                                 for q, x in queries.items()}
    for name, c in correct.items():
        knn[name] = {q: float(np.mean(v)) for q, v in c.items()}
    colour = torch.stack([load_photo(n, size=scene_size) for n in scenes])  # (S, 3, s, s)
    thermal = thermal_like(colour, seed=seed)
    out: Dict[str, Any] = {"result": res, "knn": knn, "correct": correct, "scenes": (colour, thermal), "names": list(scenes)}
    for tag, enc in (("", encoders["DINO teacher"]), ("_random", encoders["random ViT"])):
        with torch.no_grad():
            a_col = enc.get_last_selfattention(norm(colour))[:, :, 0, 1:].mean(1)  # (S, N)
            a_th = enc.get_last_selfattention(norm(thermal))[:, :, 0, 1:].mean(1)
        g = int(round(a_col.shape[-1] ** 0.5))
        S = len(scenes)
        out["same" + tag] = [_corr(a_col[i], a_th[i]) for i in range(S)]
        out["other" + tag] = [_corr(a_col[i], a_th[j]) for i in range(S) for j in range(S) if i != j]
        if not tag:
            out["maps"] = (a_col.reshape(S, g, g), a_th.reshape(S, g, g))
            out["grid"] = g
            with torch.no_grad():
                out["heads"] = enc.get_last_selfattention(norm(thermal[:1]))[0]
    return out


def crossmodal_verdict(x: Dict[str, Any], alpha: float = 0.05) -> Dict[str, Any]:
    """The verdict on the DinoNAT paper's claim "the same features are found in colour and thermal
    images", on the simulation of :func:`crossmodal_study`. The claim holds here only if all three hold:

    1. no loss from colour to thermal-like queries (McNemar, DINO teacher: "colour is better" must
       not hold);
    2. on thermal-like queries the DINO teacher beats both controls (McNemar against the random ViT
       and against raw pixels: both "hold");
    3. the teacher's attention on a scene agrees across the two renderings more than across scenes
       (Welch's t-test of the map correlations, same scene vs different scenes: "holds"), and more than
       the random ViT's does on the same scenes (paired t-test over the scenes: "holds"; an untrained
       network's attention follows the pixels too, so agreement alone is not a learnt feature).

    ``"does not hold"`` when test 1 finds a significant loss or test 2 finds a control better;
    ``"cannot tell"`` otherwise.

    Returns: ``{"verdict", "drop", "vs_random", "vs_raw", "attention", "attention_vs_random"}`` with
    each test's result.
    """
    c = x["correct"]
    drop = mcnemar(c["DINO teacher"]["colour"], c["DINO teacher"]["thermal-like"], alpha)
    vs_random = mcnemar(c["DINO teacher"]["thermal-like"], c["random ViT"]["thermal-like"], alpha)
    vs_raw = mcnemar(c["DINO teacher"]["thermal-like"], c["raw pixels"]["thermal-like"], alpha)
    att = compare_seeds(x["same"], x["other"], alpha=alpha, paired=False)
    att_random = compare_seeds(x["same"], x["same_random"], alpha=alpha, paired=True)
    if drop["verdict"] == "holds" or "does not hold" in (vs_random["verdict"], vs_raw["verdict"]):
        v = "does not hold"
    elif vs_random["verdict"] == vs_raw["verdict"] == att["verdict"] == att_random["verdict"] == "holds":
        v = "holds"
    else:
        v = "cannot tell"
    return {"verdict": v, "drop": drop, "vs_random": vs_random, "vs_raw": vs_raw, "attention": att,
            "attention_vs_random": att_random}


# ---------------------------------------------------------------------------------------------
# real colour / thermal pairs from a local folder (nothing is downloaded)
# ---------------------------------------------------------------------------------------------
#: Where :class:`ThermalPairs` looks by default, under ``$SURVEY_DATA_ROOT`` (default ``~/data``).
THERMAL_FOLDER = "thermal_pairs"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class ThermalPairs(Dataset):
    """Registered colour / thermal image pairs from a local folder, to test the cross-modal claim on
    real data (e.g. the ThermalWorld pairs of the ThermalGAN paper, Kniaz et al. 2018, ECCV Workshops,
    doi:10.1007/978-3-030-11024-6_46, which the DinoNAT paper's figures use, arranged by hand into
    this layout)::

        <root>/rgb/<class>/<name>.png        colour image
        <root>/thermal/<class>/<name>.png    the thermal image of the same scene (same class and name)

    ``<class>`` (e.g. ``car``, ``person``, ``building``) is the label the k-NN probe scores. Pairs
    are the names present on both sides; an image without its partner is skipped and counted in
    ``unpaired``.

    Args:
        root: the folder (default ``$SURVEY_DATA_ROOT/thermal_pairs``, see
            :func:`survey_lib.data.disk.data_root`).  img_size: both images are resized to it
            (centre crop to a square first).

    Shapes: item = (colour (3, s, s), thermal (3, s, s): the grey image repeated, both in [0, 1], label int).

    Raises:
        DatasetNotFoundError: the folder or its ``rgb`` / ``thermal`` sub-folders are missing, or no
            pair is found; the message names the expected layout.
    """

    def __init__(self, root: Union[str, Path, None] = None, img_size: int = 56) -> None:
        from ..data.disk import DatasetNotFoundError, data_root

        self.root = Path(root) if root is not None else data_root() / THERMAL_FOLDER
        layout = f"{self.root}/rgb/<class>/<name>.png and {self.root}/thermal/<class>/<name>.png"
        if not (self.root / "rgb").is_dir() or not (self.root / "thermal").is_dir():
            raise DatasetNotFoundError(f"no colour / thermal pairs at {self.root}: expected {layout}")
        self.img_size = int(img_size)
        self.classes = sorted(p.name for p in (self.root / "rgb").iterdir() if p.is_dir())
        self.pairs: List[Tuple[Path, Path, int]] = []
        self.unpaired = 0
        for label, cls in enumerate(self.classes):
            thermal = {p.stem: p for p in (self.root / "thermal" / cls).glob("*") if p.suffix.lower() in _IMAGE_SUFFIXES}
            for p in sorted((self.root / "rgb" / cls).glob("*")):
                if p.suffix.lower() not in _IMAGE_SUFFIXES:
                    continue
                if p.stem in thermal:
                    self.pairs.append((p, thermal.pop(p.stem), label))
                else:
                    self.unpaired += 1
            self.unpaired += len(thermal)
        if not self.pairs:
            raise DatasetNotFoundError(f"no colour / thermal pair found under {self.root}: expected {layout}")

    def __len__(self) -> int:
        return len(self.pairs)

    def _read(self, path: Path) -> torch.Tensor:
        from PIL import Image
        from torchvision.transforms import v2

        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        x = torch.from_numpy(arr).permute(2, 0, 1)  # (3, H, W)
        side = min(x.shape[1:])
        x = v2.functional.center_crop(x, [side, side])
        return v2.functional.resize(x, [self.img_size, self.img_size], antialias=True)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, torch.Tensor, int]:
        rgb, thermal, label = self.pairs[i]
        t = self._read(thermal).mean(0, keepdim=True).expand(3, -1, -1)  # thermal is grey: one channel repeated
        return self._read(rgb), t.contiguous(), label
