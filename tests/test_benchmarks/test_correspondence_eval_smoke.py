"""``benchmarks/correspondence_eval.py``: the reference protocol against hand-computed and
independently computed matches, the argument errors, and one minimal run of the benchmark."""
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

import correspondence_eval as ce  # noqa: E402
from _correspondence_reference import reference_evaluate, reference_match  # noqa: E402

HEAVY = ('torch', 'mmengine', 'diffusers', 'transformers', 'common', 'correspondence')


def one_hot_cells(h=4, w=4):
    """``[1, h * w, h, w]``: cell ``(row, col)`` holds the one-hot vector of index row * w + col."""
    return torch.eye(h * w).reshape(1, h * w, h, w)


def test_reference_matches_hand_computed_pixels():
    # 4 x 4 cells over a 12 x 12 image: cell centres at pixels 3 j + 1 = 1, 4, 7, 10.
    feat = one_hot_cells()
    kps = np.array([[4.0, 7.0], [4.4, 6.6], [7.0, 4.0], [10.0, 1.0]])  # (4.4, 6.6) -> (4, 7)
    same = reference_match(feat, feat, kps, (12, 12), (12, 12))
    # At the border the upsampling replicates the edge cell: pixel rows 0 and 1 of the last
    # column both hold cell (row 0, col 3) exactly; the argmax takes the first, row 0.
    np.testing.assert_array_equal(same, [[4, 7], [4, 7], [7, 4], [10, 0]])
    # the target's content moved one cell to the right: each match moves 3 pixels right
    shifted = torch.zeros_like(feat)
    shifted[..., 1:] = feat[..., :-1]
    moved = reference_match(feat, shifted, kps[:1], (12, 12), (12, 12))
    np.testing.assert_array_equal(moved, [[7, 7]])


def test_reference_equals_a_vectorised_pixel_argmax():
    g = torch.Generator().manual_seed(0)
    src, trg = torch.randn(1, 8, 5, 6, generator=g), torch.randn(1, 8, 4, 7, generator=g)
    src_wh, trg_wh = (30, 25), (21, 16)
    kps = np.array([[0.0, 0.0], [29.0, 24.0], [13.2, 7.7], [5.5, 20.4]])
    pred = reference_match(src, trg, kps, src_wh, trg_wh)
    # independently: full upsampled maps, all source pixels' best target pixel at once
    up_s = F.interpolate(src, size=(25, 30), mode='bilinear', align_corners=False)[0]
    up_t = F.interpolate(trg, size=(16, 21), mode='bilinear', align_corners=False)[0]
    sim = F.normalize(up_s.flatten(1), dim=0).T @ F.normalize(up_t.flatten(1), dim=0)
    best = sim.argmax(1).reshape(25, 30)
    xi = np.clip(np.floor(kps[:, 0] + 0.5), 0, 29).astype(int)  # no .5 ties among these kps
    yi = np.clip(np.floor(kps[:, 1] + 0.5), 0, 24).astype(int)
    idx = best[yi, xi].numpy()
    np.testing.assert_array_equal(pred, np.stack([idx % 21, idx // 21], 1))


def test_reference_calls_the_extractor_once_per_image():
    calls = []

    def extract(image, category):
        calls.append((tuple(image.shape), category, float(image.max())))
        return one_hot_cells()

    pair = dict(src=torch.full((3, 12, 12), 255, dtype=torch.uint8),
                trg=torch.zeros(3, 12, 12, dtype=torch.uint8), src_kps=np.array([[4.0, 7.0]]),
                src_imsize=(12, 12), trg_imsize=(12, 12), category='cat')
    preds = reference_evaluate(extract, [pair, pair])
    assert calls == [((1, 3, 12, 12), 'cat', 1.0), ((1, 3, 12, 12), 'cat', 0.0)] * 2
    assert [p.tolist() for p in preds] == [[[4.0, 7.0]]] * 2


@pytest.mark.parametrize('argv, message', [
    (['--pairs', '0'], '--pairs 0: must be at least 1'),
    (['--recipes', 'dift-sd21'], '--recipes dift-sd21 needs its weights: pass --dift-sd21'),
    (['--recipes', 'dinov2-small'], '--recipes dinov2-small: unknown; choose from'),
    (['--out', 'results.txt'], '--out results.txt: the results are JSON'),
])
def test_argument_errors_are_one_line_without_heavy_imports(argv, message):
    proc = subprocess.run([sys.executable, '-X', 'importtime',
                           os.path.join(BENCH, 'correspondence_eval.py'), *argv],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith('import time:')]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-1000:]
    imported = {m.group(1).split('.')[0] for m in
                re.finditer(r'^import time:\s+\d+ \|\s+\d+ \| +(\S+)$', proc.stderr, re.M)}
    assert not imported & set(HEAVY)


def test_weights_choose_the_gpu_recipes_and_the_default_size():
    args = ce.parse_args(['--dinov2-b', 'facebook/dinov2-base'])
    assert args.recipes == ['dinov2-b-434'] and args.orig_size == 500
    args = ce.parse_args([])
    assert args.recipes == list(ce.CPU_RECIPES) and args.orig_size == 500


def test_minimal_run_prints_ratios_and_equal_size_outputs(tmp_path, capsys):
    out = tmp_path / 'eval.json'
    rows = ce.main(['--pairs', '2', '--batch', '2', '--kps', '4', '--repeats', '1',
                    '--orig-size', '64', '--out', str(out)])
    printed = capsys.readouterr().out
    for name in ce.CPU_RECIPES:
        assert re.search(rf'speed-up {name}: \d+\.\d\dx \(ours', printed), printed
    saved = json.loads(out.read_text())
    assert [r['recipe'] for r in saved['rows']] == list(ce.CPU_RECIPES)
    for row in saved['rows']:
        assert row['shapes_equal'] is True
        assert row['pairs'] == 2 and 2 <= row['keypoints'] <= 8
        assert row['speedup'] == pytest.approx(row['reference_s'] / row['ours_s'])
        assert row['ours_img_per_s'] == pytest.approx(2 * row['ours_pairs_per_s'])
        assert 0 <= row['pck_ours'] <= 100 and 0 <= row['pck_reference'] <= 100
    assert rows[0]['speedup'] == saved['rows'][0]['speedup']
