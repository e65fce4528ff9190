"""``tools/train.py`` warns at start-up when a teacher feature cache meets random augmentation
(the cache keys entries by the exact input tensor, so such a cache never hits and only fills
the disk)."""
import os
import os.path as osp
import subprocess
import sys

import pytest

from tests.helpers.tiny_models import save_ddpm_pipeline

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FIXED_T_CFG = osp.join(REPO, 'classification_distill', 'configs', 'demo_digits',
                       'repfusion-fixed-t100_resnet18-w16_1xb64-20e_digits.py')

CONFIG = '''
_base_ = [{base!r}]
model = dict(teacher=dict(pretrained={teacher!r}, seed=0, cache_dir={cache!r}))
train_dataloader = dict(
    batch_size=4,
    dataset=dict(indices=8, image_size=16, pipeline={pipeline}))
train_cfg = dict(max_epochs=1)
default_hooks = dict(logger=dict(interval=1))
'''
RANDOM = "[dict(type='RandomCrop', crop_size=16, padding=2), dict(type='PackInputs')]"
FIXED = "[dict(type='PackInputs')]"


@pytest.fixture(scope='module')
def teacher(tmp_path_factory):
    return save_ddpm_pipeline(str(tmp_path_factory.mktemp('cache_warning') / 'teacher'))


def _train(tmp_path, teacher, pipeline):
    cache = str(tmp_path / 'cache')
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(CONFIG.format(base=FIXED_T_CFG, teacher=teacher, cache=cache,
                                 pipeline=pipeline))
    env = dict(os.environ, HF_HUB_OFFLINE='1', PYTHONUNBUFFERED='1')
    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'train.py'), str(cfg), '--work-dir',
         str(tmp_path / 'work')], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


@pytest.mark.parametrize('pipeline, warned', [(RANDOM, True), (FIXED, False)],
                         ids=['random-crop', 'deterministic'])
def test_start_up_warning(tmp_path, teacher, pipeline, warned):
    out = _train(tmp_path, teacher, pipeline)
    assert ('will never hit' in out) is warned, out[-3000:]
    if warned:
        assert 'RandomCrop' in out and 'model.teacher.cache_dir' in out
