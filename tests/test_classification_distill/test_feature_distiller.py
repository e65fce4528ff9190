"""FeatureDistiller: train steps, checkpoint keys, init_cfg round trip; the REINFORCE policy."""
import warnings

import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import classification_distill.models  # noqa: F401
import common  # noqa: F401
from common.distill import EntropyDecayHook, ReinforceTimestepPolicy, TimestepHistogramHook
from common.io import save_checkpoint
from common.io.pretrained_init import PartialLoadWarning
from tests.helpers.tiny_models import save_ddpm_pipeline

MID = 'mid_block.resnets.1.conv2'  # 64 channels in the tiny pipeline


@pytest.fixture(scope='module')
def ddpm_dir(tmp_path_factory):
    return save_ddpm_pipeline(str(tmp_path_factory.mktemp('ddpm') / 'pipe'))


def distiller_cfg(ddpm_dir, sampler, loss=None):
    return dict(
        type='FeatureDistiller',
        student=dict(type='ImageClassifier', backbone=dict(type='ResNet_CIFAR', depth=18),
                     neck=dict(type='GlobalAveragePooling'), head=None),
        teacher=dict(type='DiffusionTeacher', pretrained=ddpm_dir, layers=[MID], timesteps=[10],
                     seed=0),
        timestep_sampler=sampler,
        distill_pairs=dict(feat=dict(
            student='backbone.layer4', teacher=MID,
            connector=dict(type='ConvConnector', in_channels=512, out_channels=64),
            loss=loss or dict(type='PooledMSELoss'))),
        data_preprocessor=dict(type='ClsDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3))


def batch(n=8, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.rand(n, 3, size, size, generator=g) * 255
    samples = [DataSample().set_gt_label(int(i % 4)) for i in range(n)]
    return dict(inputs=list(inputs), data_samples=samples)


def train_steps(model, steps, lr=0.05):
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=lr, momentum=0.9)))
    data = batch()
    history = []
    for _ in range(steps):
        logs = model.train_step(data, optim)
        history.append(logs)
    return history


def test_distillation_loss_decreases_fixed_t(ddpm_dir):
    torch.manual_seed(0)
    model = MODELS.build(distiller_cfg(ddpm_dir, dict(type='FixedTimestep', timestep=10)))
    losses = [h['loss_feat'].item() for h in train_steps(model, 8)]
    assert losses[-1] < 0.5 * losses[0], losses


def test_dense_loss_with_spatial_alignment_decreases(ddpm_dir):
    torch.manual_seed(0)
    model = MODELS.build(distiller_cfg(ddpm_dir, dict(type='UniformTimestep', low=0, high=50),
                                       loss=dict(type='DenseMSELoss')))
    losses = [h['loss_feat'].item() for h in train_steps(model, 8)]
    assert losses[-1] < 0.7 * losses[0], losses


def test_policy_variant_trains_all_parts(ddpm_dir):
    torch.manual_seed(0)
    sampler = dict(type='ReinforceTimestepPolicy', num_classes=4, teacher_channels=64,
                   num_bins=10, baseline='ema')
    model = MODELS.build(distiller_cfg(ddpm_dir, sampler))
    before = {k: v.clone() for k, v in model.timestep_sampler.state_dict().items()}
    logs = train_steps(model, 3)
    assert {'loss_feat', 'loss_task_head', 'loss_policy', 'loss_entropy'} <= set(logs[-1])
    changed = [k for k, v in model.timestep_sampler.state_dict().items()
               if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert any(k.startswith('policy_net') for k in changed)
    assert any(k.startswith('task_head') for k in changed)


def test_checkpoint_holds_student_and_policy_not_teacher(ddpm_dir):
    sampler = dict(type='ReinforceTimestepPolicy', num_classes=4, teacher_channels=64,
                   baseline='ema')
    model = MODELS.build(distiller_cfg(ddpm_dir, sampler))
    keys = list(model.state_dict())
    assert any(k.startswith('student.backbone.') for k in keys)
    assert all(k.startswith(('student.', 'connectors.', 'timestep_sampler.')) for k in keys), keys
    # everything a resumed policy run needs: policy net, task head, reward baseline
    for part in ('policy_net.', 'task_head.', 'reward_baseline', 'baseline_initialised'):
        assert any(k.startswith('timestep_sampler.' + part) for k in keys), part


def test_save_policy_false_is_refused_and_true_warns(ddpm_dir):
    sampler = dict(type='ReinforceTimestepPolicy', num_classes=4, teacher_channels=64)
    with pytest.raises(ValueError, match=r'save_policy=False\) is no longer supported'):
        MODELS.build(dict(distiller_cfg(ddpm_dir, sampler), save_policy=False))
    with pytest.warns(FutureWarning, match=r'save_policy=True\) has no effect'):
        model = MODELS.build(dict(distiller_cfg(ddpm_dir, sampler), save_policy=True))
    assert any(k.startswith('timestep_sampler.policy_net') for k in model.state_dict())


def test_loading_a_checkpoint_without_the_policy_warns(ddpm_dir):
    from mmengine.runner.checkpoint import load_state_dict
    from common.distill import PolicyStateMissingWarning
    sampler = dict(type='ReinforceTimestepPolicy', num_classes=4, teacher_channels=64)
    model = MODELS.build(distiller_cfg(ddpm_dir, sampler))
    old = {k: v for k, v in model.state_dict().items() if not k.startswith('timestep_sampler.')}
    with pytest.warns(PolicyStateMissingWarning, match='timestep_sampler'):
        load_state_dict(model, old)  # mmengine's non-strict loader, as resume uses
    with warnings.catch_warnings():
        warnings.simplefilter('error', PolicyStateMissingWarning)
        load_state_dict(model, model.state_dict())


def test_init_cfg_round_trip_into_fresh_classifier(ddpm_dir, tmp_path):
    torch.manual_seed(0)
    model = MODELS.build(distiller_cfg(ddpm_dir, dict(type='FixedTimestep', timestep=10)))
    train_steps(model, 1)
    path = str(tmp_path / 'distilled.pth')
    save_checkpoint({'state_dict': model.state_dict(), 'meta': {}}, path)
    fresh = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='ResNet_CIFAR', depth=18,
                      init_cfg=dict(type='Pretrained', checkpoint=path,
                                    prefix='student.backbone.')),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=512)))
    with warnings.catch_warnings():
        warnings.simplefilter('error', PartialLoadWarning)  # every key matched, none unexpected
        fresh.init_weights()
    for k, v in fresh.backbone.state_dict().items():
        torch.testing.assert_close(v, model.student.backbone.state_dict()[k])


def test_unknown_student_module_and_teacher_layer(ddpm_dir):
    cfg = distiller_cfg(ddpm_dir, dict(type='FixedTimestep', timestep=10))
    cfg['distill_pairs']['feat']['student'] = 'backbone.layer5'
    with pytest.raises(Exception, match='backbone.layer4'):
        MODELS.build(cfg)
    cfg = distiller_cfg(ddpm_dir, dict(type='FixedTimestep', timestep=10))
    cfg['distill_pairs']['feat']['teacher'] = 'mid_block'
    with pytest.raises(ValueError, match='teacher.layers'):
        MODELS.build(cfg)


@pytest.mark.parametrize('baseline', [None, 'ema'])
def test_reinforce_moves_probability_to_rewarded_timestep(baseline):
    """Toy: only timesteps in bin 2 give features that reveal the label (high reward)."""
    torch.manual_seed(0)
    n_cls = 4
    policy = ReinforceTimestepPolicy(num_classes=n_cls, teacher_channels=n_cls, num_bins=4,
                                     task_head_hidden=(), entropy_weight=0.0, baseline=baseline)
    with torch.no_grad():  # a fixed, perfect task head on one-hot features
        policy.task_head[0].weight.copy_(10 * torch.eye(n_cls))
        policy.task_head[0].bias.zero_()
    policy.task_head.requires_grad_(False)
    optim = torch.optim.Adam(policy.policy_net.parameters(), lr=3e-3)
    images = torch.randn(64, 3, 16, 16)
    labels = torch.arange(64) % n_cls

    def prob_bin2():
        with torch.no_grad():
            return policy.distribution(images).probs[:, 2].mean().item()

    start = prob_bin2()
    for _ in range(60):
        t = policy.sample(images)
        good = (t >= 500) & (t < 750)
        feats = torch.where(good[:, None], torch.eye(n_cls)[labels], torch.zeros(64, n_cls))
        losses = policy.losses(feats, labels)
        optim.zero_grad()
        (losses['loss_policy'] + losses['loss_entropy']).backward()
        optim.step()
    assert start < 0.35 and prob_bin2() > 0.6, (start, prob_bin2())


def test_coarse_bins_map_to_bin_centres():
    policy = ReinforceTimestepPolicy(num_classes=2, teacher_channels=2, num_bins=10)
    assert policy.action_to_timestep(torch.arange(10)).tolist() == list(range(50, 1000, 100))
    full = ReinforceTimestepPolicy(num_classes=2, teacher_channels=2)
    assert full.policy_net.classifier[-1].out_features == 1000


def test_entropy_decay_hook_is_linear_to_zero():

    class Runner:
        epoch = 0

        class message_hub:
            @staticmethod
            def update_scalar(*a):
                pass

    policy = ReinforceTimestepPolicy(num_classes=2, teacher_channels=2, entropy_weight=0.1)
    runner = Runner()
    runner.model = torch.nn.Module()
    runner.model.timestep_sampler = policy
    hook = EntropyDecayHook(end_epoch=100)
    seen = []
    for epoch in (0, 25, 50, 100, 150):
        runner.epoch = epoch
        hook.before_train_epoch(runner)
        seen.append(policy.entropy_weight)
    assert seen == pytest.approx([0.1, 0.075, 0.05, 0.0, 0.0])


def test_task_head_input_norm_standardises_the_pooled_feature():
    torch.manual_seed(0)
    raw = ReinforceTimestepPolicy(num_classes=3, teacher_channels=4, task_head_hidden=())
    normed = ReinforceTimestepPolicy(num_classes=3, teacher_channels=4, task_head_hidden=(),
                                     task_head_input_norm=True)
    assert isinstance(raw.task_head[0], torch.nn.Linear)
    bn = normed.task_head[0]
    assert isinstance(bn, torch.nn.BatchNorm1d) and not bn.affine
    feats = 5.0 + 0.1 * torch.randn(16, 4)  # a large shared offset, a small varying part
    out = bn.train()(feats)
    assert torch.allclose(out.mean(0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(out.var(0, unbiased=False), torch.ones(4), atol=1e-2)
    normed.sample(torch.randn(16, 3, 8, 8))
    losses = normed.losses(feats, torch.arange(16) % 3)
    losses['loss_task_head'].backward()
    assert normed.task_head[1].weight.grad is not None


def test_timestep_histogram_history_survives_a_resume(tmp_path):
    from types import SimpleNamespace
    from common.io import load_checkpoint
    sampler = SimpleNamespace(last_timesteps=torch.tensor([5, 15, 15]), num_timesteps=20)
    logger = SimpleNamespace(info=lambda msg: None)
    runner = SimpleNamespace(model=SimpleNamespace(timestep_sampler=sampler), epoch=0, rank=0,
                             work_dir=str(tmp_path), logger=logger, _resume=True)
    hook = TimestepHistogramHook(num_bins=2)
    hook.after_train_iter(runner, 0)
    hook.after_train_epoch(runner)
    checkpoint = {}
    hook.before_save_checkpoint(runner, checkpoint)
    save_checkpoint(checkpoint, str(tmp_path / 'c.pth'))
    resumed = TimestepHistogramHook(num_bins=2)
    resumed.after_load_checkpoint(runner, load_checkpoint(str(tmp_path / 'c.pth')))
    assert resumed.history == [dict(epoch=1, counts=[1, 2], edges=[0.0, 10.0, 20.0])]
    runner.epoch = 1
    resumed.after_train_iter(runner, 0)
    resumed.after_train_epoch(runner)
    assert [h['epoch'] for h in resumed.history] == [1, 2]
