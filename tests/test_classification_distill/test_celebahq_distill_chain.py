"""The face chain: a CelebA-HQ distillation config's student loads into BiSeNetV1's and the pose
model's ResNet through init_cfg, with every backbone key matched."""
import warnings

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmpretrain.registry import MODELS as PRETRAIN_MODELS
from mmpretrain.structures import DataSample

import classification_distill  # noqa: F401
import common  # noqa: F401
from common.io import save_checkpoint
from common.io.pretrained_init import PartialLoadWarning
from tests.helpers.tiny_models import save_ddpm_pipeline

DISTILL = 'classification_distill/configs/repfusion_celebahq/repfusion-dense-l2_resnet18_4xb16-200e_celebahq.py'
SEG = 'segmentation/configs/bisenetv1/bisenetv1_r18-d32-distilled-pre_2xb8-160k_celebamaskhq-448x448.py'


@pytest.fixture(scope='module')
def distilled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('faces')
    teacher = save_ddpm_pipeline(str(tmp / 'teacher'))  # 64-channel mid block
    cfg = Config.fromfile(DISTILL)
    cfg.model.teacher.pretrained = teacher
    cfg.model.distill_pairs.feat.connector.out_channels = 64
    cfg.model.data_preprocessor = cfg.data_preprocessor
    model = PRETRAIN_MODELS.build(cfg.model)
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.01)))
    batch = dict(inputs=list((torch.rand(2, 3, 64, 64) * 255)), data_samples=[DataSample()] * 2)
    logs = model.train_step(batch, optim)  # dense L2 with bilinear alignment (2x2 vs 8x8)
    assert torch.isfinite(logs['loss_feat'])
    path = str(tmp / 'distilled.pth')
    save_checkpoint({'state_dict': model.state_dict()}, path)
    return model, path


def test_student_loads_into_bisenet_resnet_with_every_key(distilled):
    model, path = distilled
    import segmentation  # noqa: F401
    from mmseg.registry import MODELS as SEG_MODELS
    cfg = Config.fromfile(SEG)
    cfg.model.backbone.backbone_cfg.init_cfg.checkpoint = path
    cfg.model.backbone.backbone_cfg.norm_cfg = dict(type='BN', requires_grad=True)
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmseg'):
        seg = SEG_MODELS.build(cfg.model)
    with warnings.catch_warnings():
        warnings.simplefilter('error', PartialLoadWarning)
        seg.backbone.context_path.backbone.init_weights()
    student = model.student.backbone.state_dict()
    for key, value in seg.backbone.context_path.backbone.state_dict().items():
        torch.testing.assert_close(value, student[key])
