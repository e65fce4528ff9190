"""RepFusion and KD baselines on mmpretrain: importing this package registers its datasets,
models (``FeatureDistiller``, ``DDPMTrainer``) and hooks."""
from . import datasets, engine, models  # noqa: F401
