"""Data: sources (readers), seeded splits, augmentation, dataset cards and datamodules."""
from vision.data.samples import Sample, Source

__all__ = ["Sample", "Source"]
