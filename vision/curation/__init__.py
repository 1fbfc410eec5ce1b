"""Dataset curation helpers (FiftyOne-based).

Call :func:`vision.curation.db.configure_fiftyone` (or use
:func:`vision.curation.db.import_fiftyone`) before importing ``fiftyone``
anywhere, so that its MongoDB backend works offline on this machine.

* :mod:`vision.curation.load`: load COCO / YOLO / VOC / MOT (frames or one video per sequence) / scene-engine /
  class-folder / Market-1501 / MARS sources into named persistent datasets (provenance kept, problems
  reported, idempotent by key) and turn a view back into :class:`~vision.data.boxes.DetectionSample` /
  :class:`~vision.data.samples.Sample` lists.
* :mod:`vision.curation.brain`: exact / near duplicates, split leaks and uniqueness (numpy DCT embedding).
* :mod:`vision.curation.predict`: run an edge bundle or a checkpoint over a view, store and evaluate the
  predictions (TP / FP / FN per object, mAP, accuracy), mistakenness / hardness, re-id rank lists.
* :mod:`vision.curation.review`: saved review views, tags read back, the FiftyOne App
  (:mod:`vision.curation.app_server`; :mod:`vision.curation.browser` checks it in headless Chromium).
* :mod:`vision.curation.export` (+ :mod:`vision.curation.formats`): versioned, immutable training snapshots
  with a manifest (COCO / YOLO / VOC / Market-1501 / class folders); :mod:`vision.data.snapshot` trains on them.
* :mod:`vision.curation.actions`: the actions of ``python -m vision.curate`` (``conf/curate.yaml``).
"""
