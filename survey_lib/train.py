"""One plain training loop for every method in the survey.

``fit`` trains any ``nn.Module`` with AdamW, a per-step schedule (linear warm-up then cosine decay),
optional label smoothing and gradient clipping, a tqdm progress bar, a returned :class:`History`,
seeding that makes two runs with the same seed identical on CPU, and checkpoint/resume: the
checkpoint (written atomically every epoch) holds the model, optimiser, history and every random
state, so a resumed run produces the same subsequent losses as an uninterrupted one.

Methods other than plain classification pass a ``step_fn`` (``(model, batch) -> StepOutput``) and
may define ``model.on_train_step_end(step, total_steps)`` (e.g. DINO's EMA teacher update). Keep
everything that must survive a resume (teacher, loss centre) inside ``model`` as submodules or
buffers; parameters with ``requires_grad=False`` are not optimised.

Several processes (``torchrun --nproc_per_node=N``, one process per GPU or per CPU socket): when
torchrun's environment variables are present, ``fit`` initialises the process group (gloo on CPU, nccl
on CUDA, see :mod:`survey_lib.distributed`), wraps the model in DistributedDataParallel, and shards
every epoch with a seeded ``DistributedSampler``. ``TrainConfig.batch_size`` is the GLOBAL batch:
each of the N processes gets ``batch_size / N`` images per step, so a recipe means the same thing on
one process and on eight (same steps per epoch, same learning-rate schedule). The reported losses
and accuracies are averaged over the ranks (every rank returns the same :class:`History`), the
default evaluation is split over the ranks and summed, only rank 0 shows the progress bar and writes
the checkpoint, and ``on_train_step_end`` is called on the unwrapped model. The step function runs
*inside* DDP's forward (see :class:`_StepRunner`), so custom ``step_fn`` s that call methods other
than ``forward`` (``model.compute``, ``model.teacher``) still get their gradients all-reduced.

Recipe references: Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization" (AdamW),
arXiv:1711.05101; Loshchilov & Hutter 2017, "SGDR" (cosine schedule), arXiv:1608.03983; Steiner et
al. 2022, "How to train your ViT?", arXiv:2106.10270 (AdamW, warm-up + cosine, clip 1.0); Li et al.
2020, "PyTorch Distributed", arXiv:2006.15704 (DistributedDataParallel).
"""
from __future__ import annotations

import math
import os
import pickle
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, RandomSampler, Subset

from .distributed import (all_gather_object, all_reduce_mean, all_reduce_sum, broadcast_object, get_rank,
                          get_world_size, init_distributed, is_distributed, is_main_process)

__all__ = [
    "TrainConfig",
    "StepOutput",
    "History",
    "TrainConfigError",
    "CheckpointError",
    "CheckpointMismatchError",
    "seed_everything",
    "set_threads",
    "cosine_lr",
    "fit",
    "save_checkpoint",
    "load_checkpoint",
    "classification_step",
    # re-exported from survey_lib.distributed
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "all_reduce_mean",
]


class TrainConfigError(ValueError):
    """A :class:`TrainConfig` field has a value that would train the wrong way (or not at all)."""


class CheckpointError(ValueError):
    """A checkpoint cannot be used: unreadable, truncated, not written by :func:`fit`, holding
    objects other than tensors and plain data (refused unread), or its folder is not writable."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint was written by another run: a different architecture, or a different
    training configuration or seed. The message names what differs and how to start over."""


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`fit`.

    Attributes:
        epochs: passes over the training set.
        batch_size: images per optimiser step, GLOBAL: under ``torchrun --nproc_per_node=N`` each
            process gets ``batch_size // N`` (``batch_size`` must be divisible by N), so the
            recipe (steps per epoch, schedule, gradient of the mean loss) is the same for any N.
        lr: peak learning rate (reached after warm-up).  min_lr: final learning rate of the cosine.
        warmup_epochs: linear warm-up length in epochs (fractions allowed).
        weight_decay: AdamW decoupled weight decay (not applied to biases, norms, tokens, embeddings).
        betas: AdamW betas.
        label_smoothing: for the default classification loss.
        clip_grad: max global gradient norm, or None.
        seed: seeds Python, NumPy, torch and the data order.
        drop_last: drop the last incomplete batch (default False).
        eval_every: evaluate every this many epochs (and always after the last).
        checkpoint_path: where to write the checkpoint (atomically, each epoch); None: no checkpoint.
        resume: continue from ``checkpoint_path`` if it exists.
        progress: show a progress bar (None: on, unless ``SURVEY_PROGRESS=0``).
        desc: label of the progress bar.
        find_unused_parameters: under torchrun, DDP's unused-parameter search; set True only when
            some trainable parameters get no gradient in a step (DDP fails and says so otherwise).
        meta: whatever else determines the run (a recipe's name, version and configuration), plain
            data only; recorded in the checkpoint and compared on resume like the fields above.

    Raises:
        TrainConfigError: on construction, a value that would train the wrong way: epochs or
            batch_size not a positive integer; lr not positive and finite; min_lr outside [0, lr];
            warm-up or weight decay negative; betas outside [0, 1); label smoothing outside [0, 1);
            clip_grad neither None nor positive; eval_every below 1.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    betas: Sequence[float] = (0.9, 0.999)
    label_smoothing: float = 0.0
    clip_grad: Optional[float] = 1.0
    seed: int = 0
    drop_last: bool = False
    eval_every: int = 1
    checkpoint_path: Optional[str] = None
    resume: bool = True
    progress: Optional[bool] = None
    desc: str = "train"
    find_unused_parameters: bool = False
    meta: Dict[str, Any] = field(default_factory=dict)

    #: Fields that do not change what is trained (where it is written, how it is shown).
    NOT_COMPARED = ("checkpoint_path", "resume", "progress", "desc", "find_unused_parameters")

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> TrainConfigError:
            return TrainConfigError(f"TrainConfig.{name}={getattr(self, name)!r}: {why}")

        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def number(name: str) -> float:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise bad(name, "must be a finite number")
            return float(v)

        for name in ("epochs", "batch_size"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise bad(name, "must be a positive integer")
        if not is_int(self.eval_every) or self.eval_every < 1:
            raise bad("eval_every", "must be an integer >= 1 (evaluate every N epochs; the last epoch always is)")
        if not is_int(self.seed):
            raise bad("seed", "must be an integer")
        if number("lr") <= 0:
            raise bad("lr", "must be positive (a negative rate climbs the loss), e.g. 1e-3")
        if not 0.0 <= number("min_lr") <= self.lr:
            raise bad("min_lr", f"must lie in [0, lr = {self.lr}]: the cosine decays from lr down to min_lr")
        if number("warmup_epochs") < 0:
            raise bad("warmup_epochs", "must be >= 0 (0: no warm-up)")
        if number("weight_decay") < 0:
            raise bad("weight_decay", "must be >= 0")
        if len(tuple(self.betas)) != 2 or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in self.betas):
            raise bad("betas", "must be two numbers in [0, 1), e.g. (0.9, 0.999)")
        if not 0.0 <= number("label_smoothing") < 1.0:
            raise bad("label_smoothing", "must lie in [0, 1) (0.1 is common)")
        if self.clip_grad is not None and number("clip_grad") <= 0:
            raise bad("clip_grad", "must be None (no clipping) or a positive maximum gradient norm such as 1.0 "
                                   "(0 would never learn, a negative norm reverses the gradient)")

    def fingerprint(self) -> Dict[str, Any]:
        """The fields that determine what is trained (everything but :attr:`NOT_COMPARED`), as plain data."""
        d = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if k not in self.NOT_COMPARED}


@dataclass
class StepOutput:
    """What a training step returns: the loss to minimise and, optionally, what to log.

    Attributes:
        loss: scalar tensor with a graph.
        logits: (B, K) predictions, used with ``targets`` for the training accuracy.
        targets: (B,) int labels.
        metrics: extra floats averaged over the epoch (e.g. ``{"teacher_entropy": 1.2}``).
    """

    loss: torch.Tensor
    logits: Optional[torch.Tensor] = None
    targets: Optional[torch.Tensor] = None
    metrics: Dict[str, float] = field(default_factory=dict)


@dataclass
class History:
    """Per-epoch records (``rows``) and per-step losses of a :func:`fit` run.

    Each row has ``epoch`` (1-based), ``lr``, ``train_loss``, ``seconds`` (wall time of the epoch,
    in seconds), ``train_acc`` when the step returns logits, and whatever the evaluation returns
    (``val_loss``, ``val_acc`` by default).
    """

    rows: List[Dict[str, float]] = field(default_factory=list)
    step_losses: List[float] = field(default_factory=list)
    resumed_epochs: int = 0  #: epochs read from a checkpoint rather than trained by this call

    @property
    def last(self) -> Dict[str, float]:
        return self.rows[-1] if self.rows else {}

    @property
    def seconds(self) -> float:
        """Total training wall time in seconds (sum over epochs, including evaluation)."""
        return float(sum(r["seconds"] for r in self.rows))

    def series(self, key: str) -> List[float]:
        return [r[key] for r in self.rows if key in r]

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows)


# ---------------------------------------------------------------------------------------------
# reproducibility
# ---------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(n: Optional[int] = None) -> int:
    """Set torch's intra-op threads (default: ``$SURVEY_NUM_THREADS``, else leave as is); returns the count.

    With 2 cores, two busy processes with 2 threads each slow down 3x or more: tests and notebook
    smoke runs use 1 thread.
    """
    if n is None and os.environ.get("SURVEY_NUM_THREADS"):
        n = int(os.environ["SURVEY_NUM_THREADS"])
    if n is not None:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def cosine_lr(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up to ``lr``, then cosine decay to ``min_lr``."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * min(1.0, progress)))


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------
def architecture_signature(model: nn.Module) -> Dict[str, Any]:
    """Class name and every parameter/buffer shape: what must match for a checkpoint to load."""
    config = getattr(model, "config", None)
    return {
        "class": type(model).__name__,
        "config": dict(config) if isinstance(config, dict) else None,
        "shapes": {k: tuple(v.shape) for k, v in model.state_dict().items()},
    }


def check_architecture(model: nn.Module, signature: Dict[str, Any], path: Union[str, Path] = "checkpoint") -> None:
    """Raise :class:`CheckpointMismatchError` if ``signature`` was not written by this architecture."""
    mine = architecture_signature(model)
    problems = []
    if signature.get("class") != mine["class"]:
        problems.append(f"class {signature.get('class')} != {mine['class']}")
    theirs_cfg, mine_cfg = signature.get("config"), mine["config"]
    if isinstance(theirs_cfg, dict) and isinstance(mine_cfg, dict):
        diff = [k for k in mine_cfg if k in theirs_cfg and theirs_cfg[k] != mine_cfg[k]]
        problems += [f"{k}: checkpoint {theirs_cfg[k]!r} vs model {mine_cfg[k]!r}" for k in diff]
    theirs = signature.get("shapes", {})
    missing = sorted(set(mine["shapes"]) - set(theirs))
    extra = sorted(set(theirs) - set(mine["shapes"]))
    shape = [k for k in mine["shapes"] if k in theirs and tuple(theirs[k]) != tuple(mine["shapes"][k])]
    if missing:
        problems.append(f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    if extra:
        problems.append(f"unexpected {extra[:3]}{' ...' if len(extra) > 3 else ''}")
    if shape:
        k = shape[0]
        problems.append(f"shape of {k}: checkpoint {tuple(theirs[k])} vs model {tuple(mine['shapes'][k])}"
                        + (f" (+{len(shape) - 1} more)" if len(shape) > 1 else ""))
    if problems:
        raise CheckpointMismatchError(
            f"{path} was written by a different architecture: " + "; ".join(problems)
            + ". Build the model with the checkpoint's config, or start from scratch with resume=False "
              "or a new checkpoint_path."
        )


def save_checkpoint(path: Union[str, Path], state: Dict[str, Any]) -> None:
    """Write ``state`` with ``torch.save`` atomically: to a temporary file in the same folder, then
    ``os.replace``, so a crash mid-write never leaves a truncated checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


#: The entries every checkpoint written by :func:`fit` holds.
CHECKPOINT_KEYS = ("model", "optimizer", "epoch", "history", "rng", "config", "arch")


def load_checkpoint(path: Union[str, Path], model: Optional[nn.Module] = None) -> Dict[str, Any]:
    """Load a checkpoint written by :func:`fit`; with ``model``, check the architecture and load weights.

    The file is read with ``torch.load(weights_only=True)``: tensors and plain data only, so a
    crafted file cannot run code (it is refused unread).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is empty, truncated, not a checkpoint of :func:`fit`, or holds
            objects other than tensors and plain data; the message says how to start over.
        CheckpointMismatchError: the checkpoint belongs to another architecture.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    start_over = "delete it, or start over with resume=False (survey train ... --no-resume)"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path} cannot be read as a checkpoint of tensors and plain data (torch.load "
                              f"weights_only=True: {_unpickling_reason(e)}): it is corrupt, or it holds other objects, "
                              f"which are refused unread so that no code runs; {start_over}") from None
    except Exception as e:  # empty, truncated or not a torch file at all
        raise CheckpointError(f"{path} cannot be read as a checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'empty or truncated'}); {start_over}") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a checkpoint written by survey_lib.train.fit (it lacks {missing}); "
                              f"{start_over}")
    if model is not None:
        check_architecture(model, state.get("arch", {}), path)
        model.load_state_dict(state["model"])
    return state


def _unpickling_reason(error: Exception) -> str:
    """The informative line of torch's weights-only unpickling error ("Unsupported global: ...")."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    picked = next((line for line in lines if line.startswith("Unsupported") or "GLOBAL" in line), lines[0] if lines else "")
    return picked[:160]


def _plain(x: Any) -> Any:
    """Tuples as lists, recursively: what a configuration looks like after any round trip."""
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


def _flat(d: Any, prefix: str = "") -> Dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: Dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}." if isinstance(v, dict) and v else f"{prefix}{k}"))
    return out


def check_training_config(cfg: TrainConfig, saved: Dict[str, Any], path: Union[str, Path] = "checkpoint") -> None:
    """Raise :class:`CheckpointMismatchError` naming every field where ``cfg`` differs from the
    configuration saved in a checkpoint (seed, schedule, batch size, the recipe's ``meta``, ...)."""
    mine = _flat(_plain(cfg.fingerprint()))
    theirs = _flat(_plain({k: v for k, v in saved.items() if k not in TrainConfig.NOT_COMPARED}))
    diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k, "<absent>") != theirs.get(k, "<absent>"))
    if diff:
        shown = "; ".join(f"{k}: checkpoint {theirs.get(k, '<absent>')!r}, now {mine.get(k, '<absent>')!r}" for k in diff[:6])
        more = f" (+{len(diff) - 6} more)" if len(diff) > 6 else ""
        raise CheckpointMismatchError(
            f"{path} was written by a run with another configuration: {shown}{more}. Resume with the same "
            f"settings, or start over with resume=False (survey train ... --no-resume) or another checkpoint path")


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------
def classification_step(label_smoothing: float = 0.0) -> Callable[[nn.Module, Any], StepOutput]:
    """The default step: cross-entropy (with optional label smoothing) on ``model(images)``."""

    def step(model: nn.Module, batch: Any) -> StepOutput:
        x, y = batch
        logits = model(x)  # (B, K)
        return StepOutput(F.cross_entropy(logits, y, label_smoothing=label_smoothing), logits.detach(), y)

    return step


def param_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """AdamW groups: decay on weight matrices only; none on biases, norms, tokens, position embeddings."""
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name in skip or name.split(".")[-1] in skip:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _progress_enabled(flag: Optional[bool]) -> bool:
    if flag is not None:
        return flag
    return os.environ.get("SURVEY_PROGRESS", "1") != "0"


@torch.no_grad()
def _default_eval(model: nn.Module, dataset: Dataset, batch_size: int) -> Dict[str, float]:
    from .evaluate import evaluate_classifier

    loss, acc = evaluate_classifier(model, dataset, batch_size=batch_size)
    return {"val_loss": loss, "val_acc": acc}


@torch.no_grad()
def _sharded_eval(model: nn.Module, dataset: Dataset, batch_size: int, device: torch.device) -> Dict[str, float]:
    """The default evaluation split over the ranks: rank r scores images r, r + N, r + 2N, ...; the
    summed loss, correct count and image count are all-reduced, so every rank gets the numbers a
    single process would compute on the whole set (up to float summation order)."""
    rank, world = (get_rank(), get_world_size()) if is_distributed() else (0, 1)
    shard = Subset(dataset, range(rank, len(dataset), world))
    loss_sum, correct, n = 0.0, 0, 0
    for x, y in DataLoader(shard, batch_size=batch_size, shuffle=False):
        x, y = x.to(device), torch.as_tensor(y).to(device)
        logits = model(x)  # (B, K)
        loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
        n += int(y.numel())
    tot = all_reduce_sum([loss_sum, correct, n])
    if tot[2] == 0:
        raise ValueError("the validation set is empty")
    return {"val_loss": float(tot[0] / tot[2]), "val_acc": float(tot[1] / tot[2])}


class _StepRunner(nn.Module):
    """Runs ``step_fn(model, batch)`` as its forward, so DistributedDataParallel can wrap it.

    DDP all-reduces gradients only for computations that happen inside *its* forward. Wrapping the
    step (rather than the model) means ``step_fn`` always receives the plain model, may call any of
    its methods (``model.compute``, ``model.teacher``, attributes such as ``model.loss``), and the
    gradients are still synchronised. The output is a tuple so DDP can find the tensors in it.
    """

    def __init__(self, model: nn.Module, step_fn: Callable[[nn.Module, Any], StepOutput]) -> None:
        super().__init__()
        self.model = model
        self.__dict__["step_fn"] = step_fn  # never registered: a Module step_fn's parameters stay out of DDP

    def forward(self, batch: Any):
        out = self.step_fn(self.model, batch)
        return out.loss, out.logits, out.targets, dict(out.metrics)


def _sync_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm statistics, EMA centres) to every rank.

    DDP broadcasts them at the start of each forward, but a forward then updates them from each
    rank's own images; before an evaluation and at the end of ``fit`` every rank must hold rank 0's
    model (the one in the checkpoint), or the ranks would evaluate different models.
    """
    if is_distributed():
        for b in model.buffers():
            torch.distributed.broadcast(b.data, src=0)


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _to_device(batch: Any, device: torch.device) -> Any:
    """Move the tensors of a (nested list/tuple/dict) batch to ``device``; no-op on the CPU."""
    if device.type == "cpu":
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        moved = [_to_device(b, device) for b in batch]
        if isinstance(batch, tuple):
            return type(batch)(*moved) if hasattr(batch, "_fields") else tuple(moved)  # namedtuple or tuple
        return moved
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _make_loader(train_set: Union[Dataset, DataLoader], cfg: TrainConfig, rank: int, world: int):
    """The training DataLoader and, with several processes, its DistributedSampler.

    One process: the caller's DataLoader as is (with ``set_epoch`` called each epoch if its sampler
    is a DistributedSampler), or a shuffled loader with a seeded generator. With N
    processes, a Dataset gets a DistributedSampler (shuffled with ``cfg.seed``, re-shuffled each epoch
    by ``set_epoch``) and ``cfg.batch_size // N`` images per process; a DataLoader that already has a
    DistributedSampler is used as is; any other DataLoader is rebuilt over its dataset with a
    DistributedSampler and ``loader.batch_size // N`` per process (its batch size is the global one),
    keeping its ``collate_fn``, workers and ``drop_last``.
    """
    if world == 1:
        if isinstance(train_set, DataLoader):
            sampler = train_set.sampler if isinstance(train_set.sampler, DistributedSampler) else None
            return train_set, sampler  # a DistributedSampler still gets set_epoch (a new order each epoch)
        return DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=cfg.drop_last,
                          generator=torch.Generator().manual_seed(cfg.seed)), None
    kwargs: Dict[str, Any] = {}
    if isinstance(train_set, DataLoader):
        if isinstance(train_set.sampler, DistributedSampler):
            return train_set, train_set.sampler
        if isinstance(train_set.dataset, IterableDataset) or train_set.batch_size is None:
            raise ValueError("under torchrun, fit shards a map-style Dataset with a DistributedSampler; this DataLoader "
                             "has an IterableDataset or a custom batch_sampler: pass the Dataset itself, or a DataLoader "
                             "built with sampler=DistributedSampler(dataset, seed=...)")
        dataset, global_bs, drop_last = train_set.dataset, train_set.batch_size, train_set.drop_last
        shuffle = isinstance(train_set.sampler, RandomSampler)
        kwargs = dict(collate_fn=train_set.collate_fn, num_workers=train_set.num_workers,
                      pin_memory=train_set.pin_memory, worker_init_fn=train_set.worker_init_fn,
                      persistent_workers=train_set.persistent_workers)
        if train_set.num_workers > 0:
            kwargs["prefetch_factor"] = train_set.prefetch_factor
        what = "the DataLoader's batch_size"
    else:
        dataset, global_bs, drop_last, shuffle, what = train_set, cfg.batch_size, cfg.drop_last, True, "batch_size"
    if global_bs % world != 0:
        fits = [b for b in range(world, 2 * global_bs + world, world) if abs(b - global_bs) < world]
        raise ValueError(f"{what} {global_bs} is the global batch and must be divisible by the {world} processes; "
                         f"use {' or '.join(map(str, fits))}")
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=cfg.seed,
                                 drop_last=drop_last)
    loader = DataLoader(dataset, batch_size=global_bs // world, sampler=sampler, drop_last=drop_last,
                        generator=torch.Generator().manual_seed(cfg.seed + rank), **kwargs)
    return loader, sampler


def fit(
    model: nn.Module,
    train_set: Union[Dataset, DataLoader],
    val_set: Optional[Dataset] = None,
    config: Optional[TrainConfig] = None,
    step_fn: Optional[Callable[[nn.Module, Any], StepOutput]] = None,
    eval_fn: Optional[Callable[[nn.Module], Dict[str, float]]] = None,
    optimizer: Optional[torch.optim.Optimizer] = None,
) -> History:
    """Train ``model`` and return its :class:`History`.

    Args:
        model: any module; for the default step it maps images (B, C, H, W) to logits (B, K).
        train_set: a Dataset (batched and shuffled here with a seeded generator) or a ready DataLoader.
        val_set: evaluated after each epoch by the default ``eval_fn`` (loss and accuracy).
        config: :class:`TrainConfig`.
        step_fn: ``(model, batch) -> StepOutput``; default :func:`classification_step`.
        eval_fn: ``model -> {name: float}`` run every ``config.eval_every`` epochs in eval mode.
        optimizer: default AdamW over trainable parameters (:func:`param_groups`).

    Returns:
        History with one row per epoch (``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``,
        ``lr``, ``seconds``) and every step's loss.

    Under torchrun (``WORLD_SIZE`` > 1) every rank runs ``fit`` with the same arguments and gets the
    same History: step losses and training metrics are averaged over the ranks, ``train_acc`` counts
    every rank's images, a custom ``eval_fn`` runs on every rank (on the unwrapped model) and rank 0's
    numbers are kept. Under nccl the model is moved to ``cuda:LOCAL_RANK`` for training and back to
    its device at the end; a custom ``eval_fn`` must move its inputs to the model's device.

    Raises:
        CheckpointMismatchError: resuming from a checkpoint of another architecture.
        ValueError: an empty training set; under torchrun, a batch size not divisible by the number
            of processes, or a DataLoader that cannot be sharded.
    """
    from tqdm.auto import tqdm

    cfg = config or TrainConfig()
    step_fn = step_fn or classification_step(cfg.label_smoothing)
    run = _setup(model, train_set, val_set, cfg, eval_fn, optimizer)
    history, start_epoch = _resume(run, cfg)
    runner = _wrap_for_ddp(run, step_fn, cfg)
    bar = tqdm(total=cfg.epochs * run.steps_per_epoch, initial=start_epoch * run.steps_per_epoch, desc=cfg.desc,
               disable=not (run.main and _progress_enabled(cfg.progress)), dynamic_ncols=True)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            row = _train_one_epoch(run, runner, cfg, epoch, history, bar)
            if run.eval_fn is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
                row.update(_evaluate(run))
                if "val_acc" in row:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{row['train_loss']:.3f}", val_acc=f"{row['val_acc']:.3f}")
            row["seconds"] = time.perf_counter() - t0
            if run.distributed:
                row = broadcast_object(row)  # rank 0's wall time and evaluation: identical rows everywhere
            history.rows.append(row)
            if run.ckpt is not None:
                _write_checkpoint(run, cfg, epoch + 1, history)
    finally:
        bar.close()
    _sync_buffers(model)  # every rank returns rank 0's model
    model.eval()
    if run.device != run.home:
        model.to(run.home)
    return history


@dataclass
class _Run:
    """What one :func:`fit` call works with: the model and its devices, the loader, the optimiser,
    the schedule's length, the evaluation, the checkpoint path and the process group."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    sampler: Optional[DistributedSampler]
    eval_fn: Optional[Callable[[nn.Module], Dict[str, float]]]
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    ckpt: Optional[Path]
    distributed: bool
    rank: int
    world: int
    home: torch.device
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup(model: nn.Module, train_set, val_set, cfg: TrainConfig, eval_fn, optimizer) -> _Run:
    """Process group, device, default evaluation, seeding, loader, schedule length and optimiser."""
    distributed = init_distributed()
    rank, world = (get_rank(), get_world_size()) if distributed else (0, 1)
    home = device = _model_device(model)
    if distributed and torch.distributed.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
        model.to(device)
    if val_set is not None and eval_fn is None and len(val_set) == 0:
        raise ValueError("the validation set is empty; pass val_set=None to train without evaluation")
    ckpt = Path(cfg.checkpoint_path) if cfg.checkpoint_path else None
    if ckpt is not None and rank == 0:
        _prepare_checkpoint_folder(ckpt)
    if eval_fn is None and val_set is not None:
        eval_bs = max(cfg.batch_size, 256)
        if distributed or device.type != "cpu":
            eval_fn = lambda m: _sharded_eval(m, val_set, eval_bs, device)  # noqa: E731
        else:
            eval_fn = lambda m: _default_eval(m, val_set, eval_bs)  # noqa: E731

    # Rank r seeds its global generators with seed + r: augmentation and dropout differ between
    # ranks as they would between the images of one big batch; rank 0 (and a single process) = seed.
    seed_everything(cfg.seed + rank)
    loader, sampler = _make_loader(train_set, cfg, rank, world)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError("the training set yields no batch; lower batch_size or set drop_last=False")
    if optimizer is None:
        groups = param_groups(model, cfg.weight_decay)
        # The fused kernel (one op for all tensors) is about 5x faster than the per-tensor loop on a
        # CPU, which is a tenth of a small model's step; it needs floating parameters on CPU or CUDA.
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused or None)
    return _Run(model=model, optimizer=optimizer, loader=loader, sampler=sampler, eval_fn=eval_fn,
                steps_per_epoch=steps_per_epoch, total_steps=cfg.epochs * steps_per_epoch,
                warmup_steps=int(round(cfg.warmup_epochs * steps_per_epoch)),
                ckpt=ckpt,
                distributed=distributed, rank=rank, world=world, home=home, device=device)


def _prepare_checkpoint_folder(ckpt: Path) -> None:
    """Create the checkpoint's folder, check it is writable (before any epoch is spent), and remove
    the temporary files a killed write left behind (``<name>.*.tmp``, see :func:`save_checkpoint`).

    Raises:
        CheckpointError: the folder cannot be created or written.
    """
    try:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create the checkpoint folder {ckpt.parent} ({e}); pass another checkpoint path") from None
    if not os.access(ckpt.parent, os.W_OK | os.X_OK):
        raise CheckpointError(f"the checkpoint folder {ckpt.parent} is not writable; pass a checkpoint path in a "
                              f"folder you can write, or no checkpoint")
    for stale in ckpt.parent.glob(f"{ckpt.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def _resume(run: _Run, cfg: TrainConfig) -> Tuple[History, int]:
    """The history so far and the first epoch to run: from the checkpoint when it exists (model,
    optimiser, history and every random state restored), else an empty history and epoch 0."""
    if run.ckpt is None or not cfg.resume:
        return History(), 0
    model = run.model
    # Rank 0 reads the file and sends it to the others: no shared filesystem needed across nodes.
    state, error = None, None
    if run.main and run.ckpt.exists():
        try:
            state = load_checkpoint(run.ckpt, model)
        except Exception as e:  # re-raised on every rank below, so no rank waits forever
            error = e
    if run.distributed:
        state, error = broadcast_object((state, error))
        if state is not None and not run.main:
            check_architecture(model, state.get("arch", {}), run.ckpt)
            model.load_state_dict(state["model"])
    if error is not None:
        raise error
    if state is None:
        return History(), 0
    check_training_config(cfg, state["config"], run.ckpt)
    if state["epoch"] >= cfg.epochs and run.main:
        print(f"fit: {run.ckpt} holds the finished run ({state['epoch']} of {cfg.epochs} epochs): nothing to "
              f"train; resume=False (survey train ... --no-resume) trains it again", file=sys.stderr)
    run.optimizer.load_state_dict(state["optimizer"])
    per_rank = state.get("rng_per_rank")
    if per_rank is not None and len(per_rank) == run.world:
        _set_rng_state(per_rank[run.rank], run.loader)
    elif run.main:  # a different number of processes: rank 0 continues rank 0's streams
        _set_rng_state(state["rng"], run.loader)
    history = History(rows=state["history"]["rows"], step_losses=state["history"]["step_losses"])
    history.resumed_epochs = int(state["epoch"])
    return history, state["epoch"]


def _wrap_for_ddp(run: _Run, step_fn, cfg: TrainConfig) -> nn.Module:
    """The step as a module (:class:`_StepRunner`), wrapped in DistributedDataParallel under torchrun."""
    runner: nn.Module = _StepRunner(run.model, step_fn)
    if run.distributed:
        from torch.nn.parallel import DistributedDataParallel

        # DDP broadcasts rank 0's parameters and buffers now, so every rank starts from the same model.
        runner = DistributedDataParallel(runner, device_ids=[run.device.index] if run.device.type == "cuda" else None,
                                         find_unused_parameters=cfg.find_unused_parameters)
    return runner


def _train_one_epoch(run: _Run, runner: nn.Module, cfg: TrainConfig, epoch: int, history: History, bar) -> Dict[str, float]:
    """One pass over the loader: schedule, forward, backward, clip, step; returns the epoch's row
    (``epoch``, ``lr``, mean ``train_loss`` and metrics, ``train_acc``) and appends every step's loss.

    Raises:
        FloatingPointError: a non-finite loss.
    """
    model, optimizer = run.model, run.optimizer
    if run.sampler is not None:
        run.sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
    model.train()
    sums: Dict[str, float] = {}
    n_seen = n_correct = n_batches = 0
    step = epoch * run.steps_per_epoch
    lr = cfg.lr
    for batch in run.loader:
        lr = cosine_lr(step, run.total_steps, run.warmup_steps, cfg.lr, cfg.min_lr)
        for g in optimizer.param_groups:
            g["lr"] = lr
        batch = _to_device(batch, run.device)
        loss_t, logits, targets, metrics = runner(batch)
        loss = float(loss_t.detach())
        correct = seen = 0
        if logits is not None and targets is not None:
            correct, seen = int((logits.argmax(-1) == targets).sum()), int(targets.numel())
        if run.distributed:  # one small all-reduce: every rank logs (and checks) the global numbers
            keys = sorted(metrics)
            tot = all_reduce_sum([loss, correct, seen] + [float(metrics[k]) for k in keys])
            loss, correct, seen = float(tot[0]) / run.world, int(tot[1]), int(tot[2])
            metrics = {k: float(tot[3 + i]) / run.world for i, k in enumerate(keys)}
        if not math.isfinite(loss):  # stop before backward and step: the weights stay as they were
            raise FloatingPointError(_non_finite_message("loss", loss, step, epoch, lr, batch))
        optimizer.zero_grad(set_to_none=True)
        loss_t.backward()  # under DDP the gradients are averaged over the ranks here
        if cfg.clip_grad is not None:
            norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad))
            if not math.isfinite(norm):
                optimizer.zero_grad(set_to_none=True)
                raise FloatingPointError(_non_finite_message("gradient norm", norm, step, epoch, lr, batch))
        optimizer.step()
        if hasattr(model, "on_train_step_end"):
            model.on_train_step_end(step, run.total_steps)
        history.step_losses.append(loss)
        sums["train_loss"] = sums.get("train_loss", 0.0) + loss
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        n_correct += correct
        n_seen += seen
        n_batches += 1
        step += 1
        bar.update(1)
        bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.3f}", refresh=False)

    row: Dict[str, float] = {"epoch": epoch + 1, "lr": lr}
    row.update({k: v / n_batches for k, v in sums.items()})
    if n_seen:
        row["train_acc"] = n_correct / n_seen
    return row


def _non_finite_message(what: str, value: float, step: int, epoch: int, lr: float, batch: Any) -> str:
    """Why training stopped: the batch's non-finite inputs if it has any, else the usual causes."""
    tensors = [t for t in _tensors(batch) if t.is_floating_point()]
    bad = [(i, t) for i, t in enumerate(tensors) if not torch.isfinite(t).all()]
    where = f"{what} became {value} at step {step} (epoch {epoch + 1}); the weights were not updated. "
    if bad:
        i, t = bad[0]
        n = int((~torch.isfinite(t)).sum())
        return (where + f"The batch's inputs are not finite: tensor {i} of the batch, shape {tuple(t.shape)}, "
                f"holds {n} NaN/inf values; check the data (a NaN image, a division by zero in a transform)")
    return where + f"The inputs are finite: lower lr (now {lr:.2e}) or enable clip_grad"


def _tensors(batch: Any) -> List[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return [batch]
    if isinstance(batch, (list, tuple)):
        return [t for b in batch for t in _tensors(b)]
    if isinstance(batch, dict):
        return [t for b in batch.values() for t in _tensors(b)]
    return []


def _evaluate(run: _Run) -> Dict[str, float]:
    """The evaluation in eval mode, on rank 0's model, without touching the training's random stream."""
    rng = _get_rng_state(run.loader)  # evaluation must not change the training's random stream
    _sync_buffers(run.model)
    run.model.eval()
    out = {k: float(v) for k, v in run.eval_fn(run.model).items()}
    _set_rng_state(rng, run.loader)
    return out


def _write_checkpoint(run: _Run, cfg: TrainConfig, epochs_done: int, history: History) -> None:
    """Model, optimiser, history and every random state, written atomically by rank 0."""
    rng_per_rank = all_gather_object(_get_rng_state(run.loader)) if run.distributed else None
    if not run.main:
        return
    state = {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "epoch": epochs_done,
        "history": {"rows": history.rows, "step_losses": history.step_losses},
        "rng": _get_rng_state(run.loader),
        "config": asdict(cfg),
        "arch": architecture_signature(run.model),
    }
    if run.distributed:
        state["rng_per_rank"] = rng_per_rank  # each rank's streams, for an exact resume
        state["world_size"] = run.world
    save_checkpoint(run.ckpt, state)


def _get_rng_state(loader: DataLoader) -> Dict[str, Any]:
    """Every random stream of the run, as tensors and plain data (so ``weights_only=True`` loads it)."""
    gen = getattr(loader, "generator", None)
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "loader": gen.get_state() if gen is not None else None,
    }


def _set_rng_state(state: Dict[str, Any], loader: DataLoader) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    gen = getattr(loader, "generator", None)
    if gen is not None and state.get("loader") is not None:
        gen.set_state(state["loader"])
