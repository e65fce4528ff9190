"""Student wrappers for networks that no OpenMMLab registry builds.

``HFStudent`` makes a transformers vision model (ResNet, ViT, DINOv2, ... from a local folder or a
config dict) a student of :class:`~common.distill.feature_distiller.FeatureDistiller`:
``forward(x)`` is ``model(pixel_values=x)`` and its modules are recorded under ``model.``
(``model.encoder.stages.1`` for a ``ResNetModel``). The one rule: the wrapped model's weights are
its own (``from_pretrained`` or the config's initialisation); mmengine's ``init_weights`` never
re-initialises them.
"""
import copy
import os

from mmengine.model import BaseModule
from mmengine.registry import MODELS

__all__ = ['HFStudent']


@MODELS.register_module()
class HFStudent(BaseModule):
    """A transformers model as a distillation student.

    Args:
        pretrained (str | None): a local folder written by ``save_pretrained`` (loaded with
            ``AutoModel.from_pretrained(..., local_files_only=True)``: nothing is downloaded).
        config (dict | None): ``dict(model_type='resnet', hidden_sizes=[...], ...)``: a model
            built from ``AutoConfig.for_model`` with random weights. Give exactly one of the two.
        init_cfg (dict | None): mmengine initialisation config of the wrapper (e.g.
            ``Pretrained`` from a distillation checkpoint with ``prefix='student.'``).
    """

    def __init__(self, pretrained=None, config=None, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if (pretrained is None) == (config is None):
            raise ValueError(
                f'HFStudent needs exactly one of pretrained (a local save_pretrained folder) and '
                f'config (a dict with model_type and the model settings); got '
                f'pretrained={pretrained!r}, config={config!r}.')
        from transformers import AutoConfig, AutoModel
        if pretrained is not None:
            if not os.path.isdir(pretrained):
                raise FileNotFoundError(
                    f'HFStudent pretrained={pretrained!r} is not a folder on this machine. It '
                    f'must be a local folder written by save_pretrained (config.json + weights); '
                    f'download it elsewhere with huggingface_hub.snapshot_download and point '
                    f'pretrained at the folder.')
            self.model = AutoModel.from_pretrained(pretrained, local_files_only=True)
        else:
            settings = copy.deepcopy(dict(config))
            model_type = settings.pop('model_type', None)
            if model_type is None:
                raise ValueError(f"HFStudent config needs a model_type (e.g. 'resnet', 'vit', "
                                 f"'dinov2'); got keys {sorted(settings)}.")
            self.model = AutoModel.from_config(AutoConfig.for_model(model_type, **settings))

    def init_weights(self):
        """Apply ``init_cfg`` only; the transformers model keeps the weights it was built with."""
        self.model.is_init = True  # mmengine skips children marked initialised
        super().init_weights()

    def forward(self, x):
        return self.model(pixel_values=x)
