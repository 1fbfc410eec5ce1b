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


class MixedBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches with a fixed share of synthetic samples (``synthetic_fraction``), or a share that
    follows a ``schedule`` over epochs, e.g. synthetic pre-training then real fine-tuning::

        [{"epochs": 5, "synthetic_fraction": 1.0}, {"synthetic_fraction": 0.0}]

    Each pool is drawn as a seeded permutation, cycled when it runs out; the number of batches per
    epoch stays fixed (so schedules and progress bars agree). Yields ``(index, augmentation_seed)``.
    """

    def __init__(self, real: list[int], synthetic: list[int], batch_size: int, seed: int,
                 synthetic_fraction: float | None = None, schedule: list[dict] | None = None,
                 num_batches: int | None = None) -> None:
        if synthetic_fraction is None and not schedule:
            raise ValueError("data.mix needs synthetic_fraction or schedule")
        self.real, self.synthetic = list(real), list(synthetic)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.schedule = self.check(schedule or [{"synthetic_fraction": synthetic_fraction}])
        total = len(self.real) + len(self.synthetic)
        self.num_batches = int(num_batches or max(1, total // self.batch_size))
        self.epoch = 0
        for entry in self.schedule:
            self._counts(entry["synthetic_fraction"])  # fail now, not mid-training

    @staticmethod
    def check(schedule: list[dict]) -> list[dict]:
        out = []
        for i, e in enumerate(schedule):
            e = dict(e)
            f = e.get("synthetic_fraction")
            if not isinstance(f, (int, float)) or not 0.0 <= f <= 1.0:
                raise ValueError(f"data.mix schedule[{i}].synthetic_fraction must be in [0, 1], got {f!r}")
            if "epochs" in e and (not isinstance(e["epochs"], int) or e["epochs"] < 1):
                raise ValueError(f"data.mix schedule[{i}].epochs must be an int >= 1, got {e['epochs']!r}")
            unknown = set(e) - {"epochs", "synthetic_fraction"}
            if unknown:
                raise ValueError(f"data.mix schedule[{i}]: unknown keys {sorted(unknown)}")
            out.append(e)
        return out

    def fraction_at(self, epoch: int) -> float:
        start = 0
        for e in self.schedule:
            if "epochs" not in e or epoch < start + e["epochs"]:
                return float(e["synthetic_fraction"])
            start += e["epochs"]
        return float(self.schedule[-1]["synthetic_fraction"])

    def _counts(self, fraction: float) -> tuple[int, int]:
        n_syn = int(round(self.batch_size * fraction))
        n_real = self.batch_size - n_syn
        if n_syn and not self.synthetic:
            raise ValueError(f"data.mix asks for synthetic_fraction={fraction} but no source is synthetic")
        if n_real and not self.real:
            raise ValueError(f"data.mix asks for {1 - fraction:.2f} real data but no source is real")
        return n_real, n_syn

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches

    def _stream(self, pool: list[int], tag: int) -> Iterator[int]:
        rnd = 0
        while True:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, tag, rnd))
            for j in torch.randperm(len(pool), generator=g).tolist():
                yield pool[j]
            rnd += 1

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        n_real, n_syn = self._counts(self.fraction_at(self.epoch))
        real = self._stream(self.real, 1) if n_real else iter(())
        syn = self._stream(self.synthetic, 2) if n_syn else iter(())
        for b in range(self.num_batches):
            idx = [next(real) for _ in range(n_real)] + [next(syn) for _ in range(n_syn)]
            yield [(i, mix_seed(self.seed, self.epoch, b, k)) for k, i in enumerate(idx)]


def check_mix(mix) -> dict:
    """``data.mix`` (``synthetic_fraction`` or ``schedule``) checked before any data is read; returns the
    set entries (an empty dict: no mixing). Raises DataError naming the bad key."""
    from vision.errors import DataError

    out = {k: v for k, v in dict(mix or {}).items() if v is not None}
    if out:
        unknown = set(out) - {"synthetic_fraction", "schedule"}
        if unknown:
            raise DataError(f"data.mix: unknown keys {sorted(unknown)} (use synthetic_fraction or schedule)")
        try:
            MixedBatchSampler.check(out.get("schedule") or [{"synthetic_fraction": out.get("synthetic_fraction")}])
        except ValueError as e:
            raise DataError(f"data.mix: {e}") from e
    return out
