"""Epoch-seeded sampling: the order and the augmentation of every epoch depend only on (seed, epoch).

A resumed run therefore sees exactly the batches an uninterrupted run would have seen, whatever
the number of dataloader workers.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


def mix_seed(*parts: int) -> int:
    """A 31-bit seed from integers (SplitMix64 steps), stable across processes and platforms."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return int(x >> 33)


class EpochSeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, augmentation_seed)``; Lightning calls ``set_epoch`` before each epoch."""

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True) -> None:
        self.num_samples = num_samples
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        for i in order:
            yield i, mix_seed(self.seed, self.epoch, i)
