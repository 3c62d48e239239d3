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

Recipe references: Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization" (AdamW),
arXiv:1711.05101; Loshchilov & Hutter 2017, "SGDR" (cosine schedule), arXiv:1608.03983; Steiner et
al. 2022, "How to train your ViT?", arXiv:2106.10270 (AdamW, warm-up + cosine, clip 1.0).
"""
from __future__ import annotations

import math
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "TrainConfig",
    "StepOutput",
    "History",
    "CheckpointMismatchError",
    "seed_everything",
    "set_threads",
    "cosine_lr",
    "fit",
    "save_checkpoint",
    "load_checkpoint",
    "classification_step",
]


class CheckpointMismatchError(ValueError):
    """The checkpoint was written by a model of a different architecture."""


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`fit`.

    Attributes:
        epochs: passes over the training set.
        batch_size: images per step.
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


def load_checkpoint(path: Union[str, Path], model: Optional[nn.Module] = None) -> Dict[str, Any]:
    """Load a checkpoint written by :func:`fit`; with ``model``, check the architecture and load weights.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointMismatchError: the checkpoint belongs to another architecture.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if model is not None:
        check_architecture(model, state.get("arch", {}), path)
        model.load_state_dict(state["model"])
    return state


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

    Raises:
        CheckpointMismatchError: resuming from a checkpoint of another architecture.
        ValueError: an empty training set.
    """
    from tqdm.auto import tqdm

    cfg = config or TrainConfig()
    step_fn = step_fn or classification_step(cfg.label_smoothing)
    if eval_fn is None and val_set is not None:
        eval_fn = lambda m: _default_eval(m, val_set, max(cfg.batch_size, 256))  # noqa: E731

    seed_everything(cfg.seed)
    if isinstance(train_set, DataLoader):
        loader = train_set
    else:
        loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=cfg.drop_last,
                            generator=torch.Generator().manual_seed(cfg.seed))
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError("the training set yields no batch; lower batch_size or set drop_last=False")
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    if optimizer is None:
        optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas))

    history = History()
    start_epoch = 0
    ckpt = Path(cfg.checkpoint_path) if cfg.checkpoint_path else None
    if ckpt is not None and cfg.resume and ckpt.exists():
        state = load_checkpoint(ckpt, model)
        optimizer.load_state_dict(state["optimizer"])
        history = History(rows=state["history"]["rows"], step_losses=state["history"]["step_losses"])
        start_epoch = state["epoch"]
        _set_rng_state(state["rng"], loader)

    bar = tqdm(total=total_steps, initial=start_epoch * steps_per_epoch, desc=cfg.desc,
               disable=not _progress_enabled(cfg.progress), dynamic_ncols=True)
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        t0 = time.perf_counter()
        sums: Dict[str, float] = {}
        n_seen = n_correct = n_batches = 0
        for batch in loader:
            lr = cosine_lr(step, total_steps, warmup_steps, cfg.lr, cfg.min_lr)
            for g in optimizer.param_groups:
                g["lr"] = lr
            out = step_fn(model, batch)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            if cfg.clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            optimizer.step()
            if hasattr(model, "on_train_step_end"):
                model.on_train_step_end(step, total_steps)
            loss = float(out.loss.detach())
            if not math.isfinite(loss):
                bar.close()
                raise FloatingPointError(f"loss became {loss} at step {step} (epoch {epoch + 1}); lower lr "
                                         f"(now {lr:.2e}) or enable clip_grad")
            history.step_losses.append(loss)
            sums["train_loss"] = sums.get("train_loss", 0.0) + loss
            for k, v in out.metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            if out.logits is not None and out.targets is not None:
                n_correct += int((out.logits.argmax(-1) == out.targets).sum())
                n_seen += int(out.targets.numel())
            n_batches += 1
            step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.3f}", refresh=False)

        row: Dict[str, float] = {"epoch": epoch + 1, "lr": lr}
        row.update({k: v / n_batches for k, v in sums.items()})
        if n_seen:
            row["train_acc"] = n_correct / n_seen
        if eval_fn is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            rng = _get_rng_state(loader)  # evaluation must not change the training's random stream
            model.eval()
            row.update({k: float(v) for k, v in eval_fn(model).items()})
            _set_rng_state(rng, loader)
            if "val_acc" in row:
                bar.set_postfix(epoch=epoch + 1, loss=f"{row['train_loss']:.3f}", val_acc=f"{row['val_acc']:.3f}")
        row["seconds"] = time.perf_counter() - t0
        history.rows.append(row)

        if ckpt is not None:
            save_checkpoint(ckpt, {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch + 1,
                "history": {"rows": history.rows, "step_losses": history.step_losses},
                "rng": _get_rng_state(loader),
                "config": asdict(cfg),
                "arch": architecture_signature(model),
            })
    bar.close()
    model.eval()
    return history


def _get_rng_state(loader: DataLoader) -> Dict[str, Any]:
    gen = getattr(loader, "generator", None)
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "loader": gen.get_state() if gen is not None else None,
    }


def _set_rng_state(state: Dict[str, Any], loader: DataLoader) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    gen = getattr(loader, "generator", None)
    if gen is not None and state.get("loader") is not None:
        gen.set_state(state["loader"])
