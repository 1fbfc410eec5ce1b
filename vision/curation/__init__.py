"""Dataset curation helpers (FiftyOne-based).

Call :func:`vision.curation.db.configure_fiftyone` (or use
:func:`vision.curation.db.import_fiftyone`) before importing ``fiftyone``
anywhere, so that its MongoDB backend works offline on this machine.

* :mod:`vision.curation.load`: load COCO / YOLO / VOC / MOT / scene-engine / class-folder / Market-1501 /
  MARS sources into named persistent datasets (provenance kept, problems reported, idempotent by key)
  and turn a view back into :class:`~vision.data.boxes.DetectionSample` lists.
* :mod:`vision.curation.brain`: exact / near duplicates, split leaks and uniqueness (numpy DCT embedding).
* :mod:`vision.curation.export`: versioned, immutable training snapshots with a manifest.
* :mod:`vision.curation.actions`: the actions of ``python -m vision.curate`` (``conf/curate.yaml``).
"""
