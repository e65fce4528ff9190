"""``tools/train.py --auto-scale-lr``: mmengine's Runner scales the lr by total batch / base batch.

The flag only sets ``auto_scale_lr.enable``; the scaling itself is mmengine's ``Runner.scale_lr``,
called in ``Runner.train()`` once the optimizer is built. The test runs the real Runner on the tiny
config and stops it right after that call, so no iteration is trained.
"""
import glob
import os.path as osp
import re

import pytest
from mmengine.config import Config

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY_CFG = osp.join(REPO_ROOT, 'tests', 'fixtures', 'configs', 'tiny-resnet18_1xb4-2e_synthetic.py')
TINY_LR = 0.05  # optim_wrapper.optimizer.lr of the tiny config, for its batch of 4 (1 process)


class _StopAfterScaling(Exception):
    """Raised by the spy once the lr is scaled: the test needs no training step."""


@pytest.fixture
def scale_lr_calls(monkeypatch):
    """Spy on ``Runner.scale_lr``: records (auto_scale_lr, lrs before, lrs after), then stops."""
    from mmengine.runner import Runner
    calls = []
    original = Runner.scale_lr

    def spy(self, optim_wrapper, auto_scale_lr=None):
        before = [group['lr'] for group in optim_wrapper.param_groups]
        original(self, optim_wrapper, auto_scale_lr)
        after = [group['lr'] for group in optim_wrapper.param_groups]
        calls.append((dict(auto_scale_lr or {}), before, after))
        raise _StopAfterScaling

    monkeypatch.setattr(Runner, 'scale_lr', spy)
    monkeypatch.delenv('DIFFTEACHER_TRACEBACK', raising=False)
    monkeypatch.setenv('LOCAL_RANK', '')  # set-then-delete: monkeypatch restores the original
    monkeypatch.delenv('LOCAL_RANK')
    return calls


def test_auto_scale_lr_scales_by_total_batch_over_base(scale_lr_calls, tools_kit, tiny_data,
                                                       tmp_path, monkeypatch):
    train = tools_kit.load('train')
    monkeypatch.chdir(tmp_path)
    argv = [TINY_CFG, '--work-dir', str(tmp_path / 'wd'), '--auto-scale-lr', '--cfg-options',
            *tools_kit.data_options(tiny_data), 'auto_scale_lr.base_batch_size=16']
    with pytest.raises(_StopAfterScaling):
        train.cli(argv)
    (auto_scale_lr, before, after), = scale_lr_calls
    assert auto_scale_lr == dict(base_batch_size=16, enable=True)
    # one process x batch 4 against a base batch of 16: lr x 0.25
    assert before == [pytest.approx(TINY_LR)] * len(before)
    assert after == [pytest.approx(TINY_LR * 4 / 16)] * len(before)


def test_auto_scale_lr_without_base_batch_size_is_a_usage_error(scale_lr_calls, tools_kit,
                                                               capsys):
    train = tools_kit.load('train')
    assert train.cli([TINY_CFG, '--auto-scale-lr']) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('tools/train.py: error: --auto-scale-lr needs '
                          'auto_scale_lr.base_batch_size')
    assert 'the config has no auto_scale_lr' in err and '\n' not in err
    assert train.cli([TINY_CFG, '--auto-scale-lr', '--cfg-options',
                      'auto_scale_lr.base_batch_size=0']) == 2
    assert "auto_scale_lr={'base_batch_size': 0}" in capsys.readouterr().err
    assert not scale_lr_calls  # stopped before any Runner was built


@pytest.mark.parametrize('path', sorted(glob.glob(
    osp.join(REPO_ROOT, 'landmark', 'configs', 'wflw', '*.py'))), ids=osp.basename)
def test_landmark_configs_name_their_base_batch(path):
    """``auto_scale_lr.base_batch_size`` is the total batch of the file name (GPUs x batch)."""
    gpus, batch = map(int, re.search(r'_(\d+)xb(\d+)-', osp.basename(path)).groups())
    cfg = Config.fromfile(path, import_custom_modules=False)
    assert cfg.train_dataloader.batch_size == batch
    assert cfg.auto_scale_lr == dict(base_batch_size=gpus * batch)
