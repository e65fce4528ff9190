"""One training iteration and one evaluation through tools/train.py and tools/test.py.

The real distilled-student config runs on the converted fake release, shrunk on the command line
(64x64 crops, 16x16 heatmaps, batch 2, one iteration, no worker processes).
"""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

from .conftest import CONFIG_DIR, REPO
from .fake_wflw import ATTRIBUTES

CONFIG = osp.join(CONFIG_DIR, 'td-hm_res50-distilled-pre_2xb64-60e_wflw-256x256.py')
VENV_PYTHON = osp.join(REPO, '.venv', 'bin', 'python')
PYTHON = VENV_PYTHON if osp.exists(VENV_PYTHON) else sys.executable


def tiny_options(data_root, checkpoint):
    small, heatmap = '(64,64)', '(16,16)'
    options = [
        f'model.backbone.init_cfg.checkpoint={checkpoint}',
        f'model.head.decoder.input_size={small}', f'model.head.decoder.heatmap_size={heatmap}',
        # train pipeline: 4 TopdownAffine, 5 GenerateTarget; val/test pipeline: 2 TopdownAffine
        f'train_dataloader.dataset.pipeline.4.input_size={small}',
        f'train_dataloader.dataset.pipeline.5.encoder.input_size={small}',
        f'train_dataloader.dataset.pipeline.5.encoder.heatmap_size={heatmap}',
        f'val_dataloader.dataset.pipeline.2.input_size={small}',
        f'test_dataloader.dataset.pipeline.2.input_size={small}',
        'train_dataloader.batch_size=2', '+train_dataloader.dataset.indices=2',
        'train_cfg.max_epochs=1', 'default_hooks.logger.interval=1',
        '+default_hooks.checkpoint.save_optimizer=False',
    ]
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options += [f'{loader}.dataset.data_root={data_root}', f'{loader}.num_workers=0',
                    f'{loader}.persistent_workers=False']
    return options


def run(args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='2')
    proc = subprocess.run([PYTHON] + args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


def test_train_one_iteration_then_test_with_drawings(fake_wflw, distilled_checkpoint, tmp_path):
    ckpt, _ = distilled_checkpoint
    options = tiny_options(fake_wflw['root'], ckpt)
    work_dir = tmp_path / 'train'
    out = run(['tools/train.py', CONFIG, '--work-dir', str(work_dir), '--cfg-options'] + options,
              cwd=REPO)
    assert 'Loaded all 318 weights of ResNet' in out  # the distilled student, every key
    assert 'Epoch(train) [1][1/1]' in out
    assert osp.isfile(work_dir / 'epoch_1.pth')
    assert any(n.startswith('best_NME') for n in os.listdir(work_dir))  # validated, NME found

    show_dir, metrics_file = tmp_path / 'show', tmp_path / 'metrics.json'
    out = run(['tools/test.py', CONFIG, str(work_dir / 'epoch_1.pth'), '--work-dir',
               str(tmp_path / 'test'), '--show-dir', str(show_dir), '--out', str(metrics_file),
               '--cfg-options'] + options, cwd=REPO)
    with open(metrics_file) as f:
        metrics = json.load(f)
    assert set(metrics) == {'NME'} | {f'NME/{a}' for a in ATTRIBUTES}  # one run, all subsets
    assert all(v > 0 for v in metrics.values())
    drawings = sorted(os.listdir(show_dir))
    assert len(drawings) == 4 and all(n.endswith('.jpg') for n in drawings)  # one per face
