"""``benchmarks/pixel_classifier_memory.py`` and ``benchmarks/sae_throughput.py``: the
re-implemented references against our code and hand-computed sizes, the argument errors, and one
minimal run of each benchmark (tiny random DDPM, tiny digits release, tiny SAEs)."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

BENCH = os.path.join(os.path.dirname(__file__), '..', '..', 'benchmarks')
sys.path.insert(0, BENCH)

import pixel_classifier_memory as pcm  # noqa: E402
import sae_throughput as st  # noqa: E402

HEAVY = ('torch', 'mmengine', 'diffusers', 'transformers', 'common', 'segmentation')


@pytest.mark.parametrize('script, argv, message', [
    ('pixel_classifier_memory.py', ['--train', '0'], '--train 0: must be at least 1'),
    ('pixel_classifier_memory.py', ['--headline', 'cat_15'], '--headline cat_15: unknown case'),
    ('pixel_classifier_memory.py', ['--blocks', '5,x'], '--blocks 5,x: expected comma-separated'),
    ('pixel_classifier_memory.py', ['--teacher', '/nonexistent', '--headline', 'none'],
     '--teacher /nonexistent: no pixel DDPM pipeline there'),
    ('pixel_classifier_memory.py', ['--skip-a', '--out', 'r.txt'], '--out r.txt: the results'),
    ('sae_throughput.py', ['--kinds', 'jumprelu'], '--kinds jumprelu: unknown SAE'),
    ('sae_throughput.py', ['--k', '64', '--d-sae', '32'], '--k 64: at most --d-sae (32)'),
    ('sae_throughput.py', ['--batches', '1'], '--batches 1: a batch needs at least 2 tokens'),
])
def test_argument_errors_are_one_line_without_heavy_imports(script, argv, message):
    proc = subprocess.run([sys.executable, '-X', 'importtime', os.path.join(BENCH, script),
                           *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith('import time:')]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-1000:]
    imported = {m.group(1).split('.')[0] for m in
                re.finditer(r'^import time:\s+\d+ \|\s+\d+ \| +(\S+)$', proc.stderr, re.M)}
    assert not imported & set(HEAVY)


def test_reference_rows_are_our_sampled_pixels_in_the_reference_order():
    from segmentation.pixel_features import sample_pixels
    g = torch.Generator().manual_seed(0)
    s = 8
    native = [[torch.randn(1, 4, 2, 2, generator=g), torch.randn(1, 3, 4, 4, generator=g)]
              for _ in range(2)]
    upsampled = [torch.cat([F.interpolate(m, size=(s, s), mode='bilinear', align_corners=False)
                            for m in maps], 1)[0] for maps in native]
    masks = [np.zeros((s, s), np.uint8), np.full((s, s), 2, np.uint8)]
    masks[0][1, 2] = masks[0][5, 7] = 255  # two ignore pixels in image 0
    masks[1][0, :] = 255  # one ignore row in image 1
    x, y = pcm.reference_rows(upsampled, masks, 255)
    assert x.shape == (2 * 64 - 2 - 8, 7) and y.dtype == torch.uint8
    # row order of X.permute(1, 0, 2, 3).reshape(D, -1).permute(1, 0): image, row, column
    expected = []
    for i, mask in enumerate(masks):
        rows, cols = np.nonzero(mask != 255)
        expected.append(sample_pixels(native[i], torch.as_tensor(rows), torch.as_tensor(cols), s))
    torch.testing.assert_close(x, torch.cat(expected), atol=1e-5, rtol=1e-5)
    assert y.tolist() == [0] * 62 + [2] * 56


def test_reference_training_counts_its_iterations():
    torch.manual_seed(0)
    x, y = torch.randn(300, 5), torch.randint(0, 3, (300, ))
    # below epoch 4 the early-stopping rule never looks: 2 epochs x (300 // 64) batches x models
    models, iterations = pcm.reference_train(x, y, 3, num_models=2, max_epochs=2)
    assert iterations == 2 * 2 * 4 and len(models) == 2
    assert [type(m).__name__ for m in models[0]] == [
        'Linear', 'ReLU', 'BatchNorm1d', 'Linear', 'ReLU', 'BatchNorm1d', 'Linear']
    assert models[0][0].out_features == 128 and not models[0].training  # < 30 classes: small
    assert pcm.reference_mlp(5, 34)[0].out_features == 256  # >= 30 classes: large


def test_headline_sizes_are_the_hand_computed_ones():
    shapes = pcm.adm_native_shapes(256)
    per_t = [(1024, 32, 32), (512, 32, 32), (512, 32, 32), (512, 64, 64), (256, 128, 128)]
    assert shapes == per_t * 3 and sum(c for c, _, _ in shapes) == 8448
    from segmentation.pixel_features import memory_report
    for n, gb in ((20, 88.6), (40, 177.2)):  # 2 x N x 8448 x 65536 x 4 B (+ uint8 labels)
        peak = pcm.reference_peak_bytes(n, 8448, 256)
        assert peak == 2 * n * 8448 * 65536 * 4 + n * 65536
        assert peak / 1e9 == pytest.approx(gb, abs=0.05)
        assert peak == memory_report(n, shapes, 256)['reference_peak']


def test_seed_sae_is_our_reference_relu_sae():
    from segmentation.sae import ReluSAE
    torch.manual_seed(0)
    seed = st.seed_sae(16, 40)
    ours = ReluSAE(16, 40, variant='reference')
    with torch.no_grad():
        seed.decoder.weight.mul_(torch.linspace(0.5, 2.0, 40))  # columns off unit norm
        ours.encoder.load_state_dict(seed.encoder[0].state_dict())
        ours.decoder.load_state_dict(seed.decoder.state_dict())
    x = torch.randn(32, 16)
    ours.init_from_sample(x)
    x_hat, h = seed(x)
    ours_hat, ours_h = ours(x)
    torch.testing.assert_close(ours_hat, x_hat)
    torch.testing.assert_close(ours_h, h)
    expected = F.mse_loss(x_hat, x) + 1e-3 * h.abs().sum(1).mean() / 16  # by hand
    torch.testing.assert_close(st.seed_loss(seed, x, 16), expected)
    torch.testing.assert_close(ours.loss(x)['loss'], expected)


def test_minimal_pixel_classifier_memory_run(tmp_path, capsys):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
    from helpers.tiny_models import save_ddpm_pipeline
    teacher = save_ddpm_pipeline(str(tmp_path / 'ddpm'), sample_size=16)
    out = tmp_path / 'memory.json'
    results = pcm.main([
        '--teacher', teacher, '--blocks', '1,3', '--steps', '50', '--image-size', '16',
        '--train', '2', '--test', '2', '--max-epochs', '1', '--headline', 'ffhq_34',
        '--headline-images', '1', '--headline-size', '32', '--iters', '2', '--buffer-pixels',
        '256', '--reduced-size', '16', '--reduced-images', '2', '--same-process',
        '--work-dir', str(tmp_path / 'work'), '--out', str(out)])
    printed = capsys.readouterr().out
    assert 'SAME PROCESS' in printed
    for what in ('digits', 'ADM layout'):
        assert re.search(rf'ratio reference/ours \({what}\): peak RSS \d+\.\d\dx, time '
                         r'\d+\.\d\dx', printed), printed
    saved = json.loads(out.read_text())
    a = saved['part_a']
    for side in ('reference', 'ours'):
        assert 0 <= a[side]['miou'] <= a[side]['miou_skip_absent'] <= 1
        assert a[side]['dim'] == 64 + 32  # tiny UNet: blocks 1 (64 ch) and 3 (32 ch), one t
    # one epoch of (2 images x 256 px) // 64 = 8 batches, for each of the 10 models
    assert a['reference']['model_iterations'] == a['ours']['model_iterations'] == 80
    assert a['memory_ratio'] == pytest.approx(a['reference']['peak_rss'] / a['ours']['peak_rss'])
    a2 = saved['part_a2']  # 2 images x 256 px = 8 batches, bounded at 2 per model
    for side in ('reference', 'ours'):
        assert (a2[side]['dim'], a2[side]['model_iterations']) == (8448, 2 * 10)
        assert a2[side]['hidden'] == [256, 128]  # ffhq_34's 34 classes: the large MLP
        assert a2[side]['reference_peak'] == 2 * 2 * 8448 * 16 * 16 * 4 + 2 * 16 * 16
    (b, ) = saved['part_b']
    assert (b['case'], b['n_images'], b['dim'], b['model_iterations']) == ('ffhq_34', 1, 8448,
                                                                            2 * 10)
    assert b['reference_peak'] == 2 * 8448 * 32 * 32 * 4 + 32 * 32
    native_bytes = 3 * 2 * (1024 * 16 + 2 * 512 * 16 + 512 * 64 + 256 * 256)  # 32 px ADM, fp16
    assert native_bytes < b['store_disk'] < native_bytes + 20000  # + manifest, headers
    assert b['ratio'] == pytest.approx(b['reference_peak'] / b['peak_rss'])
    assert results['part_b'][0]['ratio'] == b['ratio']


def test_minimal_sae_throughput_run(tmp_path, capsys):
    out = tmp_path / 'sae.json'
    results = st.main(['--d-in', '16', '--d-sae', '32', '--k', '4', '--batches', '8', '2048',
                       '--steps', '3', '--large-steps', '1', '--warmup', '1', '--out', str(out)])
    printed = capsys.readouterr().out
    assert re.search(r'ours/seed \d+\.\d\dx; last loss seed \d+\.\d+, ours \d+\.\d+', printed)
    saved = json.loads(out.read_text())
    assert [(r['kind'], r['batch'], r['steps']) for r in saved['throughput']] == [
        (k, b, n) for b, n in ((8, 3), (2048, 1)) for k in st.SAE_KINDS]
    for row in saved['throughput']:
        assert row['tokens_per_s'] == pytest.approx(row['batch'] * row['steps'] / row['seconds'])
    sv = saved['seed_vs_ours']
    assert sv['ratio_ours_over_seed'] == pytest.approx(sv['ours_tokens_per_s']
                                                       / sv['seed_tokens_per_s'])
    assert results['seed_vs_ours']['steps'] == 3 and sv['batch'] == 64


def test_each_side_runs_in_its_own_process_and_counts_from_its_imports(tmp_path, capsys):
    results = pcm.main(['--skip-a', '--headline', 'bedroom_28', '--headline-images', '1',
                        '--headline-size', '32', '--iters', '1', '--buffer-pixels', '64',
                        '--reduced-images', '0', '--work-dir', str(tmp_path)])
    assert 'SAME PROCESS' not in capsys.readouterr().out
    (b, ) = results['part_b']
    assert b['peak_resettable'] is True  # VmHWM reset after the imports (Linux clear_refs)
    params = b['model_and_adam'] // 4  # parameter bytes; small MLP (29 classes), float32
    assert params == 4 * 10 * (8448 * 128 + 128 + 2 * 128 + 128 * 32 + 32 + 2 * 32 + 32 * 29 + 29)
    assert b['hidden'] == [128, 32] and b['model_iterations'] == 10
    # the ensemble's weights are allocated after the mark, the interpreter and torch before it
    assert params <= b['peak_rss'] < 2 * 2**30
