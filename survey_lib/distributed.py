"""torch.distributed helpers: one code path for a notebook, a laptop and ``torchrun`` on N GPUs.

``survey_lib.train.fit`` calls :func:`init_distributed` itself, so a script that trains with ``fit``
runs unchanged under ``torchrun --nproc_per_node=N script.py``: each process is one *rank*, sees a
1/N slice of every batch, and DistributedDataParallel (DDP) averages the gradients. Everything here
is a no-op in a plain single process (no environment variables, no process group), so library code
can call these helpers unconditionally.

``torchrun`` sets ``RANK`` (global index of the process), ``LOCAL_RANK`` (index on its node, used to
pick the GPU), ``WORLD_SIZE`` (number of processes), ``MASTER_ADDR`` and ``MASTER_PORT`` (where rank 0
listens). The backend is ``nccl`` when CUDA is available (tensors on the GPU), else ``gloo`` (CPU).

Source: Li et al. 2020, "PyTorch Distributed: Experiences on Accelerating Data Parallel Training",
arXiv:2006.15704 (DDP: gradient buckets all-reduced during backward, parameters broadcast from rank 0
at construction).
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, List, Optional, Union

import torch
import torch.distributed as dist

__all__ = [
    "distributed_env",
    "init_distributed",
    "is_distributed",
    "get_rank",
    "get_local_rank",
    "get_world_size",
    "is_main_process",
    "default_backend",
    "device_for_rank",
    "all_reduce_mean",
    "all_reduce_sum",
    "broadcast_object",
    "all_gather_object",
    "barrier",
    "cleanup_distributed",
]


def distributed_env() -> bool:
    """True if the environment describes a multi-process job (``torchrun`` with ``WORLD_SIZE`` > 1)."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_distributed() -> bool:
    """True if a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """Global rank: from the process group if initialised, else ``$RANK``, else 0."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def get_local_rank() -> int:
    """Rank on this node (``$LOCAL_RANK``, default 0): the GPU index a process uses."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def get_world_size() -> int:
    """Number of processes: from the process group if initialised, else ``$WORLD_SIZE``, else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the process that prints, saves figures and checkpoints."""
    return get_rank() == 0


def default_backend() -> str:
    """``"nccl"`` if CUDA is available, else ``"gloo"``."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def device_for_rank() -> torch.device:
    """The device of this process's collectives: ``cuda:LOCAL_RANK`` under nccl, else the CPU."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def init_distributed(backend: Optional[str] = None, timeout_s: float = 1800.0) -> bool:
    """Initialise the default process group from ``torchrun``'s environment, if there is one.

    Does nothing in a single process or when a group already exists. Under nccl it also selects the
    GPU ``cuda:LOCAL_RANK`` for this process.

    Args:
        backend: ``"gloo"``, ``"nccl"`` or None (:func:`default_backend`).
        timeout_s: how long a collective may wait for the other ranks before failing.

    Returns:
        True if this process is now part of a group with more than one process.

    Raises:
        ValueError: ``WORLD_SIZE`` > 1 but ``MASTER_ADDR``/``MASTER_PORT`` are missing (launch with
            ``torchrun``, which sets them, or export them yourself).
    """
    if not dist.is_available():
        return False
    if dist.is_initialized():
        return dist.get_world_size() > 1
    if not distributed_env():
        return False
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set; launch with "
                         f"`torchrun --nproc_per_node=N ...`, which sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT")
    backend = backend or default_backend()
    if backend == "nccl":
        torch.cuda.set_device(get_local_rank())
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return dist.get_world_size() > 1


def all_reduce_sum(value: Union[torch.Tensor, float, List[float]]) -> torch.Tensor:
    """Sum ``value`` over all ranks (a float64 copy; the input is not modified).

    Shapes: any tensor shape, the same on every rank; floats and lists become 1-D tensors.
    """
    t = torch.as_tensor(value, dtype=torch.float64).detach().clone()
    if not is_distributed():
        return t
    dev = device_for_rank()
    t = t.to(dev)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu()


def all_reduce_mean(value: Union[torch.Tensor, float, List[float]]) -> Union[torch.Tensor, float]:
    """Mean of ``value`` over all ranks; identity in a single process.

    A float gives a float, a tensor gives a tensor of the input's dtype (computed in float64).
    """
    mean = all_reduce_sum(value) / get_world_size()
    if isinstance(value, torch.Tensor):
        return mean.to(value.dtype)
    if isinstance(value, (int, float)):
        return float(mean)
    return mean


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (any picklable object) on every rank; identity in a single process."""
    if not is_distributed():
        return obj
    box = [obj if get_rank() == src else None]
    dist.broadcast_object_list(box, src=src, device=device_for_rank())
    return box[0]


def all_gather_object(obj: Any) -> List[Any]:
    """Every rank's ``obj``, in rank order; ``[obj]`` in a single process."""
    if not is_distributed():
        return [obj]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait until every rank arrives here; no-op in a single process."""
    if is_distributed():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def cleanup_distributed() -> None:
    """Destroy the default process group if one exists (call once at the end of a torchrun script)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
