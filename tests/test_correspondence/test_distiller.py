"""CorrespondenceDistiller: the training losses against independent computations, the teacher
held outside the checkpoint, precomputed teacher features, keypoint supervision, and the
student checkpoint read back by a plain CorrespondenceModel."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import correspondence  # noqa: F401  registers the models
from correspondence.geometry import pixels_to_grid
from correspondence.matching import sample_descriptors
from correspondence.models import (BackboneStudent, CorrespondenceDistiller, CorrespondenceModel,
                                   KeypointCELoss, SimilarityDistillLoss, SoftArgmaxMSELoss)

SIZE = 16
BACKBONE = dict(type='mmpretrain.ResNet_CIFAR', depth=18, stem_channels=8, base_channels=8,
                num_stages=2, strides=(1, 2), dilations=(1, 1), out_indices=(1, ))


class FixedTeacher(torch.nn.Module):
    """A frozen 'teacher' whose features are a fixed random projection of 4x4-pooled pixels."""

    def __init__(self, channels=6):
        super().__init__()
        self.proj = torch.nn.Conv2d(3, channels, 1)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(0))
        torch.nn.init.zeros_(self.proj.bias)
        self.calls = 0

    def forward(self, images, categories=None):
        self.calls += 1
        return self.proj(F.avg_pool2d(images, 4))


def student():
    return BackboneStudent(BACKBONE, seed=0, normalize=False)


def batch(n=2, kps=((3.0, 4.0), (10.0, 12.0), (7.5, 2.5)), seed=0):
    g = torch.Generator().manual_seed(seed)
    images = {side: (torch.rand(n, 3, SIZE, SIZE, generator=g) * 255).to(torch.uint8)
              for side in ('src', 'trg')}
    samples = []
    for i in range(n):
        k = np.asarray(kps[:len(kps) - i], dtype=np.float32)  # pairs with 3 and 2 keypoints
        samples.append(dict(pair_id=str(i), category='cat', src_kps=k, trg_kps=k[:, ::-1].copy(),
                            src_imsize=(SIZE, SIZE), trg_imsize=(SIZE, SIZE)))
    return dict(inputs=images, data_samples=samples)


def flat(feat):
    return feat.flatten(2).transpose(1, 2)


def cos(a, b):
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).transpose(1, 2)


def test_teacher_loss_equals_an_independent_computation():
    torch.manual_seed(0)
    teacher = FixedTeacher()
    model = CorrespondenceDistiller(student(), teacher=teacher,
                                    sampler=dict(type='PointSampler', method='full'),
                                    loss=dict(type='SimilarityDistillLoss', kind='kl',
                                              temperature=0.1))
    data = model.data_preprocessor(batch(), training=True)
    loss = model(**data, mode='loss')['loss']
    # by hand: student maps, teacher maps resized to the student's 8x8 grid, KL per source cell
    src, trg = data['inputs']['src'], data['inputs']['trg']
    s = model.extractor(torch.cat([src, trg]))
    t = F.interpolate(teacher(torch.cat([src, trg])), size=s.shape[-2:], mode='bilinear',
                      align_corners=False)
    n = len(src)
    log_p = torch.log_softmax(cos(flat(s[:n]), flat(s[n:])) / 0.1, dim=-1)
    q = torch.softmax(cos(flat(t[:n]), flat(t[n:])) / 0.1, dim=-1)
    expected = (q * (q.log() - log_p)).sum(-1).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert all(p.grad is not None for p in model.extractor.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_teacher_is_outside_the_checkpoint_which_a_plain_model_reads():
    teacher = FixedTeacher()
    model = CorrespondenceDistiller(student(), teacher=teacher)
    assert all(k.startswith('extractor.') for k in model.state_dict())
    assert not any(p is q for p in model.parameters() for q in teacher.parameters())
    data = model.data_preprocessor(batch(), training=True)
    optim = torch.optim.SGD(model.parameters(), lr=0.5)
    model(**data, mode='loss')['loss'].backward()
    optim.step()
    plain = CorrespondenceModel(student())
    plain.load_state_dict(model.state_dict(), strict=True)
    model.eval(), plain.eval()
    test = batch(seed=1)
    with torch.no_grad():
        a = model.test_step(test)
        b = plain.test_step(test)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x['pred_kps'], y['pred_kps'])
    # the moved teacher follows the model, and train() keeps it in eval mode
    model.train()
    assert not teacher.training


def test_teacher_config_is_built_lazily_and_precomputed_features_skip_it():
    teacher_cfg = dict(type='PixelExtractor', size=(4, 4))
    model = CorrespondenceDistiller(student(), teacher=teacher_cfg,
                                    loss=dict(type='SimilarityDistillLoss', kind='mse'))
    assert model._teacher is None
    data = model.data_preprocessor(batch(), training=True)
    online = model(**data, mode='loss')['loss']
    assert model._teacher is not None and not model._teacher.training
    # the same features, precomputed into the samples: the same loss, and no teacher needed
    pooled = F.adaptive_avg_pool2d(torch.cat([data['inputs']['src'], data['inputs']['trg']]),
                                   (4, 4))
    pre = CorrespondenceDistiller(student(), teacher=None,
                                  loss=dict(type='SimilarityDistillLoss', kind='mse'))
    for i, sample in enumerate(data['data_samples']):
        sample['src_teacher'] = pooled[i]
        sample['trg_teacher'] = pooled[len(data['data_samples']) + i]
    torch.testing.assert_close(pre(**data, mode='loss')['loss'], online)
    data['data_samples'][0].pop('trg_teacher')
    with pytest.raises(ValueError, match='some samples of this batch carry precomputed'):
        pre(**data, mode='loss')
    for sample in data['data_samples']:
        sample.pop('src_teacher', None)
        sample.pop('trg_teacher', None)
    with pytest.raises(ValueError, match='has no teacher'):
        pre(**data, mode='loss')


def test_random_sampling_is_seeded_and_padded_rows_are_ignored():
    def run(seed):
        model = CorrespondenceDistiller(
            student(), teacher=FixedTeacher(), seed=seed,
            sampler=dict(type='PointSampler', method='random', num_points=5),
            loss=dict(type='SimilarityDistillLoss', kind='ce', temperature=0.05))
        return model(**model.data_preprocessor(batch(), training=True), mode='loss')['loss']
    torch.testing.assert_close(run(3), run(3))
    assert not torch.allclose(run(3), run(4))


def test_symmetric_keypoint_ce_equals_a_hand_computation():
    model = CorrespondenceDistiller(student(), supervision='keypoints',
                                    loss=dict(type='KeypointCELoss', temperature=0.07,
                                              symmetric=True))
    data = model.data_preprocessor(batch(), training=True)
    loss = model(**data, mode='loss')['loss']
    src, trg = data['inputs']['src'], data['inputs']['trg']
    s = model.extractor(torch.cat([src, trg]))
    n, (h, w) = len(src), s.shape[-2:]
    terms = []
    for i, sample in enumerate(data['data_samples']):
        for a, b, fa, fb in ((sample['src_kps'], sample['trg_kps'], s[i], s[n + i]),
                             (sample['trg_kps'], sample['src_kps'], s[n + i], s[i])):
            a = torch.as_tensor(a)[None]
            desc = sample_descriptors(fa[None], a, (SIZE, SIZE))
            logits = cos(desc, flat(fb[None]))[0] / 0.07
            g = pixels_to_grid(torch.as_tensor(b, dtype=torch.float64), (h, w), (SIZE, SIZE))
            cells = (torch.floor(g[:, 1] + 0.5).clamp(0, h - 1) * w
                     + torch.floor(g[:, 0] + 0.5).clamp(0, w - 1)).long()
            terms.append((F.cross_entropy(logits, cells, reduction='none'), a.shape[1]))
    fwd = torch.cat([terms[0][0], terms[2][0]]).mean()
    bwd = torch.cat([terms[1][0], terms[3][0]]).mean()
    torch.testing.assert_close(loss, (fwd + bwd) / 2, rtol=1e-5, atol=1e-6)


def test_softargmax_mse_targets_are_the_target_keypoints_in_grid_units():
    loss_module = SoftArgmaxMSELoss(beta=1000.0, jitter=0.0)
    model = CorrespondenceDistiller(student(), supervision='keypoints', loss=loss_module)
    data = model.data_preprocessor(batch(n=1), training=True)
    loss = model(**data, mode='loss')['loss']
    src, trg = data['inputs']['src'], data['inputs']['trg']
    s = model.extractor(torch.cat([src, trg]))
    sample = data['data_samples'][0]
    desc = sample_descriptors(s[:1], torch.as_tensor(sample['src_kps'])[None], (SIZE, SIZE))
    sim = cos(desc, flat(s[1:]))
    pos = loss_module.expected_position(sim, tuple(s.shape[-2:]))
    target = pixels_to_grid(torch.as_tensor(sample['trg_kps'])[None], tuple(s.shape[-2:]),
                            (SIZE, SIZE))
    torch.testing.assert_close(loss, F.mse_loss(pos.double(), target.double()).float(),
                               rtol=1e-5, atol=1e-6)


def test_errors_name_the_problem():
    frozen = BackboneStudent(BACKBONE, frozen=True)
    with pytest.raises(ValueError, match='no parameter of the student'):
        CorrespondenceDistiller(frozen, teacher=FixedTeacher())
    with pytest.raises(ValueError, match='takes a loss of type SimilarityDistillLoss'):
        CorrespondenceDistiller(student(), loss=KeypointCELoss())
    with pytest.raises(ValueError, match='KeypointCELoss or SoftArgmaxMSELoss'):
        CorrespondenceDistiller(student(), supervision='keypoints', loss=SimilarityDistillLoss())
    with pytest.raises(ValueError, match="supervision='labels'"):
        CorrespondenceDistiller(student(), supervision='labels')
    model = CorrespondenceDistiller(student(), teacher=FixedTeacher())
    data = batch(n=2)
    data['inputs'] = {side: list(v) for side, v in data['inputs'].items()}
    data['inputs']['trg'][1] = data['inputs']['trg'][1][:, :8]
    with pytest.raises(ValueError, match='several sizes'):
        model(**model.data_preprocessor(data, training=True), mode='loss')
    kp = CorrespondenceDistiller(student(), supervision='keypoints', loss=KeypointCELoss())
    empty = batch(n=1)
    empty['data_samples'][0].update(src_kps=np.zeros((0, 2), np.float32),
                                    trg_kps=np.zeros((0, 2), np.float32))
    with pytest.raises(ValueError, match='without any keypoint'):
        kp(**kp.data_preprocessor(empty, training=True), mode='loss')


def test_another_config_loads_the_student_through_init_cfg(tmp_path):
    """The documented way a downstream config reuses a distilled student:
    ``init_cfg=dict(type='Pretrained', checkpoint=CKPT, prefix='extractor.')``."""
    import common  # noqa: F401  the safe Pretrained initializer
    model = CorrespondenceDistiller(student(), teacher=FixedTeacher())
    model(**model.data_preprocessor(batch(), training=True), mode='loss')['loss'].backward()
    with torch.no_grad():
        for p in model.extractor.parameters():
            p.add_(0.1 * torch.sign(p.grad))  # a trained student, not the seeded init
    ckpt = tmp_path / 'epoch_1.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(epoch=1)), ckpt)
    reused = BackboneStudent(BACKBONE, seed=5, normalize=False,
                             init_cfg=dict(type='Pretrained', checkpoint=str(ckpt),
                                           prefix='extractor.'))
    reused.init_weights()
    for key, value in model.extractor.state_dict().items():
        torch.testing.assert_close(reused.state_dict()[key], value)
