"""Test-suite settings: one torch thread per worker (two workers share two cores), no progress
bars, a headless matplotlib backend, and figures and cached models written to temporary folders so
smoke runs never touch the committed ``figures/`` or the project's ``.cache/``."""
import os
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ["MPLBACKEND"] = "Agg"
os.environ["SURVEY_PROGRESS"] = "0"
os.environ["SURVEY_NUM_THREADS"] = "1"
os.environ["SURVEY_FIGURES_DIR"] = tempfile.mkdtemp(prefix="survey_figures_")
os.environ["SURVEY_CACHE"] = tempfile.mkdtemp(prefix="survey_cache_")  # never the project's model cache

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def figures_tmp(tmp_path, monkeypatch):
    """A fresh figures folder for one test."""
    monkeypatch.setenv("SURVEY_FIGURES_DIR", str(tmp_path / "figures"))
    return tmp_path / "figures"
