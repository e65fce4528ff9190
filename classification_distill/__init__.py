"""RepFusion and KD baselines on mmpretrain: importing this package registers its datasets (the
digits demo's ``DigitsDataset``, which lives in ``common.datasets.digits``). The distiller,
``FeatureDistiller``, the demo teacher's trainer (``DDPMTrainer``) and its export hook are shared
machinery in ``common`` (``common.distill``, ``common.teachers``, ``common.engine``), re-exported
here so older imports and configs keep working."""
from . import datasets, engine, models  # noqa: F401
