"""Nothing silently wrong, nothing lost, nothing executed: checkpoints, results and runs under bad
input (one test per item of the checklist of issue "Nothing silently wrong")."""
import csv
import fcntl
import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch
from torch.utils.data import TensorDataset

import survey_lib.report as report
import survey_lib.train as train_mod
from survey_lib.cli import find_notebooks
from survey_lib.cli import main as survey
from survey_lib.data import DatasetNotFoundError, load_torchvision_dataset
from survey_lib.models.resnet import load_backbone_checkpoint
from survey_lib.recipes import get_recipe
from survey_lib.recipes.vit import vit_for_profile
from survey_lib.report import SummaryFormatError, format_number, read_summary, record_result
from survey_lib.train import (CheckpointError, CheckpointMismatchError, StepOutput, TrainConfig, TrainConfigError,
                              fit, load_checkpoint, seed_everything)

ROOT = Path(__file__).resolve().parent.parent
SURVEY = [sys.executable, "-m", "survey_lib.cli"]


def _data(n=64, size=16):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 1, size, size, generator=g), torch.randint(0, 10, (n,), generator=g))


def _model():
    seed_everything(0)
    return vit_for_profile("smoke", img_size=16)


CFG = dict(epochs=2, batch_size=16, lr=1e-3, warmup_epochs=0, progress=False)


# ---------------------------------------------------------------------------------------------
# 1. a checkpoint records the configuration and the seed; resuming with another one is refused
# ---------------------------------------------------------------------------------------------
def test_resume_with_another_configuration_or_seed_is_refused_and_names_the_fields(tmp_path):
    ckpt = tmp_path / "run.pt"
    fit(_model(), _data(), config=TrainConfig(**CFG, checkpoint_path=str(ckpt)))
    before = ckpt.read_bytes()
    with pytest.raises(CheckpointMismatchError, match=r"epochs: checkpoint 2, now 8.*resume=False"):
        fit(_model(), _data(), config=TrainConfig(**{**CFG, "epochs": 8}, checkpoint_path=str(ckpt)))
    with pytest.raises(CheckpointMismatchError, match=r"seed: checkpoint 0, now 7"):
        fit(_model(), _data(), config=TrainConfig(**CFG, seed=7, checkpoint_path=str(ckpt)))
    with pytest.raises(CheckpointMismatchError, match=r"meta.config.model.embed_dim"):
        fit(_model(), _data(), config=TrainConfig(**CFG, meta={"config": {"model": {"embed_dim": 8}}},
                                                  checkpoint_path=str(ckpt)))
    assert ckpt.read_bytes() == before  # a refused resume leaves the checkpoint as it was
    # resume=False starts over (and then owns the checkpoint)
    h = fit(_model(), _data(), config=TrainConfig(**{**CFG, "epochs": 3}, checkpoint_path=str(ckpt), resume=False))
    assert len(h.rows) == 3 and h.resumed_epochs == 0 and load_checkpoint(ckpt)["epoch"] == 3


def test_a_finished_run_is_reported_as_finished_not_extended(tmp_path, capsys):
    ckpt = tmp_path / "run.pt"
    first = fit(_model(), _data(), config=TrainConfig(**CFG, checkpoint_path=str(ckpt)))
    again = fit(_model(), _data(), config=TrainConfig(**CFG, checkpoint_path=str(ckpt)))
    assert again.rows == first.rows and again.resumed_epochs == 2
    assert "holds the finished run (2 of 2 epochs): nothing to train" in capsys.readouterr().err


def test_cli_refuses_another_configuration_and_no_resume_starts_over(tmp_path, capsys):
    ckpt = str(tmp_path / "vit.pt")
    assert survey(["train", "vit", "--profile", "smoke", "--checkpoint", ckpt, "--set", "train.epochs=1"]) == 0
    capsys.readouterr()
    assert survey(["train", "vit", "--profile", "smoke", "--checkpoint", ckpt, "--seed", "7",
                   "--set", "train.epochs=1"]) == 2
    err = capsys.readouterr().err
    assert "seed: checkpoint 0, now 7" in err and "--no-resume" in err and "Traceback" not in err
    assert survey(["train", "vit", "--profile", "smoke", "--checkpoint", ckpt, "--seed", "7", "--no-resume",
                   "--set", "train.epochs=1"]) == 0
    assert load_checkpoint(ckpt)["config"]["seed"] == 7


# ---------------------------------------------------------------------------------------------
# 2. checkpoints never execute code
# ---------------------------------------------------------------------------------------------
class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_is_refused_unread(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"model": _Payload(marker)}, f)
    torch.save({"model": _Payload(marker)}, tmp_path / "evil_zip.pt")
    assert not marker.exists()
    for path in (evil, tmp_path / "evil_zip.pt"):
        with pytest.raises(CheckpointError, match="refused unread"):
            load_checkpoint(path)
        with pytest.raises(ValueError, match="refused unread"):
            load_backbone_checkpoint(torch.nn.Linear(2, 2), path)
    assert not marker.exists()  # nothing ran


def test_a_checkpoint_holds_only_tensors_and_plain_data(tmp_path):
    ckpt = tmp_path / "run.pt"
    fit(_model(), _data(), config=TrainConfig(**CFG, checkpoint_path=str(ckpt)))
    state = torch.load(ckpt, weights_only=True)  # would raise on anything else
    assert state["epoch"] == 2 and state["config"]["seed"] == 0


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04truncated", b"not a checkpoint at all"])
def test_unreadable_checkpoints_are_explained(tmp_path, content, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot be read as a checkpoint.*--no-resume"):
        load_checkpoint(bad)
    assert survey(["train", "vit", "--profile", "smoke", "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CheckpointError" in err


def test_a_foreign_checkpoint_is_explained(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a checkpoint written by survey_lib.train.fit"):
        load_checkpoint(foreign)


# ---------------------------------------------------------------------------------------------
# 3. summary.csv: read strictly, never rewritten when it does not parse, written without loss
# ---------------------------------------------------------------------------------------------
def _write(path, text, bom=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())


HEADER = "notebook,method,dataset,profile,metric,value,seconds\n"  # the older layout: read, then rewritten


def test_a_stray_quote_is_refused_with_its_line_and_the_file_is_not_rewritten(figures_tmp):
    path = figures_tmp / "summary.csv"
    text = HEADER + "01_vit,vit,digits,cpu,test_acc,0.98,10.0\n" + '02_deit,"deit,digits,cpu,test_acc,0.9,5.0\n' \
        + "03_swin,swin,digits,cpu,test_acc,0.96,7.0\n"
    _write(path, text)
    with pytest.raises(SummaryFormatError, match="line 3"):
        record_result("04_nat", "nat", "digits", "cpu", "test_acc", 0.97, 1.0)
    assert path.read_text() == text


def test_a_byte_order_mark_is_tolerated(figures_tmp, capsys):
    path = figures_tmp / "summary.csv"
    _write(path, HEADER + "01_vit,vit,digits,cpu,test_acc,0.98,10.0\n", bom=True)
    assert read_summary()[0]["notebook"] == "01_vit"
    record_result("04_nat", "nat", "digits", "cpu", "test_acc", 0.97, 1.0)
    assert [r["notebook"] for r in read_summary()] == ["01_vit", "04_nat"]
    assert survey(["list"]) == 0 and "04_nat" in capsys.readouterr().out


def test_a_wrong_header_is_refused(figures_tmp):
    _write(figures_tmp / "summary.csv", "a,b,c\n1,2,3\n")
    with pytest.raises(SummaryFormatError, match="line 1: header"):
        read_summary()


def test_numbers_are_written_without_loss_and_a_backup_is_kept(figures_tmp):
    record_result("09_survey_tables", "vit_base", "imagenet", "cpu", "params", 86_567_656)
    record_result("09_survey_tables", "vit_base", "imagenet", "cpu", "gmacs", 1 / 3)
    rows = {r["metric"]: r["value"] for r in read_summary()}
    assert rows["params"] == "86567656" and float(rows["gmacs"]) == 1 / 3
    assert format_number(2.0) == "2" and format_number(0.1) == "0.1"
    backup = figures_tmp / "summary.csv.bak"
    assert backup.exists() and "params" in backup.read_text() and "gmacs" not in backup.read_text()


def test_the_lock_times_out_with_a_message(figures_tmp, monkeypatch):
    monkeypatch.setattr(report, "LOCK_TIMEOUT_S", 0.3)
    figures_tmp.mkdir(parents=True)
    with open(figures_tmp / "summary.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(TimeoutError, match="held by another process"):
            record_result("01_vit", "vit", "digits", "cpu", "test_acc", 0.9)


def _writer(folder, k):
    os.environ["SURVEY_FIGURES_DIR"] = folder
    for i in range(10):
        record_result("01_vit", f"writer{k}", "digits", "cpu", f"m{i}", i / 10)


def test_concurrent_writers_lose_no_row(figures_tmp):
    procs = [mp.get_context("fork").Process(target=_writer, args=(str(figures_tmp), k)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert len(read_summary()) == 40


# ---------------------------------------------------------------------------------------------
# 4. bad training settings are refused; bad data stops training before it spoils the weights
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, match", [
    (dict(clip_grad=-1.0), "clip_grad"), (dict(clip_grad=0.0), "clip_grad"), (dict(min_lr=-1e-5), "min_lr"),
    (dict(lr=1e-3, min_lr=1e-2), "min_lr"), (dict(epochs=0), "epochs"), (dict(epochs=2.5), "epochs"),
    (dict(batch_size=0), "batch_size"), (dict(eval_every=0), "eval_every"), (dict(lr=float("nan")), "lr"),
    (dict(lr=-1e-3), "lr"), (dict(warmup_epochs=-1), "warmup_epochs"), (dict(label_smoothing=1.0), "label_smoothing"),
    (dict(betas=(0.9, 1.5)), "betas"), (dict(weight_decay=-0.1), "weight_decay"),
])
def test_bad_training_settings_are_refused_on_construction(bad, match):
    with pytest.raises(TrainConfigError, match=match):
        TrainConfig(**bad)


def test_an_empty_validation_set_is_refused_before_the_first_step():
    steps = []

    def step(model, batch):
        steps.append(1)
        return StepOutput(model(batch[0]).sum())

    with pytest.raises(ValueError, match="validation set is empty"):
        fit(_model(), _data(), TensorDataset(torch.zeros(0, 1, 16, 16), torch.zeros(0, dtype=torch.long)),
            TrainConfig(**CFG), step_fn=step)
    assert steps == []


def test_a_nan_image_stops_training_naming_the_inputs_and_the_weights_stay_finite():
    data = _data()
    data.tensors[0][20, 0, 3, 3] = float("nan")
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(FloatingPointError, match="inputs are not finite.*tensor 0.*1 NaN/inf"):
        fit(model, data, config=TrainConfig(**{**CFG, "batch_size": 64}))  # the first batch holds it
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_non_finite_loss_with_finite_inputs_points_at_the_learning_rate():
    model = _model()
    with pytest.raises(FloatingPointError, match="inputs are finite: lower lr"):
        fit(model, _data(), config=TrainConfig(**CFG), step_fn=lambda m, b: StepOutput(m(b[0]).sum() * float("inf")))
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# 5. survey run: every notebook runs whatever happens to another; failures named by their cell
# ---------------------------------------------------------------------------------------------
def _notebook(path, *cells):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('PROFILE = "cpu"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# a test notebook"), params] + [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_every_notebook_runs_whatever_happens_to_another(tmp_path, figures_tmp, capsys):
    nbs = [
        _notebook(tmp_path / "91_error.ipynb", "x = 1", "raise RuntimeError('boom ' + PROFILE)"),
        _notebook(tmp_path / "92_timeout.ipynb", "import time\ntime.sleep(30)"),
        _notebook(tmp_path / "93_dead.ipynb", "import os\nos._exit(1)"),
        _notebook(tmp_path / "94_good.ipynb", "from pathlib import Path\nPath('done.txt').write_text(PROFILE)"),
    ]
    code = survey(["run", "--profile", "smoke", "--quiet", "--timeout", "8", "--output-dir", str(tmp_path / "out"),
                   *map(str, nbs)])
    err = capsys.readouterr().err
    assert code == 1
    assert (tmp_path / "done.txt").read_text() == "smoke"  # the last notebook ran after three failures
    assert "3 of 4 notebooks failed" in err
    assert "91_error.ipynb: cell 4 (\"raise RuntimeError('boom ' + PROFILE)\") raised RuntimeError: boom smoke" in err
    assert "92_timeout.ipynb: cell 3 ('import time')" in err and "Timeout" in err
    assert "93_dead.ipynb: cell 3 ('import os')" in err and "DeadKernel" in err


def test_an_ambiguous_notebook_name_is_refused_with_the_candidates():
    with pytest.raises(ValueError, match="'1' matches 3 notebooks: 01_vit, 10_small_data, 11_inductive_bias"):
        find_notebooks(["1"])
    assert [p.stem for p in find_notebooks(["01"])] == ["01_vit"]
    with pytest.raises(FileNotFoundError, match="no notebook 'zz'"):
        find_notebooks(["zz"])


def _unshare_works():
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -n` (a network namespace) on this machine")
def test_a_notebook_runs_without_any_network_interface(tmp_path):
    nb = _notebook(tmp_path / "95_offline.ipynb", "print(1 + 1)")
    env = dict(os.environ, SURVEY_FIGURES_DIR=str(tmp_path / "figs"))
    out = subprocess.run(["unshare", "-n", *SURVEY, "run", "--profile", "smoke", "--quiet", "--timeout", "60",
                          "--output-dir", str(tmp_path / "out"), str(nb)], capture_output=True, text=True, env=env,
                         timeout=180, cwd=ROOT)
    assert out.returncode == 0, out.stderr


# ---------------------------------------------------------------------------------------------
# 6. clear one-line errors; checks before training; no litter; the environment read when used
# ---------------------------------------------------------------------------------------------
def test_an_unknown_method_is_one_line(capsys):
    assert survey(["train", "vitt"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown method 'vitt'" in err and "vit" in err
    with pytest.raises(Exception, match="unknown method"):
        survey(["train", "vitt", "--debug"])


def test_an_unwritable_checkpoint_folder_fails_before_the_first_epoch(tmp_path, monkeypatch):
    steps = []

    def step(model, batch):
        steps.append(1)
        return StepOutput(model(batch[0]).sum())

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(CheckpointError, match="cannot create the checkpoint folder"):
        fit(_model(), _data(), config=TrainConfig(**CFG, checkpoint_path=str(blocker / "run.pt")), step_fn=step)
    real_access = os.access
    monkeypatch.setattr(train_mod.os, "access", lambda p, mode: False if Path(p) == tmp_path / "ro" else real_access(p, mode))
    (tmp_path / "ro").mkdir()
    with pytest.raises(CheckpointError, match="not writable"):
        fit(_model(), _data(), config=TrainConfig(**CFG, checkpoint_path=str(tmp_path / "ro" / "run.pt")), step_fn=step)
    assert steps == []


def test_a_killed_checkpoint_write_leaves_no_temporary_file_behind(tmp_path):
    stale = tmp_path / "run.pt.x1y2z3.tmp"
    stale.write_bytes(b"half a checkpoint")
    fit(_model(), _data(), config=TrainConfig(**{**CFG, "epochs": 1}, checkpoint_path=str(tmp_path / "run.pt")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]


def test_the_data_root_is_read_when_a_dataset_is_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("SURVEY_DATA_ROOT", str(tmp_path / "late"))
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "late")):
        load_torchvision_dataset("cifar10")


# ---------------------------------------------------------------------------------------------
# what already held and must keep holding: SIGKILL, then the same command, continues exactly
# ---------------------------------------------------------------------------------------------
def test_sigkill_then_the_same_command_continues_exactly(tmp_path):
    cmd = SURVEY + ["train", "vit", "--profile", "smoke", "--set", "train.epochs=6"]
    env = dict(os.environ, SURVEY_PROGRESS="0", OMP_NUM_THREADS="1", SURVEY_FRESH="1")  # train, never from the cache
    reference = tmp_path / "uninterrupted.pt"
    subprocess.run(cmd + ["--checkpoint", str(reference)], check=True, capture_output=True, env=env, cwd=ROOT, timeout=300)
    killed = tmp_path / "killed.pt"
    proc = subprocess.Popen(cmd + ["--checkpoint", str(killed)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if killed.exists() and load_checkpoint(killed)["epoch"] >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert 2 <= load_checkpoint(killed)["epoch"] < 6, "the run finished before it could be killed"
    subprocess.run(cmd + ["--checkpoint", str(killed)], check=True, capture_output=True, env=env, cwd=ROOT, timeout=300)
    a, b = load_checkpoint(reference), load_checkpoint(killed)
    assert a["history"]["step_losses"] == b["history"]["step_losses"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_the_same_seed_gives_the_same_numbers():
    a = get_recipe("vit").run("smoke", seed=3, overrides={"train": {"epochs": 1}}, progress=False)
    b = get_recipe("vit").run("smoke", seed=3, overrides={"train": {"epochs": 1}}, progress=False)
    assert a.history.step_losses == b.history.step_losses and a.metrics == b.metrics


def test_a_run_drops_the_rows_its_notebook_no_longer_writes(figures_tmp):
    from survey_lib.report import finish_run, start_run

    record_result("01_vit", "vit", "digits", "cpu", "test_acc", 0.98)  # an earlier version's row
    record_result("02_deit", "deit", "digits", "cpu", "test_acc", 0.95)  # another notebook's
    start_run("01_vit", "cpu")
    record_result("01_vit", "vit", "mnist5k", "cpu", "test_acc", 0.978)
    assert finish_run("01_vit", "cpu") == 1
    assert {(r["notebook"], r["dataset"]) for r in read_summary()} == {("01_vit", "mnist5k"), ("02_deit", "digits")}
    start_run("02_deit", "cpu")
    assert finish_run("02_deit", "cpu", prune=False) == 0  # a failed run drops nothing
    assert len(read_summary()) == 2
