"""The classification datamodule: sources -> seeded stratified splits -> augmented tensors."""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from vision.data import augment as aug
from vision.data import splits as split_mod
from vision.data.samples import load_sources, Sample, Source
from vision.data.sampling import check_mix, EpochSeededSampler, MixedBatchSampler
from vision.errors import DataError
from vision.runtime.preprocess import ImageReadError, PreprocessSpec, normalize, read_image, resize_image

log = logging.getLogger(__name__)


class ClassificationDataset(Dataset):
    """Items are ``(image tensor, label index, sample index)``; the index links predictions back to
    each sample's source and provenance for sliced metrics."""

    def __init__(self, samples: Sequence[Sample], label_to_idx: Mapping[str, int], spec: PreprocessSpec,
                 augment=None, readers: Mapping[str, Any] | None = None) -> None:
        self.samples = list(samples)
        self.readers = dict(readers or {})  # source name -> read(sample) for sources that render or decode
        self.label_to_idx = dict(label_to_idx)
        self.spec = spec
        self.augment = augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        idx, seed = item if isinstance(item, tuple) else (item, None)
        s = self.samples[idx]
        try:
            reader = self.readers.get(s.source)
            img = reader(s) if reader is not None else read_image(s.path)
        except ImageReadError as e:
            raise DataError(str(e)) from e
        img = aug.apply(self.augment, img, seed)
        x = normalize(resize_image(img, self.spec)[0], self.spec)
        return torch.from_numpy(x), self.label_to_idx[s.label], idx


class ClassificationDataModule(pl.LightningDataModule):
    """Loads every source, splits them (or re-applies a saved split) and serves the three loaders.

    The split assignment is saved into checkpoints (``state_dict``), so export and evaluation of a
    checkpoint always use the held-out images of the run that produced it.
    """

    task = "classification"

    def __init__(self, sources: Mapping[str, Source], preprocess: Mapping[str, Any] | None = None,
                 augment: Sequence[Any] | None = None, split: Mapping[str, float] | None = None,
                 seed: int = 0, batch_size: int = 32, eval_batch_size: int | None = None,
                 num_workers: int = 0, classes: list[str] | None = None, split_file: str | None = None,
                 mix: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if not sources:
            raise DataError("data.sources is empty: configure at least one data source")
        self.sources = dict(sources)
        for name, src in self.sources.items():
            if not isinstance(src, Source):
                raise DataError(f"data.sources.{name} is not a data source (got {type(src).__name__})")
            src.name = name  # the key in data.sources names the source in sample keys and metrics
        self.spec = PreprocessSpec(**dict(preprocess or {}))
        self.augment = aug.build(augment)
        self.split_spec = split_mod.SplitSpec(seed=seed, **dict(split or {}))
        self.seed = seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.classes = list(classes) if classes else None
        self.split_file = split_file
        self.mix = check_mix(mix)  # checked now, before any data is read
        self._assignment: dict[str, list[str]] | None = None
        self.splits: dict[str, list[Sample]] = {}
        self.labels: list[str] = []
        self.cards: list[dict[str, Any]] = []
        self._samples: list[Sample] = []

    # -- setup ---------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        samples, self.cards = load_sources(self.sources, self.source_kind)
        found = sorted({s.label for s in samples})
        if self.classes is not None:
            unknown = sorted(set(found) - set(self.classes))
            if unknown:
                bad = next(s for s in samples if s.label in unknown)
                raise DataError(f"{bad.path}: unknown label {bad.label!r} (data.classes: {self.classes})")
            self.labels = list(self.classes)
        else:
            self.labels = found
        self._samples = samples
        if self._assignment is not None:
            self.splits = split_mod.apply_saved(samples, self._assignment, "checkpoint split")
        elif self.split_file:
            self.splits = split_mod.apply_saved(samples, split_mod.load_split_file(self.split_file), self.split_file)
        else:
            self.splits = split_mod.stratified_split(samples, self.split_spec)
        self._assignment = split_mod.keys_of(self.splits)
        log.info("data: %s", {k: len(v) for k, v in self.splits.items()})

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def label_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.labels)}

    def dataset(self, split: str, augment: bool = False) -> ClassificationDataset:
        if split not in self.splits:
            raise DataError(f"missing split {split!r} (have {sorted(self.splits)}); call setup() first")
        return ClassificationDataset(self.splits[split], self.label_to_idx(), self.spec,
                                     self.augment if augment else None,
                                     {n: src.read for n, src in self.sources.items() if hasattr(src, "read")})

    # -- loaders -------------------------------------------------------------------------------
    def source_kind(self, name: str) -> str:
        """``real``, ``synthetic`` or ``refined`` (sources say so; unknown counts as real)."""
        return str(getattr(self.sources[name], "kind", "real"))

    def train_dataloader(self) -> DataLoader:
        ds = self.dataset("train", augment=True)
        if self.mix:  # a fixed real:synthetic share in every batch, or a schedule of shares
            kinds = {name: self.source_kind(name) for name in self.sources}
            synthetic = [i for i, s in enumerate(ds.samples) if kinds[s.source] != "real"]
            real = [i for i, s in enumerate(ds.samples) if kinds[s.source] == "real"]
            try:
                batches = MixedBatchSampler(real, synthetic, self.batch_size, self.seed, **self.mix)
            except (TypeError, ValueError) as e:
                raise DataError(f"data.mix: {e}") from e
            return DataLoader(ds, batch_sampler=batches, num_workers=self.num_workers)
        return DataLoader(ds, batch_size=self.batch_size, sampler=EpochSeededSampler(len(ds), self.seed),
                          num_workers=self.num_workers, drop_last=len(ds) > self.batch_size,
                          persistent_workers=False)

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(self.dataset(split), batch_size=self.eval_batch_size, shuffle=False,
                          num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def calibration_samples(self, n: int, seed: int = 0) -> list[Sample]:
        """A class-balanced draw from the training split (for int8 calibration)."""
        train = self.splits["train"]
        rng = np.random.default_rng(seed)
        by_label: dict[str, list[Sample]] = {}
        for s in train:
            by_label.setdefault(s.label, []).append(s)
        out: list[Sample] = []
        per = max(1, n // max(1, len(by_label)))
        for label in sorted(by_label):
            items = by_label[label]
            out += [items[i] for i in rng.permutation(len(items))[:per]]
        return out[:n] if len(out) >= n else out

    # -- checkpoint state ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "splits": self._assignment, "preprocess": self.spec.to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint's split (also after ``setup``: the saved split always wins)."""
        saved = state.get("labels")
        if self.labels and saved and list(saved) != self.labels:
            raise DataError(f"the checkpoint was trained on labels {saved}, the data has {self.labels}")
        self._assignment = state.get("splits")
        if self.splits and self._assignment is not None:
            self.splits = split_mod.apply_saved(self._samples, self._assignment, "checkpoint split")

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"labels": self.labels, "mix": self.mix or None,
                               "kinds": {n: self.source_kind(n) for n in self.sources}}
        for name, items in self.splits.items():
            per_src: dict[str, int] = {}
            for s in items:
                per_src[s.source] = per_src.get(s.source, 0) + 1
            out[name] = {"count": len(items), "by_source": per_src}
        return out
