"""One training iteration with tools/train.py and one evaluation with tools/test.py, on the
converted fake release, with the real distilled-student config.

Overrides only shrink the run: 1 iteration, batch 2, 64x64 crops, no validation during training,
test images resized to 128 instead of 512, no dataloader workers.
"""
import glob
import json
import os
import os.path as osp
import subprocess
import sys

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
    assert 'loss' in out
    checkpoint = osp.join(work_dir, 'iter_1.pth')
    assert osp.isfile(checkpoint), os.listdir(work_dir)

    # Only the test split's data root is given: the train split's default root does not exist
    # here, which mmseg's stock SegVisualizationHook would trip over (it builds the train loop).
    show_dir = str(tmp_path / 'show')
    metrics_file = str(tmp_path / 'metrics.json')
    code, out = _run([
        osp.join(REPO_ROOT, 'tools', 'test.py'), CONFIG, checkpoint, '--work-dir', work_dir,
        '--show-dir', show_dir, '--out', metrics_file,
        '--cfg-options', 'test_dataloader.dataset.pipeline.1.scale=(128,128)',
        *_loader_options(converted.root, ('test', ))
    ], cwd=str(tmp_path))
    assert code == 0, out[-5000:]
    with open(metrics_file) as f:
        metrics = json.load(f)
    assert set(metrics) == {'mIoU', 'mF1', 'background_IoU', 'background_F1', 'aAcc'}
    assert all(0 <= v <= 100 for v in metrics.values() if v == v)  # NaN-safe
    # the per-class table was printed, background kept out of the means
    assert 'background (not in means)' in out and 'l_eye' in out and 'hat' in out
    # one prediction overlay per test image
    overlays = glob.glob(osp.join(show_dir, '**', '*.png'), recursive=True)
    assert len(overlays) == 2, overlays
