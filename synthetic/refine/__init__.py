"""Sim-to-real refinement: unpaired translation of scene-engine frames toward a real camera's appearance.

``python -m synthetic.refine train data.synthetic=[GENERATED] data.real=[VIDEO_OR_FOLDER]`` trains a refiner
(CUT or CycleGAN, :mod:`.module`) on random crops, tracked in MLflow; ``python -m synthetic.refine apply
refiner=CKPT input=DIR output=DIR`` writes a refined copy of a generated dataset with the same labels
(:mod:`.apply`); ``data=people_refined`` trains the detector on refined scenes (:mod:`.source`).
:mod:`.geometry` checks that labels stay valid, :mod:`.domain` measures the real-vs-synthetic gap.
"""
