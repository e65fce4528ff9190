"""``ClassifierTeacher``: a trained classifier as a frozen teacher for KD baselines."""
import torch
from mmengine.registry import MODELS

from ..feature_hooks import FeatureRecorder, resolve_modules
from ..io.checkpoint import load_checkpoint, state_dict_from_checkpoint
from ..io.pretrained_init import load_state_dict_report
from .frozen import FrozenTeacherBase


@MODELS.register_module()
class ClassifierTeacher(FrozenTeacherBase):
    """A frozen classifier (any model config) whose named module outputs are the targets.

    Args:
        model (dict): the classifier's config (e.g. an mmpretrain ``ImageClassifier``).
        checkpoint (str | None): its trained weights (loaded safely; every key must match).
        layers (list[str]): module paths to record, e.g. ``'backbone.layer4'``, ``'head.fc'``
            (the logits of a ``LinearClsHead``).
    """

    def __init__(self, model, layers, checkpoint=None, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        from mmpretrain.registry import MODELS as PRETRAIN_MODELS  # ImageClassifier's scope
        net = PRETRAIN_MODELS.build(model)
        if checkpoint is not None:
            state = state_dict_from_checkpoint(load_checkpoint(checkpoint))
            report = load_state_dict_report(net, state, source=repr(checkpoint))
            if report['missing'] or report['mismatched']:
                raise RuntimeError(f'Teacher checkpoint {checkpoint!r} does not fit the teacher '
                                   f'model: missing {report["missing"][:5]}, shape mismatches '
                                   f'{report["mismatched"][:5]}.')
        self._hold(net=net)
        self.layers = list(layers)
        self._modules_to_record = resolve_modules(
            net, self.layers, what='classifier teacher', how_to_list='`print(model)`')

    @property
    def net(self):
        return self._held['net']

    @torch.no_grad()
    def features_at(self, images, timesteps=None, class_labels=None):
        """``{layer: output}`` of the frozen classifier (``timesteps`` are ignored)."""
        net = self.net

        def forward():
            feats = net.extract_feat(images) if hasattr(net, 'extract_feat') else net(images)
            if getattr(net, 'head', None) is not None and hasattr(net.head, 'pre_logits'):
                net.head(feats)

        with FeatureRecorder(self._modules_to_record, early_exit=True) as rec:
            return {k: v.float() for k, v in rec.run(forward).items()}

