"""Generation evaluation: Fréchet distance, Inception Score, statistics files, the metric, the
feature extractors and tools/compute_fid_reference.py, with a tiny injected extractor (no
torch-fidelity needed except in the tests that say so)."""
import importlib.util
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from generation_dmd.evaluation import (ClassifierFeatureExtractor, FeatureExtractorError,
                                       FeatureStatistics, FrechetError, GenerationFeatureExtractor,
                                       GenerationMetric, GenerationMetricError,
                                       InceptionScoreAccumulator, frechet_distance,
                                       inception_score, load_reference_stats, save_reference_stats)
from generation_dmd.evaluation.sources import (ImageSourceError, PickleRefusedError,
                                               iter_image_batches)

# the metric tests do not need torch-fidelity; these few do (imported inside them: it is slow)
needs_torch_fidelity = pytest.mark.skipif(importlib.util.find_spec('torch_fidelity') is None,
                                          reason='torch-fidelity is not installed')


def random_spd(d, seed, scale=1.0):
    a = np.random.default_rng(seed).normal(size=(d, 2 * d))
    return scale * a @ a.T / (2 * d) + 0.1 * np.eye(d)


class TinyExtractor(GenerationFeatureExtractor):
    """A fixed random conv net (float64): 6 pooled conv features + 3 mean colours, 5 logits."""

    name = 'tiny-test-net'

    def __init__(self, batch_size=3):
        super().__init__(batch_size=batch_size, device='cpu')
        gen = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, 3)
        self.head = torch.nn.Linear(9, 5)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        self.double()

    def extract(self, images):
        x = images.double() / 127.5 - 1
        f = torch.cat([torch.relu(self.conv(x)).mean(dim=(2, 3)), x.mean(dim=(2, 3))], dim=1)
        return f, 4 * self.head(f)


def images_of(seed, n=24, shift=0):
    g = torch.Generator().manual_seed(seed)
    level = torch.randint(0, 150, (n, 3, 1, 1), generator=g)  # images differ in colour
    x = level + torch.randint(0, 100, (n, 3, 8, 8), generator=g) + shift
    return x.clamp(0, 255).to(torch.uint8)


# ------------------------------------------------------------------------- Fréchet distance
def test_frechet_distance_identical_zero_and_closed_forms():
    mu, sigma = np.arange(4.0), random_spd(4, 0)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-9
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 with s the standard deviations
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1, abs=1e-12)
    # diagonal: sum of the 1-D terms
    a, b = np.array([1.0, 2.0, 0.5]), np.array([4.0, 0.25, 0.5])
    expected = 1.0 ** 2 * 3 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(np.zeros(3), np.diag(a), np.ones(3), np.diag(b)) == pytest.approx(
        expected, rel=1e-12)


def test_frechet_distance_against_the_eigendecomposition_route():
    s1, s2 = random_spd(6, 1), random_spd(6, 2, scale=3.0)
    m1, m2 = np.random.default_rng(3).normal(size=(2, 6))
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(w)) @ v.T
    # tr((S1 S2)^1/2) = sum of sqrt(eigenvalues of S1^1/2 S2 S1^1/2), a symmetric matrix
    trace_root = np.sqrt(np.linalg.eigvalsh(root1 @ s2 @ root1)).sum()
    expected = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_root
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-10)
    # singular covariances (rank 1) still give a finite, non-negative distance
    u = np.ones((6, 1))
    assert frechet_distance(m1, u @ u.T, m1, u @ u.T) == pytest.approx(0, abs=1e-4)
    with pytest.raises(FrechetError, match=r'mu1 \(6,\), sigma1 \(6, 6\), mu2 \(4,\).*same '
                                           r'extractor'):
        frechet_distance(m1, s1, np.zeros(4), np.eye(4))


def test_feature_statistics_batches_merge_and_large_offsets():
    x = np.random.default_rng(0).normal(size=(50, 4)) * [1, 2, 3, 4] + 1e8  # huge mean
    stats = FeatureStatistics()
    for part in np.array_split(x, 7):
        stats.update(torch.from_numpy(part))
    mu, sigma = stats.mean_cov()
    centred = x - 1e8  # exact in float64 here (the offset is a power-of-two multiple)
    assert np.allclose(mu - 1e8, centred.mean(axis=0), atol=1e-7)
    assert np.allclose(sigma, np.cov(centred, rowvar=False), rtol=1e-9, atol=1e-9)
    naive = (x.T @ x - 50 * np.outer(x.mean(0), x.mean(0))) / 49  # what plain sums would give
    assert not np.allclose(naive, np.cov(centred, rowvar=False), rtol=1e-3)
    a, b = FeatureStatistics().update(x[:13]), FeatureStatistics().update(x[13:] + 0.0)
    merged_mu, merged_sigma = a.merge(b).mean_cov()
    assert np.allclose(merged_sigma, sigma, rtol=1e-9) and np.allclose(merged_mu, mu)
    with pytest.raises(FrechetError, match=r'features of shape \(2, 3\); expected \[N, 4\]'):
        stats.update(np.zeros((2, 3)))


# ------------------------------------------------------------------------- Inception Score
def test_inception_score_hand_made_cases():
    mean, std = inception_score(np.zeros((20, 7)), splits=4)  # uniform predictions
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0, abs=1e-12)
    confident = np.tile(np.eye(4) * 60.0, (3, 1))  # each split holds every class equally
    mean, std = inception_score(confident, splits=3)
    assert mean == pytest.approx(4.0, rel=1e-9) and std == pytest.approx(0, abs=1e-9)
    # two classes with p = (0.75, 0.25) and (0.25, 0.75): KL to (0.5, 0.5) = log 2 - H(0.75)
    p = np.log(np.array([[0.75, 0.25], [0.25, 0.75]]))
    h = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    assert inception_score(p, splits=1)[0] == pytest.approx(np.exp(np.log(2) - h), rel=1e-12)


def test_inception_score_accumulator_equals_split_arrays():
    logits = np.random.default_rng(1).normal(size=(30, 6)) * 3
    seeds = np.arange(30)
    acc = InceptionScoreAccumulator(3)
    for part in np.array_split(seeds, 4):  # any batching, split = seed % 3
        acc.update(logits[part], part % 3)
    order = np.concatenate([seeds[seeds % 3 == k] for k in range(3)])
    assert acc.result() == pytest.approx(inception_score(logits[order], splits=3), rel=1e-12)


@needs_torch_fidelity
def test_inception_score_equals_torch_fidelity():
    from torch_fidelity.metric_isc import isc_features_to_metric
    logits = torch.randn(40, 9, generator=torch.Generator().manual_seed(2)) * 2
    ref = isc_features_to_metric(logits, splits=4, shuffle=False)
    mean, std = inception_score(logits, splits=4)
    assert mean == pytest.approx(ref['inception_score_mean'], rel=1e-10)
    assert std == pytest.approx(ref['inception_score_std'], rel=1e-8)


# ------------------------------------------------------------------------- statistics files
def test_reference_stats_round_trip_and_foreign_files(tmp_path):
    mu, sigma = np.arange(3.0), random_spd(3, 4)
    path = save_reference_stats(tmp_path / 'ref.npz', mu, sigma, dict(count=7, extractor='x'))
    m, s, meta = load_reference_stats(path, with_metadata=True)
    assert np.array_equal(m, mu) and np.array_equal(s, sigma) and meta == dict(count=7,
                                                                               extractor='x')
    np.savez(tmp_path / 'edm.npz', mu=mu.astype(np.float32), sigma=sigma)  # EDM / pytorch-fid
    assert load_reference_stats(tmp_path / 'edm.npz', with_metadata=True)[2] == {}
    np.savez(tmp_path / 'keys.npz', mean=mu, cov=sigma)
    with pytest.raises(FrechetError, match=r"have the keys \['cov', 'mean'\]; expected mu \[D\] "
                                           r"and sigma \[D, D\].*missing \['mu', 'sigma'\]"):
        load_reference_stats(tmp_path / 'keys.npz')
    np.savez(tmp_path / 'obj.npz', mu=np.array([{'a': 1}], dtype=object), sigma=sigma)
    with pytest.raises(FrechetError, match=r'holds pickled objects \(never loaded\)'):
        load_reference_stats(tmp_path / 'obj.npz')
    np.savez(tmp_path / 'shape.npz', mu=mu, sigma=sigma[:2])
    with pytest.raises(FrechetError, match=r'mu has shape \(3,\) and sigma \(2, 3\)'):
        load_reference_stats(tmp_path / 'shape.npz')
    (tmp_path / 'cut.npz').write_bytes(open(path, 'rb').read()[:100])
    with pytest.raises(FrechetError, match='cannot be read as an .npz'):
        load_reference_stats(tmp_path / 'cut.npz')
    with pytest.raises(FrechetError, match=r'do not exist .*fid-refs/cifar10-32x32.npz'):
        load_reference_stats(tmp_path / 'missing.npz')


# ------------------------------------------------------------------------- the metric
def outputs_of(images, first_seed=0):
    return [dict(image=img, seed=first_seed + i, class_id=-1) for i, img in enumerate(images)]


def run_metric(metric, images, batch=5):
    outs = outputs_of(images)
    for start in range(0, len(outs), batch):
        metric.process({}, outs[start:start + batch])
    return metric.evaluate(len(outs))


def reference_file(tmp_path, images, name='ref.npz'):
    stats = FeatureStatistics().update(TinyExtractor()(images)['features'])
    return save_reference_stats(tmp_path / name, *stats.mean_cov(),
                                dict(count=len(images), extractor=TinyExtractor.name))


def test_metric_end_to_end_proxy_names_and_distances(tmp_path):
    images = images_of(0)
    ref = reference_file(tmp_path, images)
    metric = GenerationMetric(TinyExtractor(), reference_stats=ref, is_splits=2,
                              save_grid=str(tmp_path / 'grid.png'))
    same = run_metric(metric, images)
    assert set(same) == {'generation/proxy_FD', 'generation/proxy_IS', 'generation/proxy_IS_std',
                         'generation/not_comparable', 'generation/num_images',
                         'generation/feature_extractor'}
    assert abs(same['generation/proxy_FD']) < 1e-8  # the same images as the reference
    assert same['generation/num_images'] == 24
    assert same['generation/feature_extractor'] == 'tiny-test-net'
    note = same['generation/not_comparable']
    assert "'tiny-test-net' is not the protocol's Inception-v3" in note
    assert "24 images, not the protocol's 50000" in note
    grid = np.asarray(Image.open(tmp_path / 'grid.png'))
    assert grid.shape == (3 * 8, 8 * 8, 3)  # 24 images in 8 columns, by seed
    assert np.array_equal(grid[:8, 8:16], images[1].permute(1, 2, 0).numpy())
    fd = {shift: run_metric(metric, images_of(0, shift=shift))['generation/proxy_FD']
          for shift in (30, 60)}
    other = run_metric(metric, images_of(1))['generation/proxy_FD']  # another sample
    assert 0 < other < fd[30] < fd[60] and fd[60] > 4 * other
    # IS from the logits of the same extractor, splits by seed % 2
    out = TinyExtractor()(images)['logits'].double().numpy()
    acc = InceptionScoreAccumulator(2).update(out, np.arange(24) % 2)
    assert same['generation/proxy_IS'] == pytest.approx(acc.result()[0], rel=1e-12)
    assert same['generation/proxy_IS'] > 1.2  # the logits are not uniform


def test_metric_reference_from_images_equals_reference_file(tmp_path):
    images = images_of(2)
    gen = images_of(3)
    from_file = GenerationMetric(TinyExtractor(), reference_stats=reference_file(tmp_path, images),
                                 metrics=('FID', ), prefix='gen')
    from_images = GenerationMetric(TinyExtractor(), reference_images=images.permute(0, 2, 3, 1),
                                   metrics='FID', prefix='gen')
    a, b = run_metric(from_file, gen), run_metric(from_images, gen)
    assert a['gen/proxy_FD'] == pytest.approx(b['gen/proxy_FD'], rel=1e-10)
    assert a['gen/proxy_FD'] > 0 and 'gen/proxy_IS' not in a


def test_standard_names_only_for_the_protocol(tmp_path, monkeypatch):
    images = images_of(4, n=8)
    ref = reference_file(tmp_path, images)
    monkeypatch.setattr(TinyExtractor, 'standard', True)
    metric = GenerationMetric(TinyExtractor(), reference_stats=ref, standard_num_images=8,
                              is_splits=2)
    out = run_metric(metric, images)
    assert set(out) == {'generation/FID', 'generation/IS', 'generation/IS_std',
                        'generation/num_images', 'generation/feature_extractor'}
    noted = GenerationMetric(TinyExtractor(), reference_stats=ref, standard_num_images=8,
                             proxy_note='test split reference', is_splits=2)
    out = run_metric(noted, images)
    assert 'generation/FID' not in out
    assert out['generation/not_comparable'].endswith(': test split reference')
    fewer = run_metric(metric, images[:6])  # below standard_num_images again
    assert "6 images, not the protocol's 8" in fewer['generation/not_comparable']


def test_ranks_merge_to_the_single_process_result_dropping_sampler_padding(tmp_path):
    images = images_of(5, n=13)
    ref = reference_file(tmp_path, images_of(6, n=16))
    make = lambda: GenerationMetric(TinyExtractor(), reference_stats=ref, is_splits=3)  # noqa
    single = make()
    for out in outputs_of(images):
        single.process({}, [out])
    single.finalize_local(13)
    # mmengine's DefaultSampler, 3 ranks: the list [0..12, 0, 1] dealt out r::3, so the last
    # items of ranks 1 and 2 are padding (positions 13, 14)
    outs = outputs_of(images)
    padded = list(range(13)) + [0, 1]
    ranks = [make() for _ in range(3)]
    for r, metric in enumerate(ranks):
        mine = padded[r::3]
        for start in range(0, len(mine), 2):
            metric.process({}, [outs[i] for i in mine[start:start + 2]])
        metric.finalize_local(13, rank=r, world_size=3)
    merged = ranks[0].compute_metrics([m.local_state() for m in ranks])
    expected = single.compute_metrics([single.local_state()])
    assert merged['num_images'] == expected['num_images'] == 13
    for key in ('proxy_FD', 'proxy_IS', 'proxy_IS_std'):
        assert merged[key] == pytest.approx(expected[key], rel=1e-9)
    stats_a, _, _, _ = GenerationMetric.merge_states([m.local_state() for m in ranks])
    stats_b, _, _, _ = GenerationMetric.merge_states([single.local_state()])
    assert np.allclose(stats_a.mean_cov()[1], stats_b.mean_cov()[1], rtol=1e-10)


def test_metric_errors(tmp_path):
    with pytest.raises(FrechetError, match=r"'.*missing.npz' do not exist"):
        GenerationMetric(TinyExtractor(), reference_stats=str(tmp_path / 'missing.npz'))
    (tmp_path / 'bad.npz').write_bytes(b'not a zip')
    with pytest.raises(FrechetError, match='cannot be read as an .npz'):
        GenerationMetric(TinyExtractor(), reference_stats=str(tmp_path / 'bad.npz'))
    with pytest.raises(GenerationMetricError, match='FID needs exactly one of them'):
        GenerationMetric(TinyExtractor())
    with pytest.raises(GenerationMetricError, match=r"metrics=\('FID', 'KID'\); expected"):
        GenerationMetric(TinyExtractor(), reference_stats='x.npz', metrics=('FID', 'KID'))
    other = save_reference_stats(tmp_path / 'other.npz', np.zeros(9), np.eye(9),
                                 dict(extractor='inception-v3-compat'))
    with pytest.raises(GenerationMetricError, match=r"computed with the extractor "
                                                    r"'inception-v3-compat', but this metric "
                                                    r"uses 'tiny-test-net'"):
        GenerationMetric(TinyExtractor(), reference_stats=other)
    metric = GenerationMetric(TinyExtractor(), metrics='IS', num_images=10, is_splits=2)
    with pytest.raises(GenerationMetricError, match=r'delivered 8 images, but num_images=10'):
        run_metric(metric, images_of(7, n=8))
    with pytest.raises(FeatureExtractorError, match=r'got a torch.float32 tensor of shape '
                                                    r'\(2, 3, 8, 8\); expected torch.uint8'):
        metric.process({}, outputs_of(torch.zeros(2, 3, 8, 8)))


def test_metric_in_mmengine_evaluator_with_the_seeds_dataset(tmp_path):
    """Evaluator + DataLoader over GenerationSeedsDataset, as tools/test.py's loop calls them."""
    from mmengine.dataset import pseudo_collate
    from mmengine.evaluator import Evaluator

    from generation_dmd.datasets import GenerationSeedsDataset
    ds = GenerationSeedsDataset(12, num_classes=3, labels='balanced')
    loader = torch.utils.data.DataLoader(ds, batch_size=5, collate_fn=pseudo_collate)
    evaluator = Evaluator(dict(type='GenerationMetric', feature_extractor=TinyExtractor(),
                               reference_images=images_of(8, n=12), is_splits=2))
    evaluator.dataset_meta = ds.metainfo
    for batch in loader:  # a "generator": image of seed s = pixels from seed s
        outs = [dict(image=images_of(s, n=1)[0], seed=s, class_id=c)
                for s, c in zip(batch['seed'], batch['class_id'])]
        evaluator.process(outs, batch)
    result = evaluator.evaluate(len(ds))
    assert result['generation/num_images'] == 12 and result['generation/proxy_FD'] > 0


# ------------------------------------------------------------------------- extractors
class TinyClassifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.body(x).mean(dim=(2, 3)))


def test_classifier_extractor_features_logits_and_checkpoint(tmp_path):
    torch.manual_seed(0)
    net = TinyClassifier()
    from safetensors.torch import save_file
    save_file(net.state_dict(), str(tmp_path / 'cls.safetensors'))
    ext = ClassifierFeatureExtractor(TinyClassifier(), checkpoint=str(tmp_path / 'cls.safetensors'),
                                     feature_layer='body', in_channels=3, resize=6,
                                     mean=127.5, std=127.5, device='cpu')
    gray = torch.randint(0, 256, (3, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    out = ext(gray.to(torch.uint8))
    x = torch.nn.functional.interpolate(gray.float().expand(-1, 3, -1, -1), size=(6, 6),
                                        mode='bilinear', align_corners=False) / 127.5 - 1
    with torch.no_grad():
        assert torch.allclose(out['features'], net.body(x).mean(dim=(2, 3)), atol=1e-6)
        assert torch.allclose(out['logits'], net(x), atol=1e-6)
    assert ext.standard is False and ext.name == 'classifier:TinyClassifier:body'
    with pytest.raises(FeatureExtractorError, match=r"feature_layer='bdy' is not a module of "
                                                    r"TinyClassifier.*body"):
        ClassifierFeatureExtractor(TinyClassifier(), feature_layer='bdy')


@needs_torch_fidelity
def test_inception_extractor_missing_and_unsafe_weights(tmp_path):
    from common.io import UnsafeCheckpointError
    from generation_dmd.evaluation import InceptionFeatureExtractor
    from generation_dmd.evaluation.feature_extractors import INCEPTION_WEIGHTS_URL
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
    assert INCEPTION_WEIGHTS_URL == URL_INCEPTION_V3  # the file torch-fidelity would fetch
    with pytest.raises(FeatureExtractorError,
                       match=r"weights_path='.*nope.pth' is not a file; expected torch-fidelity's"
                             r" Inception weights weights-inception-2015-12-05-6726825d.pth "
                             r".*Fetch it on a connected machine from https://github.com/toshas/"):
        InceptionFeatureExtractor(str(tmp_path / 'nope.pth'))

    class Payload:
        def __reduce__(self):
            return (os.system, ('echo pwned',))
    torch.save({'w': Payload()}, tmp_path / 'evil.pth')
    with pytest.raises(UnsafeCheckpointError):
        InceptionFeatureExtractor(str(tmp_path / 'evil.pth'))


@needs_torch_fidelity
def test_inception_extractor_reads_local_weights_without_torch_fidelitys_loader(tmp_path,
                                                                              monkeypatch):
    """Random weights in torch-fidelity's layout stand in for the real file (not reachable)."""
    from torch_fidelity import feature_extractor_inceptionv3 as tf_inception

    from generation_dmd.evaluation import InceptionFeatureExtractor
    cls = tf_inception.FeatureExtractorInceptionV3
    with monkeypatch.context() as m:  # the architecture's shapes only (meta device, no weights)
        m.setattr(cls, 'load_state_dict', lambda self, state, **kw: None)
        m.setattr(tf_inception, 'load_state_dict_from_url', lambda *a, **kw: {})
        with torch.device('meta'):
            shapes = {k: (v.shape, v.dtype) for k, v in
                      cls('inception-v3-compat', ['2048']).state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.ones(shape) if k.endswith('running_var') else
             torch.zeros(shape, dtype=dtype) if k.endswith('num_batches_tracked') else
             torch.randn(shape, generator=gen) * 0.05 for k, (shape, dtype) in shapes.items()}
    torch.save(state, tmp_path / 'inception.pth')
    loader, torch_load, calls = tf_inception.load_state_dict_from_url, torch.load, []

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get('weights_only'))
        return torch_load(*args, **kwargs)
    monkeypatch.setattr(torch, 'load', recording_load)
    ext = InceptionFeatureExtractor(str(tmp_path / 'inception.pth'), batch_size=1, device='cpu')
    assert calls == [True]  # read once, never unpickled by torch-fidelity's weights_only=False
    assert tf_inception.load_state_dict_from_url is loader  # the swap is undone
    assert ext.standard is True and ext.name == 'inception-v3-compat'
    loaded = ext.inception.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in ('Conv2d_1a_3x3.conv.weight', 'fc.weight'))
    gray = torch.randint(0, 256, (1, 1, 8, 8), dtype=torch.uint8, generator=gen)
    out = ext(gray)
    assert out['features'].shape == (1, 2048) and out['logits'].shape == (1, 1008)
    with torch.no_grad():  # the 1008 unbiased logits are the pool features times fc.weight^T
        assert torch.allclose(out['logits'], out['features'] @ state['fc.weight'].T, atol=1e-4)
    assert torch.equal(ext(gray.expand(-1, 3, -1, -1))['features'], out['features'])


# ------------------------------------------------------------------------- the tool
def test_tool_folder_of_pngs_matches_direct_statistics(tools_kit, tmp_path):
    tool = tools_kit.load('compute_fid_reference')
    images = images_of(9, n=10)
    folder = tmp_path / 'imgs' / 'sub'
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f'{i:03d}.png')
    meta = tool.write_reference(str(tmp_path / 'imgs'), str(tmp_path / 'ref.npz'),
                                TinyExtractor(), batch_size=4, max_images=9)
    mu, sigma, stored = load_reference_stats(tmp_path / 'ref.npz', with_metadata=True)
    direct = FeatureStatistics().update(TinyExtractor()(images[:9])['features'])
    assert np.allclose(mu, direct.mean_cov()[0]) and np.allclose(sigma, direct.mean_cov()[1])
    assert stored == meta and meta['count'] == 9 and meta['extractor'] == 'tiny-test-net'
    assert meta['source_kind'] == 'folder' and not meta['standard_extractor']


def fake_cifar(folder, payload=None):
    """CIFAR-10's python layout: pickled dicts with b'data' uint8 [N, 3072] (R, G, B planes)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    data = {}
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        data[name] = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        batch = {b'data': data[name], b'labels': [0, 1, 2], b'batch_label': b'x'}
        if payload is not None:
            batch[b'evil'] = payload
        with open(folder / name, 'wb') as f:
            pickle.dump(batch, f, protocol=2)
    return data


def test_tool_refuses_cifar_pickles_unless_allowed(tools_kit, tmp_path):
    tool = tools_kit.load('compute_fid_reference')
    data = fake_cifar(tmp_path / 'cifar-10-batches-py')
    src = str(tmp_path / 'cifar-10-batches-py')
    with pytest.raises(PickleRefusedError, match=r'Python pickles; they are not opened by default'
                                                 r'.*pass --allow-pickle'):
        tool.write_reference(src, str(tmp_path / 'ref.npz'), TinyExtractor())
    assert not (tmp_path / 'ref.npz').exists()
    with pytest.warns(UserWarning, match='reading the pickled CIFAR-10 batches'):
        meta = tool.write_reference(src, str(tmp_path / 'ref.npz'), TinyExtractor(),
                                    allow_pickle=True, cifar_split='test')
    assert meta['count'] == 3 and 'test split' in meta['proxy_note']
    with pytest.warns(UserWarning):
        train = list(iter_image_batches(src, batch_size=4, allow_pickle=True))
    assert [len(b) for b in train] == [3] * 5  # data_batch_1..5, in order
    pixel = data['data_batch_2'][1].reshape(3, 32, 32)[:, 4, 7]  # channel planes, row-major
    assert train[1][1, :, 4, 7].tolist() == pixel.tolist()

    class Payload:
        def __reduce__(self):
            return (os.system, ('echo pwned',))
    fake_cifar(tmp_path / 'evil', payload=Payload())
    with pytest.raises(ImageSourceError, match=r'asks for posix.system, which is not a numpy'):
        with pytest.warns(UserWarning):
            tool.write_reference(str(tmp_path / 'evil'), str(tmp_path / 'e.npz'),
                                 TinyExtractor(), allow_pickle=True)


def test_tool_main_turns_known_errors_into_run_errors(tools_kit, tmp_path):
    tool = tools_kit.load('compute_fid_reference')
    cli = tools_kit.load('_cli')
    np.save(tmp_path / 'x.npy', np.zeros((4, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(cli.RunError, match=r"weights_path='.*none.pth' is not a file"):
        tool.main([str(tmp_path / 'x.npy'), str(tmp_path / 'r.npz'), '--weights',
                   str(tmp_path / 'none.pth')])
    with pytest.raises(SystemExit):  # argparse: exit 2, one line (tests/test_tools/test_startup)
        tool.main([str(tmp_path / 'x.npy'), str(tmp_path / 'r.txt'), '--weights', 'w.pth'])
    assert not (tmp_path / 'r.npz').exists()
