"""Dataset curation helpers (FiftyOne-based).

Call :func:`vision.curation.db.configure_fiftyone` (or use
:func:`vision.curation.db.import_fiftyone`) before importing ``fiftyone``
anywhere, so that its MongoDB backend works offline on this machine.
"""
