"""Confidence intervals on an accuracy: over training seeds, and over the images of one test split.

Two different uncertainties, which notebook 08 puts side by side:

* :func:`seed_interval` - the Student-t interval of a mean over seeds,
  ``mean +- t_{1 - alpha/2, n - 1} * s / sqrt(n)`` with ``s`` the sample standard deviation
  (``ddof=1``) and ``alpha = 1 - confidence`` (Student 1908, "The probable error of a mean",
  Biometrika 6(1); any statistics text, e.g. Wasserman 2004, *All of Statistics*, Sec. 6.3.2). It
  covers what changes from seed to seed (initialisation, data order, augmentation) on a **fixed**
  test split, assuming the per-seed values are roughly normal; with 5 seeds ``t`` is 2.78, not 1.96.
* :func:`binomial_interval` - an interval on the true accuracy of **one** trained model from ``k``
  right answers out of ``n`` test images, which are a sample of the images the model could meet:
  Clopper-Pearson's exact interval (Clopper & Pearson 1934, "The use of confidence or fiducial
  limits illustrated in the case of the binomial", Biometrika 26(4), 404-413), whose limits are the
  Beta quantiles ``B(alpha/2; k, n - k + 1)`` and ``B(1 - alpha/2; k + 1, n - k)``, or Wilson's score
  interval (Wilson 1927, "Probable inference, the law of succession, and statistical inference",
  JASA 22(158), 209-212). Both come from ``scipy.stats.binomtest(k, n).proportion_ci``. On 50
  test images one image moves the accuracy by 2 points, and the interval is wide accordingly.

Neither interval covers the other's uncertainty: the seed interval says nothing about another test
split, the binomial interval nothing about another seed. Comparisons of two models use the paired
tests of :mod:`survey_lib.evaluate` (``compare_seeds`` over seeds, ``mcnemar`` on one split); the
t-interval of the paired per-seed differences (:func:`seed_interval` of ``a - b``) is the interval
that matches ``compare_seeds``'s test (it excludes 0 exactly when the paired t-test rejects at
``1 - confidence``).

Deviation: these helpers would naturally live in ``survey_lib.evaluate``; they are a module of their
own so that adding them does not change the code hash of any trained model in the cache.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np

__all__ = ["seed_interval", "binomial_interval", "BINOMIAL_METHODS"]

#: The binomial intervals :func:`binomial_interval` computes (scipy's names).
BINOMIAL_METHODS = ("exact", "wilson")


def _check_confidence(confidence: float) -> float:
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1 (e.g. 0.95), got {confidence}")
    return confidence


def seed_interval(values: Sequence[float], confidence: float = 0.95) -> Dict[str, float]:
    """The Student-t confidence interval of the mean of ``values`` (one value per seed).

    Args:
        values: one number per seed (e.g. test accuracies as fractions), at least 2, all finite.
        confidence: the coverage, in (0, 1).

    Returns:
        ``{"mean", "std" (ddof=1), "n", "low", "high", "half_width", "t", "confidence"}``; ``t`` is
        ``scipy.stats.t.ppf((1 + confidence) / 2, n - 1)``. Identical values give a zero-width interval.

    Raises:
        ValueError: fewer than 2 values (the spread over seeds is unknown), a non-finite value, or a
            confidence outside (0, 1).

    Source: Student 1908 (Biometrika 6(1)); see the module docstring.
    """
    from scipy import stats

    confidence = _check_confidence(confidence)
    v = np.asarray(list(values), dtype=float)
    if v.ndim != 1 or v.size < 2:
        raise ValueError(f"a t-interval over seeds needs at least 2 values, got {v.size}: one seed says nothing "
                         f"about the spread over seeds")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"seed_interval got a non-finite value: {v.tolist()}")
    n = int(v.size)
    mean, std = float(v.mean()), float(v.std(ddof=1))
    t = float(stats.t.ppf((1.0 + confidence) / 2.0, n - 1))
    half = t * std / math.sqrt(n)
    return {"mean": mean, "std": std, "n": n, "low": mean - half, "high": mean + half, "half_width": half, "t": t,
            "confidence": confidence}


def binomial_interval(correct: int, total: int, confidence: float = 0.95, method: str = "exact") -> Dict[str, float]:
    """A confidence interval on a model's accuracy from ``correct`` right answers out of ``total``
    test images.

    Args:
        correct: images classified right, ``0 <= correct <= total``.  total: test images, >= 1.
        confidence: the coverage, in (0, 1).
        method: ``"exact"`` (Clopper-Pearson, never below the nominal coverage) or ``"wilson"``
            (Wilson's score interval, shorter, about nominal on average).

    Returns:
        ``{"acc", "low", "high", "correct", "total", "one_image" (1 / total: what one image moves the
        accuracy by), "confidence", "method"}``, accuracies as fractions in [0, 1].

    Raises:
        ValueError: ``total`` below 1, ``correct`` outside [0, total], a non-integer count, an
            unknown method, or a confidence outside (0, 1).

    Source: Clopper & Pearson 1934 (Biometrika 26(4)); Wilson 1927 (JASA 22(158));
    ``scipy.stats.binomtest(...).proportion_ci``.
    """
    from scipy import stats

    confidence = _check_confidence(confidence)
    if method not in BINOMIAL_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {BINOMIAL_METHODS}")
    for name, x in (("correct", correct), ("total", total)):
        if isinstance(x, bool) or not float(x).is_integer():
            raise ValueError(f"{name} must be a whole number of images, got {x!r}")
    correct, total = int(correct), int(total)
    if total < 1:
        raise ValueError(f"total must be at least 1 test image, got {total}")
    if not 0 <= correct <= total:
        raise ValueError(f"correct must lie in [0, total={total}], got {correct}")
    ci = stats.binomtest(correct, total).proportion_ci(confidence_level=confidence, method=method)
    return {"acc": correct / total, "low": float(ci.low), "high": float(ci.high), "correct": correct, "total": total,
            "one_image": 1.0 / total, "confidence": confidence, "method": method}
