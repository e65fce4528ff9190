# Distillation: the same schedule without validation (the distiller has no classifier head, so
# an experiment using this base sets its val/test dataloaders and evaluators to None).
_base_ = ['./sgd-200e_step100-150.py']
train_cfg = dict(by_epoch=True, max_epochs=200, val_interval=1000000)
val_cfg = None
test_cfg = None
