"""RepFusion and KD baselines on mmpretrain: importing this package registers its datasets (the
digits demo), the demo teacher's trainer (``DDPMTrainer``) and its export hook. The distiller,
``FeatureDistiller``, is shared machinery in ``common.distill`` (re-exported here)."""
from . import datasets, engine, models  # noqa: F401
