"""The batches one process of a run trains and validates on, in an order fixed by the seed.

Each epoch's training order and augmentation seeds follow from (seed, epoch, rank) alone, so
a resumed run sees the batches an uninterrupted one would have.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from dmae.train.distributed import DistContext
from dmae.train.hparams import TrainHParams


class RunLoaders:
    """This process's share of ``train_set`` in batches of ``hp.batch_size`` (full batches
    only) and of ``val_set`` (``val``), and the optimizer steps an epoch makes."""

    def __init__(self, train_set: Dataset, val_set: Dataset, hp: TrainHParams,
                 ctx: DistContext) -> None:
        if len(val_set) == 0:
            raise ValueError("val_set: empty; expected held-out validation images")
        self.seed, self.rank = hp.seed, ctx.rank
        # DistributedSampler also serves a single process: its order is a permutation drawn
        # from a generator seeded with seed + epoch, so a resumed run sees the same batches.
        self.sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank,
                                          shuffle=True, seed=hp.seed, drop_last=False)
        pin = ctx.device.type == "cuda"
        # Worker seeds (augmentation) come from this generator, reseeded from (seed, epoch,
        # rank) every epoch; workers are not persistent because they would keep their seeds.
        self.generator = torch.Generator()
        self.train = DataLoader(train_set, batch_size=hp.batch_size, sampler=self.sampler,
                                num_workers=hp.num_workers, pin_memory=pin, drop_last=True,
                                generator=self.generator)
        self.steps_per_epoch = len(self.train) // hp.accum_iter
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"batch_size: {len(self.sampler)} training images per device do not fill "
                f"accum_iter={hp.accum_iter} batches of batch_size={hp.batch_size}; expected a "
                f"smaller batch_size/accum_iter")
        # Validation is sharded without padding (no image counted twice); sums are reduced.
        shard = Subset(val_set, range(ctx.rank, len(val_set), ctx.world_size))
        self.val = DataLoader(shard, batch_size=hp.eval_batch_size or hp.batch_size,
                              shuffle=False, num_workers=hp.num_workers, pin_memory=pin)

    def start_epoch(self, epoch: int) -> None:
        """Put ``train`` in the order and with the augmentation seeds of ``epoch``."""
        self.sampler.set_epoch(epoch)
        self.generator.manual_seed(_derived_seed(self.seed, epoch, self.rank))


def _derived_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (e.g. seed, epoch, rank)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> 1)
