"""Hydra sweeper plugin of the vision toolkit: Optuna (TPE, random or grid sampling) behind Hydra's launchers,
with a resumable study (SQLite or journal-file storage) and one MLflow parent run per sweep whose children
are the trials.

    python train.py -m hydra/sweeper=vision_optuna 'task.optimizer.lr=tag(log,interval(1e-4,1e-1))' \\
        model.width_mult=0.25,0.5

or a preset: ``python train.py -m experiment=camera_health hparams_search=camera_health_optuna``.
Hydra imports the modules of this package without a leading underscore when it scans for plugins, so
those stay light; Optuna, MLflow and matplotlib are imported by the ``_`` modules when a sweep starts.
"""
