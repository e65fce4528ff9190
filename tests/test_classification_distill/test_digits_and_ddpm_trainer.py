"""The digits dataset, the DDPM trainer and the pipeline export hook (CPU, tiny models)."""
import os
import os.path as osp
import stat
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.optim import OptimWrapper

from classification_distill.datasets.digits import (DigitsDataset, digits_split_indices,
                                                    upsample_digits)
from classification_distill.engine.export_pipeline_hook import (ExportDiffusersPipelineHook,
                                                                save_pipeline_atomically)
from classification_distill.models.ddpm_trainer import DDPMTrainer

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO_CFG = osp.join(REPO_ROOT, 'classification_distill', 'configs', 'demo_digits',
                    'ddpm-vpred_unet-tiny_1xb32-40e_digits.py')
TINY_UNET = dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                 layers_per_block=1, down_block_types=('DownBlock2D', 'DownBlock2D'),
                 up_block_types=('UpBlock2D', 'UpBlock2D'), norm_num_groups=8,
                 attention_head_dim=8)


@pytest.fixture(scope='module')
def labels():
    from sklearn.datasets import load_digits
    return load_digits().target


# ---------------------------------------------------------------------- splits
def test_split_sizes_disjoint_and_deterministic(labels):
    train = digits_split_indices(labels, 'train')
    test = digits_split_indices(labels, 'test')
    assert (len(train), len(test)) == (1197, 600)
    assert not set(train) & set(test)
    assert sorted(set(train) | set(test)) == list(range(len(labels)))
    np.testing.assert_array_equal(train, digits_split_indices(labels, 'train', split_seed=0))
    np.testing.assert_array_equal(test, digits_split_indices(labels, 'test'))
    assert not np.array_equal(test, digits_split_indices(labels, 'test', split_seed=1))


def test_split_is_stratified(labels):
    test = digits_split_indices(labels, 'test')
    counts = np.bincount(labels, minlength=10)
    test_counts = np.bincount(labels[test], minlength=10)
    assert test_counts.sum() == 600
    np.testing.assert_allclose(test_counts, 600 * counts / counts.sum(), atol=1)


def test_labelled_per_class(labels):
    train = set(digits_split_indices(labels, 'train'))
    five = digits_split_indices(labels, 'train', labelled_per_class=5)
    ten = digits_split_indices(labels, 'train', labelled_per_class=10)
    assert np.bincount(labels[ten], minlength=10).tolist() == [10] * 10
    assert set(ten) <= train
    assert set(five) <= set(ten)  # nested for one subset_seed
    np.testing.assert_array_equal(ten, digits_split_indices(labels, 'train',
                                                            labelled_per_class=10))
    other = digits_split_indices(labels, 'train', labelled_per_class=10, subset_seed=1)
    assert set(other) <= train and not np.array_equal(ten, other)


@pytest.mark.parametrize('kwargs, message', [
    (dict(split='val'), 'not one of'),
    (dict(split='test', labelled_per_class=5), 'train split'),
    (dict(split='train', labelled_per_class=1000), 'must be between'),
    (dict(split='train', labelled_per_class=0), 'must be between'),
    (dict(split='train', test_size=0), 'test_size'),
])
def test_bad_split_arguments(labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        digits_split_indices(labels, **kwargs)
    with pytest.raises(ValueError, match=message):
        DigitsDataset(**kwargs)


# ---------------------------------------------------------------------- the dataset
def test_dataset_items_follow_mmpretrain_conventions():
    ds = DigitsDataset(split='test', image_size=32, pipeline=[dict(type='PackInputs')])
    assert len(ds) == 600
    assert ds.metainfo['classes'] == tuple('0123456789')
    info = ds.get_data_info(0)
    img = info['img']
    assert img.dtype == np.uint8 and img.shape == (32, 32, 3)
    assert info['img_shape'] == info['ori_shape'] == (32, 32)
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 0] == img[..., 2]).all()
    assert img.max() > 200 and img.min() == 0
    assert sorted(set(ds.get_gt_labels().tolist())) == list(range(10))

    packed = ds[0]
    assert packed['inputs'].shape == (3, 32, 32) and packed['inputs'].dtype == torch.uint8
    assert int(packed['data_samples'].gt_label) == info['gt_label']

    # the samples work with mmpretrain's Accuracy metric
    from mmpretrain.evaluation import Accuracy
    metric = Accuracy(topk=(1, ))
    samples = []
    for i in range(4):
        sample = ds[i]['data_samples']
        scores = torch.zeros(10)
        scores[int(sample.gt_label)] = 1.0
        samples.append(sample.set_pred_score(scores).to_dict())
    metric.process(None, samples)
    assert metric.compute_metrics(metric.results)['top1'] == 100.0


def test_dataset_subset_and_native_size():
    ds = DigitsDataset(split='train', labelled_per_class=3, image_size=8, interpolation='nearest')
    assert len(ds) == 30
    assert np.bincount(ds.get_gt_labels(), minlength=10).tolist() == [3] * 10
    from sklearn.datasets import load_digits
    info = ds.get_data_info(0)
    original = load_digits().images[info['digits_index']]
    np.testing.assert_array_equal(info['img'][..., 0], np.round(original * 255 / 16))
    big = upsample_digits(original[None], 32, 'nearest')[0, ..., 0]
    np.testing.assert_array_equal(big[::4, ::4], info['img'][..., 0])


# ---------------------------------------------------------------------- the DDPM trainer
def _tiny_trainer(**kwargs):
    torch.manual_seed(0)
    return DDPMTrainer(unet=TINY_UNET, **kwargs)


def _digit_batch(n=8, size=16):
    ds = DigitsDataset(split='train', image_size=size, indices=n,
                       pipeline=[dict(type='PackInputs')])
    items = [ds[i] for i in range(n)]
    return dict(inputs=[it['inputs'] for it in items],
                data_samples=[it['data_samples'] for it in items])


def test_ddpm_trainer_loss_decreases():
    model = _tiny_trainer(ema_decay=0.9)
    optim = OptimWrapper(torch.optim.AdamW(model.unet.parameters(), lr=3e-3))
    data = _digit_batch()
    torch.manual_seed(0)
    losses = [model.train_step(data, optim)['loss'].item() for _ in range(20)]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    assert int(model.ema_steps) == 20
    # the EMA lags behind the trained weights
    ema, raw = model.ema_unet.conv_in.weight, model.unet.conv_in.weight
    assert not torch.equal(ema, raw)
    assert torch.equal(model.export_unet().conv_in.weight, ema)
    assert not model.export_unet().conv_in.weight.requires_grad


def test_ddpm_trainer_preprocessing_and_modes():
    model = _tiny_trainer(ema_decay=None)
    data = model.data_preprocessor(_digit_batch(2), True)
    assert data['inputs'].min() >= -1 and data['inputs'].max() <= 1
    assert data['inputs'].min() == -1  # background 0 -> -1
    assert set(model(data['inputs'], mode='loss')) == {'loss'}
    assert model(data['inputs'], mode='tensor').shape == data['inputs'].shape
    assert model(data['inputs'], data['data_samples'], mode='predict') == data['data_samples']
    assert model.ema_unet is None
    assert torch.equal(model.export_unet().conv_in.weight, model.unet.conv_in.weight)
    with pytest.raises(ValueError, match='remove it from model.scheduler'):
        DDPMTrainer(unet=TINY_UNET, scheduler=dict(prediction_type='v_prediction'))


def test_ddpm_trainer_v_prediction_targets_velocity_and_exports_it():
    torch.manual_seed(0)
    model = _tiny_trainer(prediction_type='v_prediction')
    x0 = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.manual_seed(2)
    loss = model.loss(x0)['loss']
    torch.manual_seed(2)
    x_t, t, eps = model.noisy_batch(x0)
    abar = model.noise_scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    velocity = abar.sqrt() * eps - (1 - abar).sqrt() * x0  # Salimans & Ho's v, by hand
    with torch.no_grad():
        expected = ((model.unet(x_t, t).sample - velocity) ** 2).mean()
        eps_loss = ((model.unet(x_t, t).sample - eps) ** 2).mean()
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert float(expected) != pytest.approx(float(eps_loss), rel=1e-3)  # not the eps target
    assert model.export_pipeline().scheduler.config.prediction_type == 'v_prediction'
    assert _tiny_trainer().export_pipeline().scheduler.config.prediction_type == 'epsilon'
    with pytest.raises(ValueError, match="prediction_type='x0'; expected one of"):
        _tiny_trainer(prediction_type='x0')


# ---------------------------------------------------------------------- the export hook
def _trained(steps=3):
    model = _tiny_trainer(ema_decay=0.9)
    optim = OptimWrapper(torch.optim.AdamW(model.unet.parameters(), lr=1e-3))
    data = _digit_batch(4)
    for _ in range(steps):
        model.train_step(data, optim)
    return model


def _fake_runner(model, work_dir):
    return SimpleNamespace(model=model, hooks=[], work_dir=str(work_dir),
                           logger=MMLogger.get_current_instance())


def test_export_hook_writes_a_teacher_folder(tmp_path):
    from common.teachers import DiffusionTeacher
    model = _trained()
    hook = ExportDiffusersPipelineHook(num_samples=4, sample_steps=2)
    hook.after_train(_fake_runner(model, tmp_path))
    folder = tmp_path / 'pipeline'
    assert sorted(os.listdir(folder)) == ['model_index.json', 'scheduler', 'unet']
    assert (tmp_path / 'samples.png').is_file()
    assert sorted(os.listdir(tmp_path)) == ['pipeline', 'samples.png']  # no temporary leftovers
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o777 & ~umask  # not mkdtemp's private 0700

    teacher = DiffusionTeacher(pretrained=str(folder), layers=['mid_block.resnets.1.conv2'],
                               timesteps=[100])
    exported = teacher.unet.state_dict()
    for name, value in model.ema_unet.state_dict().items():
        assert torch.equal(exported[name], value), name
    assert not torch.equal(exported['conv_in.weight'], model.unet.conv_in.weight)
    feats = teacher(torch.zeros(2, 3, 16, 16))
    assert feats['mid_block.resnets.1.conv2@100'].shape == (2, 16, 8, 8)

    # exporting again replaces the folder
    model.update_ema()
    hook.after_train(_fake_runner(model, tmp_path))
    again = DiffusionTeacher(pretrained=str(folder), layers=['conv_in'], timesteps=[0])
    assert torch.equal(again.unet.conv_in.weight, model.ema_unet.conv_in.weight)
    assert sorted(os.listdir(tmp_path)) == ['pipeline', 'samples.png']


@pytest.mark.parametrize('existing', [False, True])
def test_failed_export_leaves_no_half_written_folder(tmp_path, monkeypatch, existing):
    from diffusers import DDPMPipeline
    out = tmp_path / 'teacher'
    if existing:
        out.mkdir()
        (out / 'old.txt').write_text('previous export')

    def broken_save(self, save_directory, **kwargs):
        os.makedirs(osp.join(save_directory, 'unet'))
        with open(osp.join(save_directory, 'unet', 'config.json'), 'w') as f:
            f.write('{"half": ')
        raise OSError('disk full')

    monkeypatch.setattr(DDPMPipeline, 'save_pretrained', broken_save)
    hook = ExportDiffusersPipelineHook(out_dir=str(out), num_samples=0)
    with pytest.raises(OSError, match='disk full'):
        hook.after_train(_fake_runner(_trained(1), tmp_path))
    if existing:
        assert sorted(os.listdir(tmp_path)) == ['teacher']
        assert os.listdir(out) == ['old.txt']
        assert (out / 'old.txt').read_text() == 'previous export'
    else:
        assert os.listdir(tmp_path) == []


def test_export_refuses_to_replace_a_file(tmp_path):
    target = tmp_path / 'pipeline'
    target.write_text('not a folder')
    with pytest.raises(FileExistsError, match='not a folder'):
        save_pipeline_atomically(_trained(1).export_pipeline(), target)
    assert target.read_text() == 'not a folder'
    assert os.listdir(tmp_path) == ['pipeline']


def test_demo_config_trains_and_exports_with_the_runner(tmp_path):
    """The demo teacher config, shrunk (tiny UNet, 8 images, 1 epoch), through mmengine's Runner."""
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config.fromfile(DEMO_CFG)
    cfg.merge_from_dict({
        'model.unet': TINY_UNET,
        'train_dataloader.batch_size': 4,
        'train_dataloader.dataset.image_size': 16,
        'train_dataloader.dataset.indices': 8,
        'train_cfg.max_epochs': 1,
        'param_scheduler': [dict(type='ConstantLR', factor=1.0, by_epoch=False)],
        'custom_hooks': [dict(type='ExportDiffusersPipelineHook', num_samples=2,
                              sample_steps=2)],
    })
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = runner.model
    assert int(model.ema_steps) == 2
    from common.teachers import DiffusionTeacher
    teacher = DiffusionTeacher(pretrained=str(tmp_path / 'pipeline'),
                               layers=['mid_block.resnets.1.conv2'], timesteps=[100])
    assert torch.equal(teacher.unet.conv_out.weight, model.ema_unet.conv_out.weight)
    assert (tmp_path / 'samples.png').is_file() and (tmp_path / 'epoch_1.pth').is_file()
