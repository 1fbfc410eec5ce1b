"""The sample record every reader produces, and the interface of a data source."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Sample:
    """One labelled image. ``key`` is stable across machines: ``<source>:<path relative to its root>``."""

    path: str  # absolute path of the image file
    label: str
    source: str  # name of the source it came from (a dataset card name or a generator)
    relpath: str  # path relative to the source root
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        return f"{self.source}:{self.relpath}"


@runtime_checkable
class Source(Protocol):
    """A reader: turns one dataset on disk (or a generator) into samples, and describes itself."""

    name: str

    def load(self) -> list[Sample]:
        """All samples, in a deterministic order; raises DataError naming the file on bad input."""

    def card(self) -> dict[str, Any]:
        """Dataset card: source, licence, task, format, counts (logged with every run that uses it)."""

    # Optional: ``kind`` ("real" | "synthetic" | "refined", default real) and
    # ``read(sample) -> HxWx3 uint8`` for sources whose samples are not plain image files
    # (rendered on the fly inside dataloader workers, decoded from video, ...).


def load_sources(sources: dict[str, Any], kind_of) -> tuple[list[Any], list[dict[str, Any]]]:
    """Every source's samples (in ``sources`` order) and cards (with ``used_samples`` and ``kind``);
    an empty source or two samples with one key (sources sharing a name) are DataErrors."""
    from vision.errors import DataError

    samples: list[Any] = []
    cards: list[dict[str, Any]] = []
    for name, src in sources.items():
        loaded = list(src.load())
        if not loaded:
            raise DataError(f"data.sources.{name}: no samples")
        samples += loaded
        card = src.card()
        card["used_samples"] = len(loaded)
        card["kind"] = kind_of(name)
        cards.append(card)
    keys = [s.key for s in samples]
    if len(set(keys)) != len(keys):
        raise DataError("two data sources share a name or an image; give each source in data.sources its own name")
    return samples, cards
