"""The detection datamodule: real and synthetic detection sources -> scene-aware splits -> letterboxed,
box-safely augmented batches, mixed real:synthetic per batch.

Splits. Frames of one video are not independent, so a random frame split leaks: by default each
source is cut into **contiguous blocks** in frame order (``split: {train, val, test}`` fractions,
``mode: blocks``; synthetic sets are ordered scene by scene, so blocks are whole scenes). ``assign``
puts whole sources into one split, which is how a model is judged on a camera it never saw, e.g.
``assign: {tud_campus: test}``. ``mode: random`` shuffles per source (for independent photos).
The assignment is saved (``splits.json`` and every checkpoint) and re-applied on export and resume.

Items are ``(image [3, H, W] float32, target, sample index)``; a target holds ``boxes [K, 4]`` and
``labels [K]`` in network-input pixels, ``ignore [J, 4]`` regions (``iscrowd``/``ignore`` boxes) and the
letterbox geometry (``scale``, ``pad``) that maps predictions back to the original image.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from vision.data import splits as split_mod
from vision.data.boxes import DetectionSample
from vision.data.detection import apply_detection_augment, build_detection_augment
from vision.data.samples import load_sources
from vision.data.sampling import check_mix, MixedBatchSampler, mix_seed
from vision.errors import DataError
from vision.runtime.preprocess import ImageReadError, PreprocessSpec, normalize, read_image, resize_image

log = logging.getLogger(__name__)
SPLITS = split_mod.SPLITS


def is_ignored(box) -> bool:
    a = box.attrs
    return bool(a.get("iscrowd") or a.get("ignore"))


class DetectionDataset(Dataset):
    def __init__(self, samples: Sequence[DetectionSample], label_to_idx: Mapping[str, int], spec: PreprocessSpec,
                 augment=None, readers: Mapping[str, Any] | None = None, min_box_size: float = 2.0) -> None:
        self.samples = list(samples)
        self.label_to_idx = dict(label_to_idx)
        self.spec = spec
        self.augment = augment
        self.readers = dict(readers or {})
        self.min_box_size = float(min_box_size)

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, s: DetectionSample) -> np.ndarray:
        try:
            reader = self.readers.get(s.source)
            img = reader(s) if reader is not None else read_image(s.path)
        except ImageReadError as e:
            raise DataError(str(e)) from e
        if img.shape[:2] != (s.height, s.width):
            raise DataError(f"{s.path}: image is {img.shape[1]}x{img.shape[0]} but its annotation says "
                            f"{s.width}x{s.height}")
        return img

    def __getitem__(self, item: int | tuple[int, int]):
        idx, seed = item if isinstance(item, tuple) else (item, None)
        s = self.samples[idx]
        img = self.read(s)
        keep = [b for b in s.boxes if not is_ignored(b)]
        ign = [b for b in s.boxes if is_ignored(b)]
        boxes = np.asarray([b.xyxy for b in keep], np.float64).reshape(-1, 4)
        labels = [self.label_to_idx[b.label] for b in keep]
        ign_boxes = np.asarray([b.xyxy for b in ign], np.float64).reshape(-1, 4)
        if self.augment is not None and seed is not None:
            # ignore regions ride along as a pseudo-label (-1) so they move with the image
            all_boxes = np.concatenate([boxes, ign_boxes])
            out = apply_detection_augment(self.augment, img, all_boxes, labels + [-1] * len(ign_boxes), seed)
            img = out.image
            lab = np.asarray(out.labels, np.int64).reshape(-1)
            boxes, labels = out.boxes[lab >= 0], lab[lab >= 0].tolist()
            ign_boxes = out.boxes[lab < 0]
        resized, geo = resize_image(img, self.spec)
        scale = np.asarray([geo["scale_x"], geo["scale_y"]] * 2)
        pad = np.asarray([geo["pad_x"], geo["pad_y"]] * 2)
        th, tw = self.spec.size

        def to_input(b: np.ndarray) -> np.ndarray:
            b = b * scale + pad
            b[:, 0::2] = b[:, 0::2].clip(0, tw)
            b[:, 1::2] = b[:, 1::2].clip(0, th)
            return b

        boxes, ign_boxes = to_input(boxes), to_input(ign_boxes)
        ok = ((boxes[:, 2] - boxes[:, 0]) >= self.min_box_size) & ((boxes[:, 3] - boxes[:, 1]) >= self.min_box_size)
        target = {
            "boxes": torch.as_tensor(boxes[ok], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(np.asarray(labels, np.int64)[ok] if len(labels) else np.zeros(0, np.int64)),
            "ignore": torch.as_tensor(ign_boxes, dtype=torch.float32).reshape(-1, 4),
            "scale": (float(geo["scale_x"]), float(geo["scale_y"])),
            "pad": (float(geo["pad_x"]), float(geo["pad_y"])),
        }
        return torch.from_numpy(normalize(resized, self.spec)), target, idx


def collate(batch):
    images, targets, index = zip(*batch)
    return torch.stack(images), list(targets), torch.as_tensor(index)


class DetectionDataModule(pl.LightningDataModule):
    """Detection sources (real and synthetic) -> splits -> loaders (see the module docstring)."""

    task = "detection"

    def __init__(self, sources: Mapping[str, Any], classes: Sequence[str], preprocess: Mapping[str, Any] | None = None,
                 augment: Sequence[Any] | None = None, split: Mapping[str, Any] | None = None,
                 assign: Mapping[str, str] | None = None, seed: int = 0, batch_size: int = 16,
                 eval_batch_size: int | None = None, num_workers: int = 0, split_file: str | None = None,
                 mix: Mapping[str, Any] | None = None, steps_per_epoch: int | None = None,
                 min_visibility: float = 0.3, min_box_size: float = 2.0) -> None:
        super().__init__()
        if not sources:
            raise DataError("data.sources is empty: configure at least one detection source")
        self.sources = {}
        for name, src in dict(sources).items():
            if src is None:
                continue  # a source switched off with data.sources.NAME=null
            if not (hasattr(src, "load") and hasattr(src, "card")):
                raise DataError(f"data.sources.{name} is not a data source (got {type(src).__name__})")
            src.name = name
            self.sources[name] = src
        if not self.sources:
            raise DataError("every data source is switched off (null)")
        if not classes:
            raise DataError("data.classes must name the detector's classes, e.g. [person, vehicle]")
        self.labels = list(classes)
        pre = {"resize": "letterbox", **dict(preprocess or {})}
        self.spec = PreprocessSpec(**pre)
        if self.spec.resize != "letterbox":
            raise DataError(f"detection needs data.preprocess.resize=letterbox (boxes keep their aspect), "
                            f"got {self.spec.resize!r}")
        split = dict(split or {})
        self.split_mode = split.pop("mode", "blocks")
        if self.split_mode not in ("blocks", "random"):
            raise DataError(f"data.split.mode must be blocks or random, got {self.split_mode!r}")
        self.split_spec = split_mod.SplitSpec(seed=seed, **split)
        self.assign = dict(assign or {})
        for name, where in self.assign.items():
            if name not in self.sources:
                raise DataError(f"data.assign.{name}: no such source (sources: {sorted(self.sources)})")
            if where not in SPLITS:
                raise DataError(f"data.assign.{name} must be one of {SPLITS}, got {where!r}")
        self.augment_cfg = list(augment or [])
        self.augment = (build_detection_augment(self.augment_cfg, min_visibility=min_visibility,
                                                min_size=min_box_size) if self.augment_cfg else None)
        self.min_box_size = float(min_box_size)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.split_file = split_file
        self.steps_per_epoch = steps_per_epoch
        self.mix = check_mix(mix)
        self._assignment: dict[str, list[str]] | None = None
        self.splits: dict[str, list[DetectionSample]] = {}
        self.cards: list[dict[str, Any]] = []
        self._samples: list[DetectionSample] = []

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def source_kind(self, name: str) -> str:
        return str(getattr(self.sources[name], "kind", "real"))

    # -- setup ---------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        samples, self.cards = load_sources(self.sources, self.source_kind)
        known = set(self.labels)
        for s in samples:
            for b in s.boxes:
                if b.label not in known:  # ignore regions too: evaluation keeps them per class
                    raise DataError(f"{s.path}: unknown label {b.label!r} (data.classes: {self.labels}); map it "
                                    f"with the source's label_map (to a class, or null to drop it)")
        self._samples = samples
        if self._assignment is not None:
            self.splits = split_mod.apply_saved(samples, self._assignment, "checkpoint split")
        elif self.split_file:
            self.splits = split_mod.apply_saved(samples, split_mod.load_split_file(self.split_file), self.split_file)
        else:
            self.splits = self._split(samples)
        self._assignment = split_mod.keys_of(self.splits)
        log.info("detection data: %s", {k: len(v) for k, v in self.splits.items()})

    def _split(self, samples: list[DetectionSample]) -> dict[str, list[DetectionSample]]:
        by_source: dict[str, list[DetectionSample]] = defaultdict(list)
        for s in samples:
            by_source[s.source].append(s)
        out: dict[str, list[DetectionSample]] = {k: [] for k in SPLITS}
        spec = self.split_spec
        for si, name in enumerate(sorted(by_source)):
            items = sorted(by_source[name], key=_frame_order)
            if name in self.assign:
                out[self.assign[name]] += items
                continue
            if self.split_mode == "random":
                rng = np.random.default_rng([spec.seed, si])
                items = [items[i] for i in rng.permutation(len(items))]
            # units that never straddle two splits: whole scenes (every camera of a scene sees the same
            # people at the same times), else single frames of the sequence
            units: list[list[DetectionSample]] = []
            for s in items:
                scene = s.meta.get("scene")
                if units and scene is not None and units[-1][0].meta.get("scene") == scene:
                    units[-1].append(s)
                else:
                    units.append([s])
            n = len(items)
            bounds = (round(n * spec.train), round(n * (spec.train + spec.val)))
            done = 0
            for unit in units:  # a unit goes where its first frame falls
                where = "train" if done < bounds[0] else "val" if done < bounds[1] else "test"
                out[where] += unit
                done += len(unit)
        out = {k: sorted(v, key=lambda s: s.key) for k, v in out.items()}
        split_mod.check_nonempty(out, len(samples))  # type: ignore[arg-type]
        return out

    def label_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.labels)}

    def dataset(self, split: str, augment: bool = False) -> DetectionDataset:
        if split not in self.splits:
            raise DataError(f"missing split {split!r} (have {sorted(self.splits)}); call setup() first")
        return DetectionDataset(self.splits[split], self.label_to_idx(), self.spec, self.augment if augment else None,
                                {n: src.read for n, src in self.sources.items() if hasattr(src, "read")},
                                self.min_box_size)

    # -- loaders -------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        ds = self.dataset("train", augment=True)
        kinds = {name: self.source_kind(name) for name in self.sources}
        if self.mix:
            synthetic = [i for i, s in enumerate(ds.samples) if kinds[s.source] != "real"]
            real = [i for i, s in enumerate(ds.samples) if kinds[s.source] == "real"]
            try:
                batches = MixedBatchSampler(real, synthetic, self.batch_size, self.seed, **self.mix,
                                            num_batches=self.steps_per_epoch)
            except (TypeError, ValueError) as e:
                raise DataError(f"data.mix: {e}") from e
        else:
            batches = _SeededBatches(len(ds), self.batch_size, self.seed, self.steps_per_epoch)
        return DataLoader(ds, batch_sampler=batches, num_workers=self.num_workers, collate_fn=collate,
                          persistent_workers=False)

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(self.dataset(split), batch_size=self.eval_batch_size, shuffle=False,
                          num_workers=self.num_workers, collate_fn=collate)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def calibration_samples(self, n: int, seed: int = 0, split: str = "val") -> list[DetectionSample]:
        """Images for int8 calibration, drawn evenly from every source (real and synthetic) of ``split``
        (validation by default: never the test images the parity gate scores)."""
        pool = self.splits[split] or self.splits["train"]
        by_source: dict[str, list[DetectionSample]] = defaultdict(list)
        for s in pool:
            by_source[s.source].append(s)
        rng = np.random.default_rng(seed)
        per = max(1, n // max(1, len(by_source)))
        out: list[DetectionSample] = []
        for name in sorted(by_source):
            items = by_source[name]
            out += [items[i] for i in rng.permutation(len(items))[:per]]
        return out[:n]

    # -- checkpoint state ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "splits": self._assignment, "preprocess": self.spec.to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("labels")
        if saved and list(saved) != self.labels:
            raise DataError(f"the checkpoint was trained on classes {saved}, data.classes is {self.labels}")
        self._assignment = state.get("splits")
        if self.splits and self._assignment is not None:
            self.splits = split_mod.apply_saved(self._samples, self._assignment, "checkpoint split")

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"labels": self.labels, "mix": self.mix or None, "split_mode": self.split_mode,
                               "assign": self.assign or None,
                               "kinds": {n: self.source_kind(n) for n in self.sources}}
        for name, items in self.splits.items():
            per_src: dict[str, dict[str, int]] = {}
            for s in items:
                d = per_src.setdefault(s.source, {"images": 0, "boxes": 0})
                d["images"] += 1
                d["boxes"] += len(s.boxes)
            out[name] = {"count": len(items), "by_source": per_src}
        return out


def _frame_order(s: DetectionSample):
    """Frame order within a source: scene, frame number, camera when known, then the key."""
    m = s.meta
    return (m.get("scene", -1), m.get("frame", -1) if m.get("frame") is not None else -1, str(m.get("camera", "")),
            s.key)


class _SeededBatches:
    """Batches of ``(index, augmentation seed)`` from per-epoch seeded shuffles (resumable); with more
    steps than one pass over the data, further passes are shuffled with their own seeds."""

    def __init__(self, n: int, batch_size: int, seed: int, num_batches: int | None = None) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, int(seed)
        self.num_batches = int(num_batches) if num_batches else max(1, n // batch_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        items: list[tuple[int, int]] = []
        rnd = 0
        while len(items) < self.num_batches * self.batch_size:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, rnd))
            items += [(i, mix_seed(self.seed, self.epoch, rnd, i)) for i in torch.randperm(self.n, generator=g).tolist()]
            rnd += 1
        for b in range(self.num_batches):
            yield items[b * self.batch_size:(b + 1) * self.batch_size]
