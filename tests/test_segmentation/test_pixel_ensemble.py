"""The batched pixel-MLP ensemble, its training rule, its prediction, the ddpm-seg mIoU and the
segmentor: numbers against plain torch modules and hand computations."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

# (importing segmentation.* runs segmentation/__init__: common's mmcv-lite stand-in first)
from segmentation.evaluation.ddpm_seg_metric import DDPMSegMIoU, IoUInputError, compute_iou
from segmentation.models.diffusion_pixel_segmentor import DiffusionPixelSegmentor
from segmentation.models.pixel_ensemble import (EarlyStopping, EnsembleConfigError,
                                                PixelMLPEnsemble, image_uncertainty,
                                                predict_labels, train_ensemble)


def _plain_mlp(d, hidden, c):
    h1, h2 = hidden
    seq = nn.Sequential(nn.Linear(d, h1), nn.ReLU(), nn.BatchNorm1d(h1), nn.Linear(h1, h2),
                        nn.ReLU(), nn.BatchNorm1d(h2), nn.Linear(h2, c))
    with torch.no_grad():  # non-trivial BN affine parameters and statistics
        for bn in (seq[2], seq[5]):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
            bn.running_mean.uniform_(-0.1, 0.1)
            bn.running_var.uniform_(0.5, 2.0)
    return seq


def test_hidden_sizes_init_and_registry():
    from mmengine.registry import MODELS
    small = MODELS.build(dict(type='PixelMLPEnsemble', in_dim=12, num_classes=29, num_models=3))
    large = PixelMLPEnsemble(12, 30, num_models=2)
    assert small.hidden == (128, 32) and large.hidden == (256, 128)
    assert tuple(small.fc1.weight.shape) == (3, 128, 12)
    assert tuple(large.fc3.weight.shape) == (2, 30, 128)
    torch.manual_seed(0)
    big = PixelMLPEnsemble(400, 34, num_models=10)
    assert abs(big.fc1.weight.std().item() - 0.02) < 0.001
    assert abs(big.fc1.weight.mean().item()) < 0.001
    assert big.fc1.bias.abs().max() == 0 and big.fc3.bias.abs().max() == 0
    with pytest.raises(EnsembleConfigError, match=r"hidden=\(128,\) is not understood"):
        PixelMLPEnsemble(12, 5, hidden=(128, ))
    with pytest.raises(EnsembleConfigError, match=r'input of shape \(4, 7\); expected \[P, 12\]'):
        small(torch.zeros(4, 7))


def test_batched_equals_plain_sequential_train_and_eval():
    torch.manual_seed(0)
    d, c, m_count = 9, 5, 3
    ens = PixelMLPEnsemble(d, c, num_models=m_count, hidden=(8, 4))
    plains = [_plain_mlp(d, (8, 4), c) for _ in range(m_count)]
    for m, seq in enumerate(plains):
        ens.load_sequential(m, seq)
    x = torch.randn(16, d)
    # eval mode: running statistics
    ens.eval()
    out = ens(x)
    for m, seq in enumerate(plains):
        torch.testing.assert_close(out[m], seq.eval()(x), rtol=1e-5, atol=1e-5)
    # train mode: batch statistics, and the running statistics updated the same way
    ens.train()
    out = ens(x)
    for m, seq in enumerate(plains):
        torch.testing.assert_close(out[m], seq.train()(x), rtol=1e-5, atol=1e-5)
        back = ens.sequential(m)
        for theirs, mine in ((seq[2], back[2]), (seq[5], back[5])):
            torch.testing.assert_close(mine.running_mean, theirs.running_mean)
            torch.testing.assert_close(mine.running_var, theirs.running_var)
            assert int(mine.num_batches_tracked) == int(theirs.num_batches_tracked) == 1
    # a model kept out (active=False) keeps its statistics
    before = ens.bn1.running_mean.clone()
    ens(torch.randn(16, d), active=torch.tensor([True, False, True]))
    assert torch.equal(ens.bn1.running_mean[1], before[1])
    assert not torch.equal(ens.bn1.running_mean[0], before[0])
    # sequential() round trip gives the same outputs
    ens.eval()
    torch.testing.assert_close(ens.sequential(2).eval()(x), ens(x)[2], rtol=1e-5, atol=1e-5)


def test_early_stopping_rule_on_hand_made_losses():
    stopper = EarlyStopping(1, patience=2, start_epoch=1)
    # epoch 0 is not looked at (even a huge loss)
    assert not stopper.update(0, [5.0]).any()
    # epoch 1: 3.0 best (count 0), 3.0 not better (1), 2.0 best (0), 2.5 (1), 2.0 (2), 2.1 (3 > 2)
    steps = [3.0, 3.0, 2.0, 2.5, 2.0, 2.1]
    stopped_at = [i for i, loss in enumerate(steps) if stopper.update(1, [loss]).any()]
    assert stopped_at == [5]
    assert stopper.best.item() == 2.0 and stopper.stopped.item()
    # per model: the second model keeps improving and never stops; a stopped one stays stopped
    stopper = EarlyStopping(2, patience=0, start_epoch=0)
    assert stopper.update(0, [1.0, 1.0]).tolist() == [False, False]
    assert stopper.update(0, [1.0, 0.5]).tolist() == [True, False]
    assert stopper.update(0, [0.1, 0.4]).tolist() == [False, False]
    assert stopper.stopped.tolist() == [True, False] and stopper.best.tolist() == [1.0, 0.4]


def test_train_ensemble_trains_each_model_as_if_alone():
    torch.manual_seed(0)
    d, c = 6, 3
    x = torch.randn(8 * 4, d)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, len(x), 8)]
    ens = PixelMLPEnsemble(d, c, num_models=2, hidden=(8, 4))
    plain = [ens.sequential(m).train() for m in range(2)]
    # model 0 trained alone with Adam on the same batches, 2 epochs
    opt = torch.optim.Adam(plain[0].parameters(), lr=1e-2)
    for _ in range(2):
        for xb, yb in batches:
            opt.zero_grad()
            F.cross_entropy(plain[0](xb), yb).backward()
            opt.step()
    # start_epoch beyond the run: no early stopping, 2 epochs of 4 batches
    result = train_ensemble(ens, batches, lr=1e-2, max_epochs=2, patience=10**6, start_epoch=99)
    assert result['iterations'] == 8 and not result['stopped'].any()
    for key, value in plain[0].state_dict().items():
        torch.testing.assert_close(ens.sequential(0).state_dict()[key], value, rtol=1e-4,
                                   atol=1e-6)
    # patience=-1: every model stops after its first checked iteration and is then frozen
    ens2 = PixelMLPEnsemble(d, c, num_models=2, hidden=(8, 4))
    result = train_ensemble(ens2, batches, lr=1e-2, max_epochs=3, patience=-1, start_epoch=0)
    assert result['stopped'].all() and result['stop_iter'].tolist() == [1, 1]
    assert result['iterations'] == 1
    # batches from a callable, called once per epoch
    calls = []

    def epoch_batches(epoch):
        calls.append(epoch)
        return batches

    train_ensemble(PixelMLPEnsemble(d, c, num_models=2, hidden=(8, 4)), epoch_batches,
                   max_epochs=2, start_epoch=99)
    assert calls == [0, 1]


def test_train_ensemble_freezes_a_stopped_model_while_others_train(monkeypatch):
    torch.manual_seed(1)
    d, c = 5, 2
    x = torch.randn(40, d)
    y = (x[:, 0] > 0).long()
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 40, 8)]
    ens = PixelMLPEnsemble(d, c, num_models=3, hidden=(8, 4))
    import segmentation.models.pixel_ensemble as pe

    class HandStop(pe.EarlyStopping):
        """Model 1 stops after iteration 2, the others never."""

        def update(self, epoch, losses):
            self.calls = getattr(self, 'calls', 0) + 1
            newly = torch.zeros_like(self.stopped)
            if self.calls == 2:
                newly[1] = True
            self.stopped |= newly
            return newly

    monkeypatch.setattr(pe, 'EarlyStopping', HandStop)
    snapshots = {}
    ens_copy = PixelMLPEnsemble(d, c, num_models=3, hidden=(8, 4))
    ens_copy.load_state_dict(ens.state_dict())
    # the state of model 1 after two iterations, from a run of 2 iterations
    train_ensemble(ens_copy, batches[:2], lr=1e-2, max_epochs=1, patience=0, start_epoch=0)
    snapshots['after2'] = ens_copy.sequential(1).state_dict()
    result = train_ensemble(ens, batches, lr=1e-2, max_epochs=2, patience=0, start_epoch=0)
    assert result['stopped'].tolist() == [False, True, False]
    assert result['stop_iter'].tolist() == [-1, 2, -1] and result['iterations'] == 10
    for key, value in ens.sequential(1).state_dict().items():
        torch.testing.assert_close(value, snapshots['after2'][key])
    assert not torch.equal(ens.sequential(0).state_dict()['0.weight'],
                           ens_copy.sequential(0).state_dict()['0.weight'])


def test_predict_labels_against_hand_computation():
    # 3 models, 2 pixels, 3 classes; probabilities chosen by hand (logits = log p)
    p = torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]],
                      [[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]],
                      [[0.1, 0.8, 0.1], [0.3, 0.6, 0.1]]])
    vote, mean, js = predict_labels(p.log())
    assert vote.tolist() == [0, 1]  # pixel 0: argmax 0,0,1; pixel 1: 2,1,1
    torch.testing.assert_close(mean[0], torch.tensor([1.4, 1.3, 0.3]) / 3)

    def h(q):
        return -sum(v * math.log(v) for v in q)

    for pix in range(2):
        expected = h(mean[pix].tolist()) - sum(h(p[m, pix].tolist()) for m in range(3)) / 3
        assert js[pix].item() == pytest.approx(expected, rel=1e-5)
    # identical models: no disagreement
    _, _, js_same = predict_labels(p[:1].expand(4, -1, -1).log())
    torch.testing.assert_close(js_same, torch.zeros(2), atol=1e-6, rtol=0)
    # a tie (one vote each): as torch.mode resolves it
    tie = torch.eye(3)[None].expand(1, 3, 3).permute(1, 0, 2) * 5  # model m votes class m
    vote, _, _ = predict_labels(tie)
    assert vote.tolist() == torch.mode(torch.tensor([[0], [1], [2]]), dim=0).values.tolist()
    assert image_uncertainty(torch.arange(10.0), 0.2) == pytest.approx(8.5)
    with pytest.raises(EnsembleConfigError, match=r'expected \[M, P, C\]'):
        predict_labels(torch.zeros(2, 3))


def test_compute_iou_hand_example_absent_zero_vs_skip():
    # 4 classes, ignore_label 3; class 2 absent from both ground truth and prediction
    gt1 = np.array([[0, 0], [1, 3]])
    pr1 = np.array([[0, 1], [1, 1]])  # a class-1 prediction on the ignored pixel counts in U_1
    gt2 = np.array([[1, 1], [0, 0]])
    pr2 = np.array([[1, 0], [0, 0]])
    # class 0: I = 1 + 2 = 3, U = 2 + 3 = 5 -> 0.6; class 1: I = 1 + 1 = 2, U = 3 + 2 = 5 -> 0.4
    zero = compute_iou([pr1, pr2], [gt1, gt2], num_classes=4, ignore_label=3)
    assert zero['class_ids'] == [0, 1, 2] and zero['absent'] == [2]
    np.testing.assert_allclose(zero['IoU'], [3 / (5 + 1e-8), 2 / (5 + 1e-8), 0.0])
    assert zero['mIoU'] == pytest.approx((0.6 + 0.4 + 0) / 3)
    skip = compute_iou([pr1, pr2], [gt1, gt2], num_classes=4, ignore_label=3, absent='skip')
    assert skip['mIoU'] == pytest.approx(0.5)
    # torch inputs give the same; ignore label 255 outside the class range
    same = compute_iou([torch.tensor(pr1)], [torch.tensor(np.where(gt1 == 3, 255, gt1))],
                       num_classes=3, ignore_label=255)
    assert same['class_ids'] == [0, 1, 2]
    np.testing.assert_allclose(same['IoU'][:2], [1 / 2, 1 / 3], rtol=1e-7)
    with pytest.raises(IoUInputError, match=r"absent='none'; expected 'zero'"):
        compute_iou([pr1], [gt1], 4, 3, absent='none')
    with pytest.raises(IoUInputError, match=r'shape \(2, 2\) and a ground truth of shape \(1, 4\)'):
        compute_iou([pr1], [gt1.reshape(1, 4)], 4, 3)


def test_ddpm_seg_miou_metric_reports_both():
    from mmseg.registry import METRICS
    metric = METRICS.build(dict(type='DDPMSegMIoU', ignore_label=3))
    assert isinstance(metric, DDPMSegMIoU)
    metric.dataset_meta = dict(classes=('a', 'b', 'c', 'ignored'))
    pairs = [(np.array([[0, 1], [1, 1]]), np.array([[0, 0], [1, 3]])),
             (np.array([[1, 0], [0, 0]]), np.array([[1, 1], [0, 0]]))]
    samples = [dict(pred_sem_seg=dict(data=torch.tensor(p)[None]),
                    gt_sem_seg=dict(data=torch.tensor(g)[None])) for p, g in pairs]
    metric.process({}, samples)
    out = metric.compute_metrics(metric.results)
    assert out == dict(mIoU=33.33, mIoU_skip_absent=50.0)


class _StandInExtractor(nn.Module):
    """Native maps = two average-pooled views of the image; sampled by ``F.interpolate``."""

    dim = 6

    def native(self, images):
        return [F.avg_pool2d(images, 2), F.avg_pool2d(images, 4)]

    def upsampled(self, native, size):
        return torch.cat([F.interpolate(m, size=(size, size), mode='bilinear',
                                        align_corners=False) for m in native], 1)

    def sample(self, native, rows, cols, image_index=0):
        size = native[0].shape[-1] * 2
        return self.upsampled(native, size)[image_index, :, rows, cols].t()


def test_segmentor_predicts_vote_mean_softmax_and_js():
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    torch.manual_seed(0)
    seg = MODELS.build(dict(type='DiffusionPixelSegmentor', backbone=_StandInExtractor(),
                            num_classes=4, num_models=3, hidden=(8, 4), pixel_chunk=7))
    assert isinstance(seg, DiffusionPixelSegmentor)
    assert set(seg.state_dict()) == {k for k in seg.state_dict() if k.startswith('head.')}
    assert 'head.fc1.weight' in seg.state_dict()
    with torch.no_grad():  # give BN statistics that are not the identity
        seg.head.bn1.running_mean.uniform_(-0.01, 0.01)
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    samples = [SegDataSample(), SegDataSample()]
    samples[1].gt_sem_seg = PixelData(data=torch.zeros(1, 16, 16, dtype=torch.long))
    out = seg.predict(images, samples)
    ext = _StandInExtractor()
    feats = ext.upsampled(ext.native(images), 8)  # [2, 6, 8, 8]
    seg.head.eval()
    logits = seg.head(feats[0].reshape(6, -1).t())
    vote, mean, js = predict_labels(logits)
    assert torch.equal(out[0].pred_sem_seg.data[0], vote.view(8, 8))
    torch.testing.assert_close(out[0].seg_logits.data, mean.t().reshape(4, 8, 8))
    torch.testing.assert_close(out[0].js_uncertainty.data[0], js.view(8, 8))
    # resized nearest to the ground truth's 16x16
    logits1 = seg.head(feats[1].reshape(6, -1).t())
    vote1 = predict_labels(logits1)[0].view(8, 8)
    assert out[1].pred_sem_seg.data.shape == (1, 16, 16)
    assert torch.equal(out[1].pred_sem_seg.data[0], vote1.repeat_interleave(2, 0)
                       .repeat_interleave(2, 1))
    assert seg.encode_decode(images).shape == (2, 4, 8, 8)
    with pytest.raises(ValueError, match='PixelEnsembleTrainLoop'):
        seg.loss(images, samples)
    with pytest.raises(ValueError, match=r'expected a batch of square images'):
        seg.predict(torch.zeros(1, 3, 8, 6))
    with pytest.raises(ValueError, match=r"Identity has no `dim`; expected a PixelFeatureExtractor"):
        DiffusionPixelSegmentor(backbone=nn.Identity(), num_classes=3)


# ------------------------------------------------------------------------------------------------
# End to end: tools/train.py + tools/test.py on a tiny converted ADM and a tiny fake release
# ------------------------------------------------------------------------------------------------
TINY_ADM = dict(image_size=32, num_channels=32, channel_mult='1,1,2', num_res_blocks=1,
                attention_resolutions='16', num_head_channels=16, learn_sigma=True,
                resblock_updown=True, use_scale_shift_norm=True)
SIZE = 32
CAT_CONFIG = 'segmentation/configs/ddpm_seg/pixel-ensemble_adm-lsun-cat_1xb64-100e_cat-15.py'


def _load_tool(name):
    import importlib.util
    import os.path as osp
    import sys
    repo = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    key = f'difftools_{name}_tool'
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, osp.join(repo, 'tools', f'{name}.py'))
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key], repo


def _write_release(root, rng):
    """cat_15 with 3 train and 2 test 32-px images; masks of 4 classes in blocks (>= 20 px)."""
    from PIL import Image
    for split, count in (('train', 3), ('test', 2)):
        folder = root / 'cat_15' / 'real' / split
        folder.mkdir(parents=True)
        for i in range(count):
            mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
            mask[:, SIZE // 2:] = 1
            mask[SIZE // 2:, :SIZE // 2] = 2
            mask[rng.integers(0, 8):, :rng.integers(4, 10)] = 3
            mask[0, 0] = 255  # one ignored pixel
            image = rng.integers(0, 60, (SIZE, SIZE, 3)) + (mask[..., None] % 4) * 60
            Image.fromarray(image.astype(np.uint8)).save(folder / f'{i:03d}.png')
            np.save(folder / f'{i:03d}.npy', mask)


def test_train_and_test_tools_end_to_end(tmp_path):
    import json
    import os
    from common.io import load_checkpoint
    from common.teachers.convert import (convert_guided_diffusion, ddpm_scheduler_from_flags,
                                         save_pipeline_atomically)
    from segmentation.datasets.ddpm_seg import load_ddpm_seg_split
    from segmentation.pixel_features import PixelFeatureExtractor
    from tests.helpers.guided_diffusion_reference import reference_unet_from_flags
    torch.manual_seed(0)
    reference = reference_unet_from_flags(**TINY_ADM).eval()
    adm = str(tmp_path / 'adm')
    save_pipeline_atomically(convert_guided_diffusion(reference.state_dict(), TINY_ADM),
                             ddpm_scheduler_from_flags(1000, 'linear', learn_sigma=True), adm)
    _write_release(tmp_path / 'data', np.random.default_rng(0))
    pipeline = [dict(type='LoadImageFromFile', imdecode_backend='pillow'),
                dict(type='LoadNpyAnnotations'),
                dict(type='Resize', scale=(SIZE, SIZE), keep_ratio=False),
                dict(type='PackSegInputs')]
    train, repo = _load_tool('train')
    test, _ = _load_tool('test')
    config = tmp_path / 'tiny_cat.py'
    config.write_text(
        f"_base_ = [{os.path.join(repo, CAT_CONFIG)!r}]\n"
        f"model = dict(num_models=3, pixel_chunk=300, backbone=dict(blocks=[1, 3, 5], "
        f"steps=[50, 150], image_size={SIZE}, teacher=dict(pretrained={adm!r})))\n"
        f"pipeline = {pipeline!r}\n"
        f"train_dataloader = dict(dataset=dict(data_root={str(tmp_path / 'data')!r}, number=3, "
        "pipeline=pipeline))\n"
        f"test_dataloader = dict(dataset=dict(data_root={str(tmp_path / 'data')!r}, number=2, "
        "pipeline=pipeline))\n"
        "train_cfg = dict(max_epochs=2, sampler=dict(batch_size=64, pixels_per_image=256))\n"
        "default_hooks = dict(logger=dict(interval=1000))\n"
        "")
    work = str(tmp_path / 'work')
    train.main([str(config), '--work-dir', work])
    ckpt = os.path.join(work, 'epoch_1.pth')
    state = load_checkpoint(ckpt)['state_dict']
    assert sorted({k.split('.')[0] for k in state}) == ['head']
    assert tuple(state['head.fc1.weight'].shape)[:2] == (3, 128)
    stored = sorted(os.listdir(os.path.join(work, 'native_features', 'features', 'cat_15',
                                            'real', 'train')))
    assert stored == ['000.safetensors', '001.safetensors', '002.safetensors']
    show = str(tmp_path / 'show')
    # a visualizer of its own: an earlier in-process run's instance would keep its save_dir
    metrics = test.main([str(config), ckpt, '--work-dir', work, '--show-dir', show,
                         '--cfg-options', f'visualizer.name=ddpm_seg_show_{tmp_path.name}'])
    assert set(metrics) == {'mIoU', 'mIoU_skip_absent'}
    overlays = [f for _, _, files in os.walk(show) for f in files if f.endswith('.png')]
    assert len(overlays) == 2
    # independent recomputation: F.interpolate of the native maps, the checkpoint's three MLPs
    # as plain nn.Sequential, torch.mode vote, compute_iou (absent classes 0, ignore 255)
    ext = PixelFeatureExtractor(dict(pretrained=adm), blocks=[1, 3, 5], steps=[50, 150], seed=0,
                                image_size=SIZE)
    ens = PixelMLPEnsemble(ext.dim, 15, num_models=3)
    ens.load_state_dict({k[len('head.'):]: v for k, v in state.items()})
    plains = [ens.sequential(m).eval() for m in range(3)]
    items = load_ddpm_seg_split(str(tmp_path / 'data'), 'cat_15', 'test', number=2,
                                image_size=SIZE)
    preds = []
    for item in items:
        x = torch.from_numpy(item['image']).permute(2, 0, 1)[None].float() / 127.5 - 1
        feats = torch.cat([F.interpolate(m, size=(SIZE, SIZE), mode='bilinear',
                                         align_corners=False) for m in ext.native(x)], 1)
        flat = feats[0].reshape(ext.dim, -1).t()
        with torch.no_grad():
            votes = torch.stack([p(flat).argmax(1) for p in plains])
        preds.append(torch.mode(votes, dim=0).values.view(SIZE, SIZE).numpy())
    expected = compute_iou(preds, [it['mask'] for it in items], 15, 255)
    assert metrics['mIoU'] == pytest.approx(round(expected['mIoU'] * 100, 2), abs=0.3)
    skip = compute_iou(preds, [it['mask'] for it in items], 15, 255, absent='skip')
    assert metrics['mIoU_skip_absent'] == pytest.approx(round(skip['mIoU'] * 100, 2), abs=0.3)
    # a second training run finds every image's features in the store
    before = {f: os.path.getmtime(os.path.join(work, 'native_features', 'features', 'cat_15',
                                               'real', 'train', f)) for f in stored}
    train.main([str(config), '--work-dir', work])
    after = {f: os.path.getmtime(os.path.join(work, 'native_features', 'features', 'cat_15',
                                              'real', 'train', f)) for f in stored}
    assert before == after
    assert json.loads(json.dumps(metrics)) == metrics


@pytest.mark.parametrize('name,classes,ignore,teacher', [
    ('bedroom-28', 29, 0, 'lsun-bedroom'), ('ffhq-34', 34, 255, 'ffhq'),
    ('cat-15', 15, 255, 'lsun-cat'), ('horse-21', 21, 255, 'lsun-horse'),
    ('celeba-19', 19, 255, 'ffhq'), ('ade-bedroom-30', 30, 255, 'lsun-bedroom')])
def test_dataset_configs(name, classes, ignore, teacher):
    import glob
    import os.path as osp
    from mmengine.config import Config
    from segmentation.datasets.ddpm_seg import DDPM_SEG_DATASETS
    _, repo = _load_tool('train')
    paths = sorted(glob.glob(osp.join(repo, 'segmentation', 'configs', 'ddpm_seg',
                                      f'pixel-ensemble_*_{name}.py')))
    for path in paths:
        cfg = Config.fromfile(path)
        key = name.replace('-', '_')
        info = DDPM_SEG_DATASETS[key]
        assert cfg.model.num_classes == classes == info.number_class
        assert cfg.test_evaluator.ignore_label == ignore == info.ignore_label
        assert cfg.model.backbone.teacher.pretrained == f'checkpoints/adm-{teacher}'
        assert cfg.train_dataloader.dataset.name == cfg.test_dataloader.dataset.name == key
        assert (cfg.train_dataloader.dataset.split, cfg.test_dataloader.dataset.split) == (
            'train', 'test')
        assert (cfg.train_cfg.max_epochs, cfg.train_cfg.patience, cfg.train_cfg.start_epoch,
                cfg.train_cfg.sampler.batch_size, cfg.optim_wrapper.optimizer.lr) == (
                    100, 50, 4, 64, 1e-3)
        assert cfg.model.num_models == 10
        paper = 'paper' in path
        assert cfg.model.backbone.blocks == ([6, 7, 8, 9] if paper else [5, 6, 7, 8, 12])
        assert cfg.model.backbone.steps == ([50, 150, 250, 350] if paper else [50, 150, 250])
    assert len(paths) == (2 if name == 'bedroom-28' else 1)
