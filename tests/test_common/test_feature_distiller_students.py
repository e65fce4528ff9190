"""FeatureDistiller in common/: any student (mmseg, mmpose, transformers, mmpretrain), the caller's
scope, input-norm auto-fill through the registry, and predict delegation."""
import warnings

import pytest
import torch
from mmengine.registry import MODELS, DefaultScope

import common  # noqa: F401  registers the distiller, teachers and parts in the root registry
from common.distill import FeatureDistiller, HFStudent
from common.teachers import DiffusionTeacher
from tests.helpers.tiny_models import save_ddpm_pipeline

MID = 'mid_block.resnets.1.conv2'  # 64 channels in the tiny pipeline
PRE = dict(type='ImgDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3)
HF_RESNET = dict(model_type='resnet', num_channels=3, embedding_size=8, hidden_sizes=[8, 16],
                 depths=[1, 1], layer_type='basic')


@pytest.fixture(scope='module')
def ddpm_dir(tmp_path_factory):
    return save_ddpm_pipeline(str(tmp_path_factory.mktemp('ddpm') / 'pipe'))


def distiller(ddpm_dir, student, module, channels, loss='PooledMSELoss', **kwargs):
    return dict(
        type='FeatureDistiller', student=student,
        teacher=dict(type='DiffusionTeacher', pretrained=ddpm_dir, layers=[MID], timesteps=[10],
                     seed=0),
        timestep_sampler=dict(type='FixedTimestep', timestep=10),
        distill_pairs=dict(feat=dict(
            student=module, teacher=MID,
            connector=dict(type='ConvConnector', in_channels=channels, out_channels=64),
            loss=dict(type=loss))),
        **dict(dict(data_preprocessor=PRE), **kwargs))


def images(n=4, size=16):
    g = torch.Generator().manual_seed(0)
    return [torch.rand(3, size, size, generator=g) * 255 for _ in range(n)]


def one_step(model, data_samples=None):
    """Loss dict and total after one backward pass (no optimizer step)."""
    model.train()
    data = model.data_preprocessor(dict(inputs=images(), data_samples=data_samples), True)
    losses = model(**data, mode='loss')
    total, _ = model.parse_losses(losses)
    total.backward()
    return losses, total


def assert_gradients_on_student_only(model):
    student = [p.grad for p in model.student.parameters() if p.requires_grad]
    assert student and all(g is not None and torch.isfinite(g).all() for g in student)
    assert any(g.abs().sum() > 0 for g in student)
    assert all(p.grad is not None for p in model.connectors.parameters())
    for net in model.teacher.held_networks().values():  # frozen, outside the module tree
        assert all(p.grad is None and not p.requires_grad for p in net.parameters())
    held = {id(p) for net in model.teacher.held_networks().values() for p in net.parameters()}
    assert not held & {id(p) for p in model.parameters()}


def test_registered_in_the_root_registry_and_found_from_every_scope():
    assert MODELS.get('FeatureDistiller') is FeatureDistiller
    for scope in ('mmpretrain', 'mmseg', 'mmpose'):
        with DefaultScope.overwrite_default_scope(scope):
            with MODELS.switch_scope_and_registry(scope) as registry:
                assert registry.scope == scope
                assert registry.get('FeatureDistiller') is FeatureDistiller


def test_mmseg_backbone_student_in_the_default_scope(ddpm_dir):
    torch.manual_seed(0)
    student = dict(type='ResNetV1c', depth=18, stem_channels=16, base_channels=16)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(distiller(ddpm_dir, student, 'layer4', 128))
    assert type(model.student).__module__.startswith('mmseg.')
    losses, total = one_step(model)
    assert torch.isfinite(total) and losses['loss_feat'] > 0
    assert_gradients_on_student_only(model)


def test_mmpose_backbone_student_by_scope_key(ddpm_dir):
    torch.manual_seed(0)
    # mmpretrain also registers a 'ResNet': _scope_ picks mmpose's whatever the default scope
    student = dict(_scope_='mmpose', type='ResNet', depth=18, stem_channels=16, base_channels=16)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(distiller(ddpm_dir, student, 'layer4', 128,
                                       loss='DenseMSELoss'))
    assert type(model.student).__module__.startswith('mmpose.')
    losses, total = one_step(model)
    assert torch.isfinite(total) and losses['loss_feat'] > 0
    assert_gradients_on_student_only(model)


def test_transformers_student_from_a_config(ddpm_dir):
    torch.manual_seed(0)
    student = dict(type='HFStudent', config=HF_RESNET)
    model = MODELS.build(distiller(ddpm_dir, student, 'model.encoder.stages.1', 16))
    assert type(model.student.model).__name__ == 'ResNetModel'
    losses, total = one_step(model)
    assert torch.isfinite(total) and losses['loss_feat'] > 0
    assert_gradients_on_student_only(model)
    keys = model.state_dict()
    assert any(k.startswith('student.model.encoder.stages.1.') for k in keys)
    # the student is no BaseModel: predict is refused with the way out, tensor mode is forward
    with pytest.raises(ValueError, match=r"mode='predict'.*not an mmengine BaseModel"):
        model(torch.zeros(2, 3, 16, 16), mode='predict')
    out = model(torch.zeros(2, 3, 16, 16), mode='tensor')
    assert out.last_hidden_state.shape == (2, 16, 2, 2)  # 16 / 4 (stem) / 2


def test_transformers_student_from_a_folder_keeps_its_weights(tmp_path):
    from transformers import AutoConfig, AutoModel
    settings = dict(HF_RESNET)
    torch.manual_seed(1)
    saved = AutoModel.from_config(AutoConfig.for_model(settings.pop('model_type'), **settings))
    saved.save_pretrained(str(tmp_path / 'hf'))
    student = MODELS.build(dict(type='HFStudent', pretrained=str(tmp_path / 'hf')))
    student.init_weights()  # the runner calls it: it must not re-initialise the loaded weights
    for k, v in saved.state_dict().items():
        torch.testing.assert_close(student.model.state_dict()[k], v)
    with pytest.raises(FileNotFoundError, match='save_pretrained'):
        HFStudent(pretrained=str(tmp_path / 'missing'))
    with pytest.raises(ValueError, match='exactly one of pretrained'):
        HFStudent()


def test_mmpretrain_student_loss_and_predict_delegate(ddpm_dir):
    from mmpretrain.structures import DataSample
    torch.manual_seed(0)
    student = dict(type='ImageClassifier',
                   backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=16,
                                 base_channels=16),
                   neck=dict(type='GlobalAveragePooling'),
                   head=dict(type='LinearClsHead', num_classes=4, in_channels=128))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(distiller(ddpm_dir, student, 'backbone.layer4', 128,
                                       student_loss=True))
    samples = [DataSample().set_gt_label(i % 4) for i in range(4)]
    losses, _ = one_step(model, samples)
    assert set(losses) >= {'loss_feat', 'student_loss'}  # the head's CE, as before the move
    assert model.student.head.fc.weight.grad.abs().sum() > 0
    model.eval()
    preds = model(torch.zeros(2, 3, 16, 16), samples[:2], mode='predict')
    assert len(preds) == 2 and preds[0].pred_score.shape == (4, )


def test_student_loss_needs_a_student_with_a_loss(ddpm_dir):
    student = dict(type='HFStudent', config=HF_RESNET)
    with pytest.raises(ValueError, match='has no loss method'):
        MODELS.build(distiller(ddpm_dir, student, 'model.encoder.stages.1', 16,
                               student_loss=True))


def test_ambiguous_student_type_without_scope_names_the_fix(ddpm_dir, monkeypatch):
    import collections

    import mmpose.registry  # noqa: F401  both registries imported: 'ResNet' is in each
    import mmpretrain.registry  # noqa: F401
    # no default scope, whatever scope earlier tests of this process left behind
    monkeypatch.setattr(DefaultScope, '_instance_dict', collections.OrderedDict())
    student = dict(type='ResNet', depth=18)
    assert DefaultScope.get_current_instance() is None
    with pytest.raises(KeyError, match=r"'ResNet'.*_scope_"):
        MODELS.build(distiller(ddpm_dir, student, 'layer4', 512))


@MODELS.register_module(name='RenamedDiffusionTeacherForTest', force=True)
class RenamedDiffusionTeacher(DiffusionTeacher):
    """A subclass under another name, with its own signature."""

    def __init__(self, pretrained, layers, timesteps, extra=0, **kwargs):
        super().__init__(pretrained, layers, timesteps, **kwargs)
        self.extra = extra


@MODELS.register_module(name='PassThroughDiffusionTeacherForTest', force=True)
class PassThroughDiffusionTeacher(DiffusionTeacher):

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)


@pytest.mark.parametrize('teacher_type', ['DiffusionTeacher', 'RenamedDiffusionTeacherForTest',
                                          'PassThroughDiffusionTeacherForTest'])
def test_input_norm_filled_for_any_teacher_class_that_takes_it(ddpm_dir, teacher_type):
    cfg = distiller(ddpm_dir, dict(type='HFStudent', config=HF_RESNET), 'model.encoder.stages.1',
                    16, data_preprocessor=dict(PRE, mean=[120.0, 110, 100], std=[60.0, 50, 40]))
    cfg['teacher']['type'] = teacher_type
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = MODELS.build(cfg)
    assert type(model.teacher) is MODELS.get(teacher_type)
    assert model.teacher.input_norm == dict(mean=[120.0, 110, 100], std=[60.0, 50, 40])
    own = dict(cfg['teacher'], input_norm=dict(mean=[0.0] * 3, std=[1.0] * 3))
    kept = MODELS.build(dict(cfg, teacher=own))
    assert kept.teacher.input_norm == dict(mean=[0.0] * 3, std=[1.0] * 3)  # the teacher's wins
