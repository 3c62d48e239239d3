"""Multi-process training: a 2-process gloo run on the CPU is the same training as one process.

``torchrun --nproc_per_node=2 tests/_ddp_job.py`` (the real launcher, one thread per process) runs
every scenario once, since starting processes costs more than the training; each rank saves what it
saw, and the tests below compare the ranks with each other and with a single-process run.
"""
import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from survey_lib import distributed as D
from survey_lib.train import TrainConfig, fit, load_checkpoint

# One xdist group: the tests of this file share one worker (the 2-process job is started once).
pytestmark = pytest.mark.xdist_group("distributed")

JOB = Path(__file__).with_name("_ddp_job.py")
_spec = importlib.util.spec_from_file_location("_ddp_job", JOB)
job = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(job)
WORLD = 2
VIT_CFG = job.VIT_CFG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Run the job under torchrun; returns (rank 0 results, rank 1 results, folder)."""
    out_dir = tmp_path_factory.mktemp("ddp")
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SURVEY_PROGRESS": "0", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([str(torchrun), f"--nproc_per_node={WORLD}", "--master_addr=127.0.0.1",
                           f"--master_port={_free_port()}", str(JOB), str(out_dir)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-5000:]}"
    return torch.load(out_dir / "rank0.pt", weights_only=False), torch.load(out_dir / "rank1.pt", weights_only=False), out_dir


def test_single_process_helpers_are_no_ops():
    assert not D.is_distributed() and D.get_rank() == 0 and D.get_world_size() == 1 and D.is_main_process()
    assert D.all_reduce_mean(3.5) == 3.5
    assert torch.equal(D.all_reduce_mean(torch.tensor([1.0, 2.0])), torch.tensor([1.0, 2.0]))
    assert D.broadcast_object({"a": 1}) == {"a": 1} and D.all_gather_object(7) == [7]
    assert D.init_distributed() is False  # no torchrun environment: nothing to initialise


def test_missing_master_address_is_explained(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    assert D.get_rank() == 0 and D.get_world_size() == 2  # read from the environment before init
    with pytest.raises(ValueError, match="MASTER_ADDR, MASTER_PORT not set.*torchrun"):
        D.init_distributed()


def test_two_processes_train_like_one_process_with_the_same_global_batch(two_ranks):
    r0, r1, _ = two_ranks
    assert r0["backend"] == "gloo" and r0["world"] == WORLD and r0["main"] and not r1["main"]
    assert (r0["rank_before_init"], r1["rank_before_init"], r0["world_before_init"]) == (0, 1, WORLD)  # from the env
    assert r0["mean_of_ranks"] == r1["mean_of_ranks"] == 0.5
    # DDP keeps the replicas identical, and every rank reports the same (rank-averaged) history
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    assert r0["rows"] == r1["rows"] and r0["step_losses"] == r1["step_losses"]

    # One process, global batch 64, visiting the images in the order the 2 ranks visit them together
    # (DistributedSampler with one replica: global batch k = the union of the ranks' local batches k).
    train, test = job.digits()
    loader = DataLoader(train, batch_size=VIT_CFG["batch_size"],
                        sampler=DistributedSampler(train, num_replicas=1, rank=0, shuffle=True, seed=VIT_CFG["seed"]))
    single = fit(job.vit(), loader, test, TrainConfig(**VIT_CFG))
    steps = -(-len(train) // VIT_CFG["batch_size"])  # 1,257 training digits, global batch 64: 20 steps per epoch
    assert len(single.step_losses) == len(r0["step_losses"]) == 6 * steps
    # the same gradient step, to float rounding: per-step losses agree along the whole run
    diffs = [abs(a - b) for a, b in zip(single.step_losses, r0["step_losses"])]
    assert max(diffs[:steps]) < 1e-5 and max(diffs) < 1e-3, max(diffs)
    acc_1, acc_2 = single.last["val_acc"], r0["rows"][-1]["val_acc"]
    assert acc_1 > 0.8 and acc_2 > 0.8, (acc_1, acc_2)  # both really learned (chance is 0.1)
    assert abs(acc_1 - acc_2) <= 0.01, (acc_1, acc_2)


def test_only_rank_0_writes_the_checkpoint_and_it_loads_into_a_plain_model(two_ranks):
    r0, r1, out_dir = two_ranks
    ckpt = str(out_dir / "vit.pt")
    assert r0["saves"] == [ckpt] * VIT_CFG["epochs"] and r1["saves"] == []
    model = job.vit(seed=5)
    state = load_checkpoint(ckpt, model)  # no "module." prefix: the unwrapped model's state dict
    assert state["epoch"] == VIT_CFG["epochs"] and state["world_size"] == WORLD and len(state["rng_per_rank"]) == WORLD
    for k, v in model.state_dict().items():
        assert torch.equal(v, r0["state"][k]), k


def test_resume_under_two_processes_continues_exactly(two_ranks):
    r0, r1, _ = two_ranks
    assert len(r0["full_losses"]) == 3 * 4  # 256 images, global batch 64
    assert r0["resumed_losses"] == r0["full_losses"] and r1["resumed_losses"] == r1["full_losses"]


def test_batch_size_must_split_over_the_processes(two_ranks):
    r0, r1, _ = two_ranks
    assert "63 is the global batch and must be divisible by the 2 processes; use 62 or 64" in r0["batch_error"]
    assert r1["batch_error"] == r0["batch_error"]


def test_dino_ema_teacher_and_centre_stay_identical_across_ranks(two_ranks):
    r0, r1, _ = two_ranks
    assert r0["dino_steps"] == r1["dino_steps"] == 2 * 2  # 128 images / global batch 64, 2 epochs
    assert torch.equal(r0["dino_center"], r1["dino_center"])  # all-reduced inside the loss
    assert r0["dino_rows"] == r1["dino_rows"] and "teacher_entropy" in r0["dino_rows"][0]
    for k in r0["dino_teacher"]:  # parameters (EMA of identical students) and BatchNorm statistics (rank 0's)
        assert torch.equal(r0["dino_teacher"][k], r1["dino_teacher"][k]), k
    moved = [k for k in r0["dino_teacher"] if not torch.equal(r0["dino_teacher"][k], r0["dino_student"][k])]
    assert moved, "the EMA teacher never differed from the student"


def test_survey_train_prints_on_rank_0_only_and_closes_the_group(two_ranks):
    r0, r1, out_dir = two_ranks
    assert r0["cli_code"] == r1["cli_code"] == 0
    assert "test_acc" in r0["cli_stdout"] and r1["cli_stdout"] == ""
    assert r0["cli_group_closed"] and r1["cli_group_closed"]
    state = torch.load(out_dir / "cli.pt", weights_only=False)
    assert state["world_size"] == WORLD and state["epoch"] == 2
