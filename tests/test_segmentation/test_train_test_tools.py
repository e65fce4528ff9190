"""One training iteration with tools/train.py and one evaluation with tools/test.py, on the
converted fake release, with the real distilled-student config.

Overrides only shrink the run: 1 iteration, batch 2, 64x64 crops, no validation during training,
test images resized to 128 instead of 512, no dataloader workers.
"""
import glob
import json
import math
import os
import os.path as osp
import re
import subprocess
import sys

import numpy as np

import pytest

from .conftest import CONFIG_DIR, REPO_ROOT

CONFIG = osp.join(CONFIG_DIR,
                  'bisenetv1_r18-d32-distilled-pre_2xb8-160k_celebamaskhq-448x448.py')
PYTHON = osp.join(REPO_ROOT, '.venv', 'bin', 'python')


def _python():
    return PYTHON if osp.exists(PYTHON) else sys.executable


def _run(args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', PYTHONUNBUFFERED='1',
               PYTHONWARNINGS='ignore')
    env.pop('DIFFTEACHER_TRACEBACK', None)
    proc = subprocess.run([_python()] + args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def _loader_options(root, splits):
    options = []
    for split in splits:
        options += [f'{split}_dataloader.dataset.data_root={root}',
                    f'{split}_dataloader.num_workers=0',
                    f'{split}_dataloader.persistent_workers=False']
    return options


def test_train_one_iteration_then_test_with_overlays(converted, distilled_r18, tmp_path):
    work_dir = str(tmp_path / 'work')
    code, out = _run([
        osp.join(REPO_ROOT, 'tools', 'train.py'), CONFIG, '--work-dir', work_dir,
        '--cfg-options', 'train_cfg.max_iters=1', 'train_dataloader.batch_size=2',
        'train_dataloader.dataset.pipeline.3.crop_size=(64,64)',
        'model.data_preprocessor.size=(64,64)', 'default_hooks.logger.interval=1',
        f'model.backbone.backbone_cfg.init_cfg.checkpoint={distilled_r18.path}',
        'randomness.seed=0', 'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None',
        *_loader_options(converted.root, ('train', ))
    ], cwd=str(tmp_path))
    assert code == 0, out[-5000:]
    # the context-path ResNet got every weight of the distilled student
    assert 'Loaded all 120 weights of ResNet' in out, out[-5000:]
    assert 'not loaded' not in out
    # the logged training iteration has a finite, positive total loss and its parts
    logged = re.findall(r'Iter\(train\) \[1/1\].*?\bloss: (\S+).*?decode\.loss_ce: (\S+)', out)
    assert logged, out[-5000:]
    total, decode_ce = (float(v) for v in logged[-1])
    assert math.isfinite(total) and total > 0 and 0 < decode_ce <= total
    checkpoint = osp.join(work_dir, 'iter_1.pth')
    assert osp.isfile(checkpoint), os.listdir(work_dir)

    # Only the test split's data root is given: the train split's default root does not exist
    # here, which mmseg's stock SegVisualizationHook would trip over (it builds the train loop).
    show_dir = str(tmp_path / 'show')
    predictions = str(tmp_path / 'predictions.pkl')
    code, out = _run([
        osp.join(REPO_ROOT, 'tools', 'test.py'), CONFIG, checkpoint, '--work-dir', work_dir,
        '--show-dir', show_dir, '--out', predictions,
        '--cfg-options', 'test_dataloader.dataset.pipeline.1.scale=(128,128)',
        *_loader_options(converted.root, ('test', ))
    ], cwd=str(tmp_path))
    assert code == 0, out[-5000:]
    metrics = json.loads(out.split('Test metrics: ')[-1].splitlines()[0])
    assert set(metrics) == {'mIoU', 'mF1', 'background_IoU', 'background_F1', 'aAcc'}
    # every score is a number (NaN would mean no part was scored at all)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values()), metrics
    # ... and equals the scores recomputed here from the dumped predictions and labels
    assert metrics == pytest.approx(_scores_from_predictions(predictions), abs=0.006)
    # the per-class table was printed, background kept out of the means
    assert 'background (not in means)' in out and 'l_eye' in out and 'hat' in out
    # one prediction overlay per test image
    overlays = glob.glob(osp.join(show_dir, '**', '*.png'), recursive=True)
    assert len(overlays) == 2, overlays


def _scores_from_predictions(path, num_classes=19, ignore_index=255):
    """mIoU / mF1 over the 18 parts (classes absent from both prediction and label left out),
    background IoU / F1 and pixel accuracy, in percent, counted pixel by pixel with numpy from
    the predictions that tools/test.py dumped (written by this test, so unpickling is safe)."""
    import pickle
    with open(path, 'rb') as f:
        samples = pickle.load(f)
    tp = np.zeros(num_classes)
    pred_count = np.zeros(num_classes)
    gt_count = np.zeros(num_classes)
    correct = total = 0
    for sample in samples:
        pred = np.asarray(sample['pred_sem_seg']['data']).squeeze()
        gt = np.asarray(sample['gt_sem_seg']['data']).squeeze()
        keep = gt != ignore_index
        pred, gt = pred[keep], gt[keep]
        for c in range(num_classes):
            tp[c] += np.sum((pred == c) & (gt == c))
            pred_count[c] += np.sum(pred == c)
            gt_count[c] += np.sum(gt == c)
        correct += np.sum(pred == gt)
        total += gt.size
    union = pred_count + gt_count - tp
    scored = union > 0
    iou = np.where(scored, tp / np.maximum(union, 1), np.nan)
    f1 = np.where(scored, 2 * tp / np.maximum(pred_count + gt_count, 1), np.nan)
    return dict(mIoU=100 * np.nanmean(iou[1:]), mF1=100 * np.nanmean(f1[1:]),
                background_IoU=100 * iou[0], background_F1=100 * f1[0],
                aAcc=100 * correct / total)
