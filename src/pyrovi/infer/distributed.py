"""Data-parallel SVI on ``torch.distributed``: more processes, one fit.

When the data outgrow one process, several processes each fit on their own shard of every
minibatch pass, and PyTorch's :class:`~torch.nn.parallel.DistributedDataParallel` averages
their gradients, so every process takes the same step with the same parameters. pyrovi
adds nothing of its own to the engine: processes are started by ``torchrun`` (or
``pyrovi train ... --nproc N``, which calls it), find each other through torchrun's
rendezvous, and talk through the ``gloo`` backend on CPUs or ``nccl`` on GPUs.

Any model fitted in minibatches can be trained this way (a VAE, the health model on the
full RAND data): nothing in the model changes. Launched by torchrun, :func:`pyrovi.fit`
sees the environment torchrun sets (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``, ...),
joins the process group and:

- hands each process its shard: every pass over the data is one shuffled order, shared by
  all processes, cut into batches of ``batch_size`` per process (the effective batch is
  ``world_size * batch_size``; the per-process minibatch ELBO keeps its ``N / B`` scale,
  so the averaged gradient is an unbiased gradient of the full-data ELBO);
- averages the loss of each step over the processes, so the schedule (step size,
  plateaus, the stop) decides the same in every process;
- draws different Monte Carlo noise in each process (the seed is offset by the rank);
- writes checkpoints from rank 0 only; a killed run, started again with the same command,
  resumes from the last checkpoint in every process.

Several machines run the same command on each, with torchrun's multi-node options::

    torchrun --nnodes 2 --nproc_per_node 4 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29400 --rdzv-id myfit  train.py

(``pyrovi train MODEL --nproc 4 --nnodes 2 --rdzv-endpoint HOST:29400``), where HOST is
any one of the machines, reachable from all of them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

WORLD_SIZE_ENV = "WORLD_SIZE"


def launched() -> bool:
    """Whether this process was started by ``torchrun`` with more than one process."""
    return int(os.environ.get(WORLD_SIZE_ENV, "1")) > 1


def active() -> bool:
    """Whether a process group of more than one process is in force."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_size() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` when alone."""
    if not active():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def join(device: torch.device | None = None) -> tuple[int, int]:
    """Join the process group torchrun's environment describes (once per process).

    The backend is ``nccl`` when the fit runs on CUDA, else ``gloo``. A process not
    launched by torchrun stays alone.

    Returns
    -------
    (int, int)
        ``(rank, world_size)``.
    """
    if launched() and dist.is_available() and not dist.is_initialized():
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return rank_and_size()


def local_device(device: torch.device | None) -> torch.device | None:
    """This process's own GPU (``cuda:LOCAL_RANK``) when the fit runs on CUDA."""
    if device is not None and device.type == "cuda" and device.index is None and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def mean(value: float) -> float:
    """The mean of ``value`` over the processes (``value`` itself when alone)."""
    if not active():
        return value
    tensor = torch.tensor([value], dtype=torch.float64,
                          device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(tensor)
    return float(tensor.item()) / dist.get_world_size()


def barrier() -> None:
    """Wait for every process (nothing when alone)."""
    if active():
        dist.barrier()


def torchrun_command(argv: list[str], nproc: int, nnodes: int = 1,
                     rdzv_endpoint: str | None = None, rdzv_id: str = "pyrovi") -> list[str]:
    """The ``torchrun`` command that runs ``python -m <argv>`` in ``nproc`` processes on
    this machine (``nnodes`` machines in all, meeting at ``rdzv_endpoint``).

    One machine uses torchrun's ``--standalone`` rendezvous on a free local port; several
    use the ``c10d`` rendezvous at ``HOST:PORT`` on one of them, and the same command is
    run on every machine.

    Raises
    ------
    ValueError
        If ``nnodes > 1`` and no ``rdzv_endpoint`` is given.
    """
    if nnodes > 1 and not rdzv_endpoint:
        raise ValueError("training on several machines needs --rdzv-endpoint HOST:PORT "
                         "(one of the machines, reachable from all)")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    if nnodes > 1:
        cmd += [f"--nnodes={nnodes}", "--rdzv-backend=c10d",
                f"--rdzv-endpoint={rdzv_endpoint}", f"--rdzv-id={rdzv_id}"]
    else:
        cmd += ["--standalone"]
    return [*cmd, "-m", *argv]


class ELBOLoss(nn.Module):
    """The differentiable ELBO loss as a module, so that DistributedDataParallel can
    average the gradients of every module that holds the fit's parameters.

    Parameters
    ----------
    owners : sequence of nn.Module
        The modules holding the parameters (the guide's, and the model's if it has its
        own); registered as submodules.
    """

    def __init__(self, owners: list[nn.Module]) -> None:
        super().__init__()
        self.owners = nn.ModuleList(owners)
        self.call: tuple[Any, Callable[..., Any], Callable[..., Any]] | None = None

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        elbo, model, guide = self.call
        return elbo.differentiable_loss(model, guide, *args, **kwargs)


def data_parallel(owners: list[nn.Module], device: torch.device | None
                  ) -> nn.parallel.DistributedDataParallel:
    """Wrap the fit's modules for data-parallel gradients (one per process and guide).

    Every parameter must take part in every step's loss (DistributedDataParallel's
    default, and the cheap one): a guide with parameters some steps do not use fails at
    the first such step with PyTorch's error naming them.

    Raises
    ------
    ValueError
        If no module holds the parameters (a plain callable guide keeps them in Pyro's
        param store, where DistributedDataParallel cannot see them).
    """
    if not owners:
        raise ValueError("data-parallel training needs a guide that is a module (a pyrovi "
                         "guide family, an autoguide, or a method of an nn.Module), not a "
                         "callable whose parameters live in Pyro's param store")
    ids = [device.index] if device is not None and device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(ELBOLoss(owners), device_ids=ids)


__all__ = ["ELBOLoss", "active", "barrier", "data_parallel", "join", "launched",
           "local_device", "mean", "rank_and_size", "torchrun_command"]
