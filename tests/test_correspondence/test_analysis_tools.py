"""The correspondence analysis tools and the offline evaluation they share, on tiny inputs.

Every number a tool writes is checked against an independent computation: offline evaluation
against ``tools/test.py`` itself; the box plot statistics against numpy percentiles of the
dump's distances; a sweep cell against the single ``layer@t`` config evaluated on its own; a
resolution point against the config re-evaluated at that size; the PCA colours against an SVD
of the features of a separately built extractor.
"""
import json
import math
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config

# (importing correspondence registers its datasets, transforms, extractors, metric and, through
# the extractors, common's DiffusionTeacher)
from correspondence.datasets.digits_affine import write_spair_release
from correspondence.evaluation import offline_eval, variants
from tests.helpers.tiny_models import save_ddpm_pipeline, save_dinov2_models, save_sd_pipeline

from .fake_releases import write_spair

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(REPO, 'correspondence', 'configs', 'demo_digits')
ZERO_SHOT = osp.join(REPO, 'correspondence', 'configs', 'zero_shot')
RANDOM_INIT = osp.join(DEMO, 'random-init-resnet18-w16_softargmax_digits-affine.py')
PIXELS = osp.join(DEMO, 'pixels_softargmax_digits-affine.py')
DDPM_CFG = osp.join(DEMO, 'ddpm-teacher-up0-t250_softargmax_digits-affine.py')
DIFT = osp.join(ZERO_SHOT, 'dift_sd21-up1-t261-ens8_768px_spair71k.py')
DINO = osp.join(ZERO_SHOT, 'dinov2_vitb14_840px_spair71k.py')
PIXELS_SPAIR = osp.join(ZERO_SHOT, 'pixels_softargmax_spair71k.py')


@pytest.fixture(scope='module')
def inputs(tmp_path_factory, tools_kit):
    """Six digits affine pairs, a tiny pixel DDPM, the fake SPair-71k, tiny DINOv2 and SD."""
    tools_kit.load('_cli')  # tools/ on sys.path: the tools' own config loader
    root = tmp_path_factory.mktemp('analysis')
    write_spair_release(str(root / 'digits'), 6, seed=0)
    return dict(root=root, digits=str(root / 'digits'),
                ddpm=save_ddpm_pipeline(str(root / 'ddpm')),
                spair=write_spair(str(root / 'spair'))['root'],
                dino=save_dinov2_models(str(root / 'dino'))['plain'],
                sd=save_sd_pipeline(str(root / 'sd')))


def _config(path, options):
    """The config as tools load it: file plus checked --cfg-options."""
    import _cli  # noqa: F401  (tools/ is on sys.path once a tool was loaded)
    return _cli.load_config(path, options)


def _tool(tools_kit, name):
    return tools_kit.load(f'analysis/{name}')


def _digits_options(inputs):
    return [f'test_dataloader.dataset.data_root={inputs["digits"]}',
            'test_dataloader.num_workers=0']


@pytest.fixture(scope='module')
def dumps(inputs, tools_kit):
    """The random-init config through ``tools/test.py --out`` (a subprocess, as a user runs it)
    and the pixels config through offline evaluation with the metric's own dump."""
    root = inputs['root']
    out = str(root / 'random_init.json')
    proc = tools_kit.run([osp.join(REPO, 'tools', 'test.py'), RANDOM_INIT, '--work-dir',
                          str(root / 'wd'), '--out', out, '--cfg-options',
                          *_digits_options(inputs)], cwd=str(root))
    assert proc.returncode == 0, proc.output[-3000:]
    pixels = str(root / 'pixels.json')
    cfg = _config(PIXELS, _digits_options(inputs))
    parts = offline_eval.build_test_parts(cfg)
    metric = offline_eval.build_metric(cfg, dump_pairs=pixels)
    offline_eval.evaluate(parts.model, parts.dataset, metric, batch_size=parts.batch_size)
    return dict(random_init=out, pixels=pixels)


# ---------------------------------------------------------------------------- offline_eval

def test_offline_evaluation_gives_exactly_what_tools_test_prints(inputs, dumps):
    with open(dumps['random_init']) as f:
        dump = json.load(f)
    cfg = _config(RANDOM_INIT, _digits_options(inputs))
    parts = offline_eval.build_test_parts(cfg)
    metrics, records = offline_eval.evaluate(parts.model, parts.dataset, parts.metric,
                                             batch_size=parts.batch_size, progress=False)
    assert metrics == dump['metrics']  # exactly, every key
    assert 0 < metrics['dift/pck@0.1/per_point'] < 100
    assert json.loads(json.dumps(records)) == dump['pairs']
    # a subset evaluates those pairs, in order
    metrics2, records2 = offline_eval.evaluate(parts.model, parts.dataset, parts.metric,
                                               batch_size=2, indices=[4, 1])
    assert [r['pair_id'] for r in records2] == [dump['pairs'][i]['pair_id'] for i in (4, 1)]
    assert records2[0]['pred_kps'] == dump['pairs'][4]['pred_kps']


def test_subset_indices_spread_over_the_split():
    assert offline_eval.subset_indices(10, 4) == [0, 2, 5, 7]
    assert offline_eval.subset_indices(3, 5) == [0, 1, 2]
    assert offline_eval.subset_indices(3) == [0, 1, 2]
    with pytest.raises(ValueError, match='evaluate at least one pair'):
        offline_eval.subset_indices(3, 0)


def test_offline_evaluation_refuses_a_metric_without_pair_records(inputs):
    with pytest.raises(TypeError, match='needs a metric with per-pair records'):
        offline_eval.evaluate(None, [], object())
    cfg = Config(dict(test_evaluator=dict(type='Accuracy')))
    with pytest.raises(ValueError, match="has no PCKMetric"):
        offline_eval.pck_metric_cfg(cfg)


# ---------------------------------------------------------------------------- box plot

def _errors(dump, category=None):
    d, n, ok = [], [], []
    for pair in dump['pairs']:
        if category is not None and pair['category'] != category:
            continue
        proto = pair['protocols']['dift']
        dist = np.asarray(proto['distances'])
        thr = proto['thresholds']['pck@0.1']
        d.append(dist)
        n.append(dist / (thr / 0.1))
        ok.append(dist <= thr)
    return np.concatenate(d), np.concatenate(n), np.concatenate(ok)


def test_boxplot_statistics_equal_numpy_on_the_dumps(inputs, dumps, tools_kit):
    tool = _tool(tools_kit, 'correspondence_boxplot')
    out = str(inputs['root'] / 'box')
    report = tool.main([dumps['random_init'], dumps['pixels'], '--labels', 'rnd', 'pix',
                        '--out', out])
    with open(osp.join(out, 'error_stats.json')) as f:
        written = json.load(f)
    assert written == json.loads(json.dumps(report))
    with open(osp.join(out, 'boxplot.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    with open(dumps['random_init']) as f:
        rnd = json.load(f)
    cats = sorted({p['category'] for p in rnd['pairs']})
    assert set(written['stats']) == {'all', *cats}
    for group in ['all'] + cats:
        dist, norm, ok = _errors(rnd, None if group == 'all' else group)
        stats = written['stats'][group]['rnd']
        for which, values in (('pixels', dist), ('normalised', norm)):
            q1, med, q3 = np.percentile(values, [25, 50, 75])
            row = stats[which]
            assert row['count'] == len(values)
            assert (row['q1'], row['median'], row['q3']) == pytest.approx((q1, med, q3),
                                                                           abs=1e-12)
            assert row['mean'] == pytest.approx(values.mean(), abs=1e-12)
        assert stats['pck@0.1'] == pytest.approx(100 * ok.mean(), abs=1e-9)
    # the recomputed PCK@0.1 over all keypoints is the dump's own per-point metric
    assert written['stats']['all']['rnd']['pck@0.1'] == pytest.approx(
        rnd['metrics']['dift/pck@0.1/per_point'], abs=1e-9)
    # --frame original: pixel errors recomputed from the keypoints (dift measures in original
    # pixels, so they agree with the dump's distances)
    again = tool.main([dumps['random_init'], dumps['pixels'], '--out', out, '--per', 'all',
                       '--frame', 'original'])
    assert set(again['stats']) == {'all'}
    pred = np.concatenate([p['pred_kps'] for p in rnd['pairs']])
    trg = np.concatenate([p['trg_kps'] for p in rnd['pairs']])
    expected = np.median(np.linalg.norm(pred - trg, axis=1))
    assert again['stats']['all']['random_init']['pixels']['median'] == pytest.approx(expected)


def test_boxplot_refuses_different_pair_sets_and_other_files(inputs, dumps, tools_kit, capsys):
    tool = _tool(tools_kit, 'correspondence_boxplot')
    root = inputs['root']
    with open(dumps['pixels']) as f:
        dump = json.load(f)
    dump['pairs'] = dump['pairs'][1:]
    fewer = str(root / 'fewer.json')
    with open(fewer, 'w') as f:
        json.dump(dump, f)
    out = str(root / 'box_bad')
    assert tool.cli([dumps['random_init'], fewer, '--out', out]) == 2
    err = capsys.readouterr().err.strip()
    assert 'hold different pair sets (5 vs 6 pairs): 1 pairs of' in err
    assert 'evaluate every config on the same test split' in err and '\n' not in err
    metrics_only = str(root / 'metrics.json')
    with open(metrics_only, 'w') as f:
        json.dump({'dift/pck@0.1/per_point': 50.0}, f)
    assert tool.cli([metrics_only, '--out', out]) == 2
    assert 'is not a per-pair dump' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        tool.parse_args([dumps['pixels'], '--labels', 'a', 'b', '--out', out])
    assert exit_.value.code == 2
    assert '--labels has 2 names for 1 dumps' in capsys.readouterr().err
    assert tool.cli([dumps['pixels'], '--protocol', 'sd_dino', '--out', out]) == 2
    assert "protocol 'sd_dino' is not in" in capsys.readouterr().err
    assert not osp.exists(osp.join(out, 'error_stats.json'))


# ---------------------------------------------------------------------------- layer x timestep

def test_sweep_cells_equal_the_single_layer_configs(inputs, tools_kit):
    tool = _tool(tools_kit, 'correspondence_layer_timestep_sweep')
    out = str(inputs['root'] / 'sweep')
    options = [*_digits_options(inputs), f'model.extractor.teacher.pretrained={inputs["ddpm"]}']
    report = tool.main([DDPM_CFG, '--layers', 'up_blocks.0', 'up_blocks.1', '--timesteps', '50',
                        '250', '--num-pairs', '4', '--batch-size', '2', '--out', out,
                        '--device', 'cpu', '--cfg-options', *options])
    with open(osp.join(out, 'sweep.json')) as f:
        written = json.load(f)
    assert written['grid'] == report['grid'] and len(written['grid']) == 2
    assert written['metric'] == 'dift/pck@0.05/per_image'
    # 4 pairs in batches of 2: one teacher run per batch for all four cells
    assert written['teacher_runs'] == 2 and written['batch_size'] == 2
    with open(osp.join(out, 'heatmap.png'), 'rb') as f:
        assert f.read(4) == b'\x89PNG'
    indices = offline_eval.subset_indices(6, 4)
    for layer, t in (('up_blocks.1', 250), ('up_blocks.0', 50)):
        cfg = _config(DDPM_CFG, options + [f'model.extractor.teacher.layers=[{layer}]',
                                           f'model.extractor.teacher.timesteps=[{t}]'])
        parts = offline_eval.build_test_parts(cfg, device='cpu')
        metrics, records = offline_eval.evaluate(parts.model, parts.dataset, parts.metric,
                                                 batch_size=parts.batch_size, indices=indices)
        cell = written['metrics'][f'{layer}@{t}']
        assert cell == pytest.approx(metrics, abs=1e-9), (layer, t)
        row, col = ['up_blocks.0', 'up_blocks.1'].index(layer), [50, 250].index(t)
        assert written['grid'][row][col] == pytest.approx(metrics[written['metric']])
        assert written['pair_ids'] == [r['pair_id'] for r in records]
    assert len({json.dumps(v) for v in written['metrics'].values()}) > 1  # cells differ


def test_sweep_errors_name_the_valid_choices(inputs, tools_kit, capsys):
    tool = _tool(tools_kit, 'correspondence_layer_timestep_sweep')
    out = str(inputs['root'] / 'sweep_bad')
    options = [*_digits_options(inputs), f'model.extractor.teacher.pretrained={inputs["ddpm"]}']
    assert tool.cli([DDPM_CFG, '--layers', 'up_blocks.9', '--timesteps', '50', '--out', out,
                     '--cfg-options', *options]) == 2
    err = capsys.readouterr().err.strip()
    assert "--layers ['up_blocks.9'] is not module paths of the teacher UNet" in err
    assert "'up_blocks.1'" in err and "'up_blocks.0.resnets.0'" in err and '\n' not in err
    assert tool.cli([PIXELS, '--layers', 'up_blocks.0', '--timesteps', '50', '--out', out,
                     '--cfg-options', *_digits_options(inputs)]) == 2
    assert "this config's model.extractor is 'PixelExtractor'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.parse_args([DDPM_CFG, '--layers', 'a', '--timesteps', '5', '5', '--out', out])
    assert '--timesteps lists 5 more than once' in capsys.readouterr().err
    assert not osp.exists(out)


# ---------------------------------------------------------------------------- resolution

def test_resolution_sweep_rounds_to_the_patch_and_matches_single_runs(inputs, tools_kit,
                                                                     tmp_path):
    tool = _tool(tools_kit, 'correspondence_resolution_sweep')
    dino_cfg = tmp_path / 'dino_tiny.py'
    dino_cfg.write_text(f'_base_ = [{DINO!r}]\nmodel = dict(extractor=dict(pretrained='
                        f'{inputs["dino"]!r}))\n')
    out = str(tmp_path / 'res')
    options = [f'test_dataloader.dataset.data_root={inputs["spair"]}',
               'test_dataloader.num_workers=0']
    report = tool.main([str(dino_cfg), PIXELS_SPAIR, '--labels', 'dino', 'pixels', '--sizes',
                        '30', '56', '--preset', 'dift', '--out', out, '--device', 'cpu',
                        '--cfg-options', *options])
    with open(osp.join(out, 'resolution.json')) as f:
        written = json.load(f)
    assert written == json.loads(json.dumps(report))
    dino, pixels = written['configs']
    assert (dino['multiple'], pixels['multiple']) == (14, 1)
    assert [(s['requested'], s['used']) for s in dino['sizes']] == [(30, 28), (56, 56)]
    assert [(s['requested'], s['used']) for s in pixels['sizes']] == [(30, 30), (56, 56)]
    assert written['metric'] == 'dift/pck@0.1/per_image'
    with open(osp.join(out, 'resolution.png'), 'rb') as f:
        assert f.read(4) == b'\x89PNG'
    # the point at 28 px is the config evaluated with ResizePair size 28
    cfg = _config(str(dino_cfg), options + ['test_dataloader.dataset.pipeline.1.size=28'])
    parts = offline_eval.build_test_parts(cfg, presets=['dift'], device='cpu')
    metrics, _ = offline_eval.evaluate(parts.model, parts.dataset, parts.metric,
                                       batch_size=parts.batch_size)
    assert dino['sizes'][0]['metrics'] == pytest.approx(metrics, abs=1e-9)
    assert dino['values'][0] == pytest.approx(metrics['dift/pck@0.1/per_image'])


def test_resolution_helpers_and_errors(inputs, tools_kit, capsys, tmp_path):
    assert [variants.round_to_multiple(s, 14) for s in (224, 448, 672, 5, 21)] == \
        [224, 448, 672, 14, 28]
    assert variants.round_to_multiple(300, 8) == 304
    pipeline = [dict(type='LoadImagePair'), dict(type='ResizePair', frame='padded', size=840),
                dict(type='PackPair')]
    assert variants.pipeline_with_size(pipeline, 224)[1] == dict(type='ResizePair',
                                                                 frame='padded', size=224)
    assert pipeline[1]['size'] == 840  # a copy
    with pytest.raises(variants.VariantError, match='has 0 ResizePair steps'):
        variants.pipeline_with_size(pipeline[:1], 224)
    tool = _tool(tools_kit, 'correspondence_resolution_sweep')
    assert tool.cli([PIXELS, '--sizes', '32', '--out', str(tmp_path / 'r'), '--cfg-options',
                     *_digits_options(inputs)]) == 2
    err = capsys.readouterr().err
    assert 'has 0 ResizePair steps; a resolution sweep replaces the size of exactly one' in err
    with pytest.raises(SystemExit):
        tool.parse_args([PIXELS, '--sizes', '0', '--out', 'x'])
    assert '--sizes 0: sizes are positive pixel counts' in capsys.readouterr().err


# ---------------------------------------------------------------------------- PCA figure

def _svd_projection(maps, dim=3):
    """Independent PCA: centred tokens of all maps, SVD, first ``dim`` scores per map."""
    tokens = np.concatenate([m[0].reshape(m.shape[1], -1).T.numpy() for m in maps]).astype(
        np.float64)
    tokens -= tokens.mean(axis=0)
    _, _, vt = np.linalg.svd(tokens, full_matrices=False)
    scores = tokens @ vt[:dim].T
    out, start = [], 0
    for m in maps:
        h, w = m.shape[-2:]
        out.append(scores[start:start + h * w].reshape(h, w, dim))
        start += h * w
    return out


def _same_up_to_sign(a, b, atol):
    for k in range(a.shape[-1]):
        sign = np.sign(np.sum(a[..., k] * b[..., k])) or 1.0
        np.testing.assert_allclose(a[..., k], sign * b[..., k], atol=atol)


def test_pca_figure_diffusion_matches_an_svd_of_the_single_extractor(inputs, tools_kit):
    from PIL import Image

    from mmengine.registry import MODELS
    tool = _tool(tools_kit, 'correspondence_pca_figure')
    root = inputs['root']
    images = [osp.join(inputs['spair'], 'JPEGImages', 'aeroplane', '2008_000001.jpg'),
              osp.join(inputs['spair'], 'JPEGImages', 'cat', '2009_000010.jpg')]
    masks = []
    for i, path in enumerate(images):
        w, h = Image.open(path).size
        mask = np.zeros((h, w), np.uint8)
        mask[:, :w // 2] = 255  # left half foreground
        masks.append(str(root / f'mask{i}.png'))
        Image.fromarray(mask).save(masks[-1])
    options = [f'model.extractor.teacher.pretrained={inputs["sd"]}',
               'model.extractor.teacher.ensemble=1', 'test_dataloader.dataset.pipeline.1.size=32']
    out = str(root / 'pca_sd.png')
    result = tool.main([DIFT, '--images', *images, '--segmentation', *masks, '--layers',
                        'up_blocks.0', 'up_blocks.1', '--timesteps', '100', '500', '--concat',
                        '--out', out, '--device', 'cpu', '--cfg-options', *options])
    assert list(result['columns']) == ['up_blocks.0@100', 'up_blocks.0@500', 'up_blocks.1@100',
                                       'up_blocks.1@500', 'concat@100', 'concat@500']
    with open(out, 'rb') as f:
        assert f.read(4) == b'\x89PNG'
    # masks in the 32 x 32 stretched frame: the left half
    for mask in result['masks']:
        assert mask.shape == (32, 32) and mask[:, :16].all() and not mask[:, 16:].any()
    # RGB in [0, 1], each component spanning it over the two images
    rgb = np.concatenate([c.reshape(-1, 3) for c in result['columns']['up_blocks.1@500']])
    np.testing.assert_allclose(rgb.min(0), 0, atol=1e-6)
    np.testing.assert_allclose(rgb.max(0), 1, atol=1e-6)
    # one layer@t: the features of a separately built single-key extractor, PCA by SVD
    cfg = _config(DIFT, options)
    ext_cfg = cfg.model.extractor.to_dict()
    ext_cfg.update(layer='up_blocks.1', timestep=500, prompt_template=None)
    offline_eval.seed_like_runner(cfg)
    single = MODELS.build(ext_cfg)
    feats = [single(torch.from_numpy(img.transpose(2, 0, 1).copy()).float()[None] / 255)
             for img in result['images']]
    for got, want in zip(result['features']['up_blocks.1@500'], feats):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for got, want in zip(result['projections']['up_blocks.1@500'], _svd_projection(feats)):
        _same_up_to_sign(got, want, atol=1e-4)
    # the concatenation: every layer L2-normalised, resized to the finest grid
    concat = result['features']['concat@500'][0]
    assert concat.shape[1] == sum(result['features'][f'up_blocks.{i}@500'][0].shape[1]
                                  for i in (0, 1))
    n0 = result['features']['up_blocks.0@500'][0].shape[1]
    norms = concat[0, :n0].norm(dim=0)
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-5, rtol=0)


def test_pca_figure_dinov2_layers_are_the_extractors_own(inputs, tools_kit, capsys, tmp_path):
    from mmengine.registry import MODELS
    tool = _tool(tools_kit, 'correspondence_pca_figure')
    image = osp.join(inputs['spair'], 'JPEGImages', 'aeroplane', '2008_000002.jpg')
    dino_cfg = tmp_path / 'dino_tiny.py'
    dino_cfg.write_text(f'_base_ = [{DINO!r}]\nmodel = dict(extractor=dict(pretrained='
                        f'{inputs["dino"]!r}))\n')
    options = ['test_dataloader.dataset.pipeline.1.size=42']
    out = str(tmp_path / 'pca_dino.png')
    result = tool.main([str(dino_cfg), '--images', image, image, '--layers', '1', '-1',
                        '--concat', '--out', out, '--device', 'cpu', '--cfg-options', *options])
    assert list(result['columns']) == ['layer 1', 'layer -1', 'concat']
    for layer in (1, -1):
        own = MODELS.build(dict(type='DINOv2Extractor', pretrained=inputs['dino'], layer=layer))
        want = own(torch.from_numpy(result['images'][0].transpose(2, 0, 1).copy()).float()[None]
                   / 255)
        assert want.shape[-2:] == (3, 3)
        torch.testing.assert_close(result['features'][f'layer {layer}'][0], want)
    assert tool.cli([str(dino_cfg), '--images', image, '--layers', '5', '--out', out]) == 2
    assert 'this DINOv2 has 2 blocks; valid layers are 0' in capsys.readouterr().err
    assert tool.cli([str(dino_cfg), '--images', image, '--layers', '1', '--timesteps', '5',
                     '--out', out]) == 2
    assert 'has a DINOv2Extractor, which has no timesteps' in capsys.readouterr().err
    assert tool.cli([str(dino_cfg), '--images', image, '--layers', '1', '--out', out,
                     '--cfg-options', 'test_dataloader.dataset.pipeline.1.size=40']) == 2
    assert 'not multiples of the patch size 14' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.parse_args([str(dino_cfg), '--images', image, '--layers', '1', '--out', 'x.jpg'])
    assert '--out x.jpg: write a .png file' in capsys.readouterr().err
    assert math.isfinite(result['projections']['concat'][0].sum())
