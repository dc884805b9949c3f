"""Minibatches: which data points each SVI step sees.

A model that wants minibatches subsamples its data plate, ``pyro.plate("data", N,
subsample_size=B)``, and indexes its data with the indices the plate returns. Pyro would
draw those indices at random on every call; :class:`EpochBatches` instead hands the plate
(in the model and in the guide alike) the next ``B`` indices of a shuffled pass over the
data, so every point is seen once per epoch and a checkpoint can record where the pass
stands. The plate scales the log likelihood by ``N / B``, so each minibatch ELBO is an
unbiased estimate of the full one.

In data-parallel training (:mod:`pyrovi.infer.distributed`) every process shuffles the same
order and takes its own ``B`` indices of each ``world_size * B`` (the shard of
``DistributedSampler``): a pass over the data is shared out among the processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample

BATCH_SIZE_KEY = "batch_size"
"""The data entry by which a minibatched model receives its batch size (``model(...,
batch_size=None)``; pyrovi's models and the README's example follow it). Draws and
estimates on the whole data set set it to None."""


def whole_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with the minibatch size (:data:`BATCH_SIZE_KEY`) set to None, so that the
    model and guide see every data point."""
    data = dict(data)
    if data.get(BATCH_SIZE_KEY) is not None:
        data[BATCH_SIZE_KEY] = None
    return data


class PlateIndices(Messenger):
    """Set the indices of subsampled plates by name (``{"data": tensor([...])}``)."""

    def __init__(self, indices: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self.indices = dict(indices)

    def _process_message(self, msg: dict[str, Any]) -> None:
        if (msg["type"] == "sample" and isinstance(msg["fn"], _Subsample)
                and msg["name"] in self.indices):
            msg["value"] = self.indices[msg["name"]]


class EpochBatches:
    """Shuffled passes over the subsampled plates of a model.

    Parameters
    ----------
    plates : mapping
        Plate name -> ``(full size N, batch size B)``; every plate must have the same N
        and B (they index the same data points).
    seed : int
        Seeds the permutations (the same in every process).
    rank, world_size : int
        This process's place among ``world_size`` data-parallel processes.
    """

    def __init__(self, plates: Mapping[str, tuple[int, int]], seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        sizes = set(plates.values())
        if len(sizes) != 1:
            raise ValueError(f"subsampled plates disagree on (size, batch size): {dict(plates)}")
        (self.size, self.batch_size), = sizes
        self.plates = tuple(plates)
        self.rank, self.world_size = rank, world_size
        if self.size < self.batch_size * world_size:
            raise ValueError(f"{world_size} processes with batch size {self.batch_size} need "
                             f"at least {self.batch_size * world_size} data points; there are "
                             f"{self.size}")
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.position = 0
        self.order = torch.randperm(self.size, generator=self.generator)

    @property
    def steps_per_epoch(self) -> int:
        """This process's batches in one pass (the last, incomplete round of a pass is
        dropped)."""
        return max(1, self.size // (self.batch_size * self.world_size))

    @property
    def batches_per_pass(self) -> int:
        """Batches of :meth:`one_pass`, the whole data in batches of ``batch_size``."""
        return max(1, self.size // self.batch_size)

    def next_indices(self) -> dict[str, torch.Tensor]:
        """The indices of the next batch (a new shuffled pass starts when one ends)."""
        if self.position >= self.steps_per_epoch:
            self.epoch += 1
            self.position = 0
            self.order = torch.randperm(self.size, generator=self.generator)
        start = (self.position * self.world_size + self.rank) * self.batch_size
        self.position += 1
        batch = self.order[start:start + self.batch_size]
        return {name: batch for name in self.plates}

    def one_pass(self) -> Iterator[dict[str, torch.Tensor]]:
        """Every batch of one fixed pass in order, all of them in every process (for
        full-data estimates)."""
        for start in range(0, self.batches_per_pass * self.batch_size, self.batch_size):
            batch = torch.arange(start, start + self.batch_size)
            yield {name: batch for name in self.plates}

    def wrap(self, fn: Callable[..., Any], indices: Mapping[str, torch.Tensor]
             ) -> Callable[..., Any]:
        """``fn`` run with the plates' indices set to ``indices``."""
        return PlateIndices(indices)(fn)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "order": self.order.clone(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.order = state["order"].clone()
        self.generator.set_state(state["generator"])
