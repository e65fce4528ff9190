"""Safe checkpoint IO (common/io): loading, refusing, atomic saving, reporting initializer.

The real mmengine checkpoint comes from the session's tiny training run (tests/conftest.py).
"""
import functools
import os
import os.path as osp
import shlex
import types

import pytest
import torch
import torch.nn as nn

import common  # noqa: F401  (patches mmengine's loader and file writes)
from common.io import (CheckpointLoadError, UnsafeCheckpointError, load_checkpoint,
                       save_checkpoint)
from common.io.pretrained_init import PartialLoadWarning, PretrainedLoadError


class _ShellPayload:
    """Pickles as ``os.system('touch MARKER')``: runs when unpickled without restrictions."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {shlex.quote(self.marker)}', ))


class _ExecPayload:
    """Pickles as ``exec(...)`` from builtins (a module torch does not block by name)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f'open({self.marker!r}, "w").close()', ))


class _GetattrPayload:
    """Pickles as ``getattr(HistoryBuffer, '__init__')``: the getattr stand-in must refuse it."""

    def __reduce__(self):
        from mmengine.logging.history_buffer import HistoryBuffer
        return (getattr, (HistoryBuffer, '__init__'))


def _evil_checkpoint(path, payload):
    torch.save({'state_dict': {'w': torch.zeros(2)}, 'meta': {'note': payload}}, str(path))
    return str(path)


@pytest.fixture
def real_checkpoint(trained_run):
    return osp.join(trained_run.work_dir, 'epoch_2.pth')


# ----------------------------------------------------------------------------- loading

def test_real_mmengine_checkpoint_loads(real_checkpoint):
    from mmengine.logging.history_buffer import HistoryBuffer
    ckpt = load_checkpoint(real_checkpoint)
    assert ckpt['meta']['epoch'] == 2
    loss = ckpt['message_hub']['log_scalars']['train/loss']
    assert isinstance(loss, HistoryBuffer)
    assert loss.data[0].dtype.kind == 'f' and loss.data[0].shape == (4, )  # numpy history
    assert loss.mean() == pytest.approx(float(loss.data[0].mean()))
    assert loss.statistics('min') == loss.min()  # statistics methods survived the round trip
    assert 'optimizer' in ckpt and 'param_schedulers' in ckpt


def test_mmengine_loaders_go_through_the_safe_loader(real_checkpoint, tmp_path):
    from mmengine.config import Config
    from mmengine.runner import load_checkpoint as mmengine_load_checkpoint
    from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint
    from mmpretrain.registry import MODELS

    assert CheckpointLoader._get_checkpoint_loader(real_checkpoint).__module__ == \
        'common.io.checkpoint'
    cfg = Config.fromfile(osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                                   'fixtures', 'configs', 'tiny-resnet18_1xb4-2e_synthetic.py'))
    with MODELS.switch_scope_and_registry('mmpretrain') as registry:
        model = registry.build(cfg.model)
    mmengine_load_checkpoint(model, real_checkpoint, map_location='cpu', strict=True)
    saved = _load_checkpoint(real_checkpoint)['state_dict']
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key

    marker = tmp_path / 'owned'
    evil = _evil_checkpoint(tmp_path / 'evil.pth', _ShellPayload(marker))
    with pytest.raises(UnsafeCheckpointError, match=r"Refused to load '.*evil.pth'.*posix.system"):
        _load_checkpoint(evil)
    with pytest.raises(UnsafeCheckpointError, match=r"Refused to load '.*evil.pth'"):
        mmengine_load_checkpoint(model, evil)
    assert not marker.exists()


@pytest.mark.parametrize('payload_cls', [_ShellPayload, _ExecPayload])
def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path, payload_cls):
    # control: the payload is live when loaded the unsafe way
    control = tmp_path / 'control'
    torch.load(_evil_checkpoint(tmp_path / 'control.pth', payload_cls(control)),
               weights_only=False)
    assert control.exists()

    marker = tmp_path / 'marker'
    path = _evil_checkpoint(tmp_path / 'evil.pth', payload_cls(marker))
    with pytest.raises(UnsafeCheckpointError, match='Refused to load'):
        load_checkpoint(path)
    assert not marker.exists()


def test_getattr_stand_in_only_answers_history_buffer_statistics(tmp_path):
    path = _evil_checkpoint(tmp_path / 'getattr.pth', _GetattrPayload())
    with pytest.raises(UnsafeCheckpointError, match='getattr'):
        load_checkpoint(path)


def test_runner_resume_goes_through_the_safe_loader(tmp_path):
    """mmengine's own ``Runner.resume`` -> ``Runner.load_checkpoint`` path refuses the file.

    (tools/train.py --resume runs this path for real in tests/test_tools; a stub stands in for
    the Runner here so that no Runner's global state leaks into other tests.)
    """
    from mmengine.runner import Runner
    marker = tmp_path / 'owned'
    evil = _evil_checkpoint(tmp_path / 'evil.pth', _ShellPayload(marker))
    runner = types.SimpleNamespace()
    runner.load_checkpoint = functools.partial(Runner.load_checkpoint, runner)
    with pytest.raises(UnsafeCheckpointError, match='Refused to load'):
        Runner.resume(runner, evil)
    assert not marker.exists()


def test_truncated_or_missing_checkpoint_is_a_load_error(real_checkpoint, tmp_path):
    data = open(real_checkpoint, 'rb').read()
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointLoadError, match='truncated'):
        load_checkpoint(truncated)
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint at all')
    with pytest.raises(CheckpointLoadError, match=r"Could not read checkpoint '.*garbage.pth': "
                       r"the file is truncated or is not a PyTorch checkpoint"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointLoadError, match='not found'):
        load_checkpoint(tmp_path / 'missing.pth')


# ----------------------------------------------------------------------------- saving

def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_save_checkpoint_is_atomic(tmp_path):
    path = tmp_path / 'model.pth'
    save_checkpoint({'state_dict': {'w': torch.ones(3)}}, path)
    assert os.listdir(tmp_path) == ['model.pth']
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()  # not mkstemp's 0600
    before = path.read_bytes()

    with pytest.raises(AttributeError, match="Can't pickle local object"):
        save_checkpoint({'state_dict': {'w': torch.zeros(3)}, 'bad': lambda: None}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ['model.pth']
    assert torch.equal(load_checkpoint(path)['state_dict']['w'], torch.ones(3))


def test_mmengine_file_writes_are_atomic(tmp_path, monkeypatch):
    from mmengine.runner.checkpoint import save_checkpoint as mmengine_save_checkpoint
    path = tmp_path / 'epoch_1.pth'
    mmengine_save_checkpoint({'state_dict': {'w': torch.ones(2)}}, str(path))
    before = path.read_bytes()

    def failing_fsync(fd):
        raise OSError('disk full')

    monkeypatch.setattr(os, 'fsync', failing_fsync)  # fail in the middle of the write
    with pytest.raises(OSError, match='disk full'):
        mmengine_save_checkpoint({'state_dict': {'w': torch.zeros(2)}}, str(path))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ['epoch_1.pth']


def _record_fsync_and_replace(monkeypatch):
    """Record ``('fsync', path)`` and ``('replace', src, dst)`` in the order they happen."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(('fsync', os.readlink(f'/proc/self/fd/{fd}')))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(('replace', os.fspath(src), os.fspath(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, 'fsync', fsync)
    monkeypatch.setattr(os, 'replace', replace)
    return events


def _assert_flushed_then_renamed(events, path):
    """The temporary file is fsynced, renamed onto ``path``, then the folder is fsynced."""
    path = os.fspath(path)
    renames = [i for i, e in enumerate(events) if e[0] == 'replace' and e[2] == path]
    assert len(renames) == 1, events
    i = renames[0]
    tmp = events[i][1]
    assert osp.dirname(tmp) == osp.dirname(path) and tmp != path
    assert ('fsync', tmp) in events[:i], events  # the data reaches the disk before the rename
    assert ('fsync', osp.dirname(path)) in events[i + 1:], events  # and the rename after it


@pytest.mark.skipif(not osp.isdir('/proc/self/fd'), reason='needs /proc to name the fsynced fd')
def test_checkpoint_saves_are_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    from mmengine.runner.checkpoint import save_checkpoint as mmengine_save_checkpoint
    events = _record_fsync_and_replace(monkeypatch)
    path = tmp_path / 'ours.pth'
    save_checkpoint({'w': torch.ones(2)}, path)  # torch.save to the temporary path
    _assert_flushed_then_renamed(events, path)
    events.clear()
    path = tmp_path / 'epoch_1.pth'
    mmengine_save_checkpoint({'state_dict': {'w': torch.ones(2)}}, str(path))
    _assert_flushed_then_renamed(events, path)
    assert torch.equal(load_checkpoint(path)['state_dict']['w'], torch.ones(2))


def _hook_and_runner(tmp_path):
    """mmengine's CheckpointHook after ``before_train`` on a stub runner (keeps 1 checkpoint)."""
    import logging

    from mmengine.hooks import CheckpointHook
    info = {}
    runner = types.SimpleNamespace(
        work_dir=str(tmp_path), logger=logging.getLogger('test_safe_checkpoint'),
        message_hub=types.SimpleNamespace(runtime_info=info, update_info=info.__setitem__,
                                          get_info=info.get))

    def runner_save_checkpoint(out_dir, filename, *args, **kwargs):
        save_checkpoint({'state_dict': {'w': torch.ones(1)}}, osp.join(out_dir, filename))

    runner.save_checkpoint = runner_save_checkpoint
    hook = CheckpointHook(interval=1, max_keep_ckpts=1)
    hook.before_train(runner)
    return hook, runner


@pytest.mark.skipif(not osp.isdir('/proc/self/fd'), reason='needs /proc to name the fsynced fd')
def test_last_checkpoint_file_is_written_atomically(tmp_path, monkeypatch):
    hook, runner = _hook_and_runner(tmp_path)
    events = _record_fsync_and_replace(monkeypatch)
    hook._save_checkpoint_with_step(runner, 1, meta={})
    last = tmp_path / 'last_checkpoint'
    _assert_flushed_then_renamed(events, last)
    assert last.read_text() == str(tmp_path / 'epoch_1.pth')

    hook._save_checkpoint_with_step(runner, 2, meta={})
    assert last.read_text() == str(tmp_path / 'epoch_2.pth')
    assert sorted(os.listdir(tmp_path)) == ['epoch_2.pth', 'last_checkpoint']  # max_keep_ckpts

    def failing_fsync(fd):
        raise OSError('disk full')

    monkeypatch.setattr(os, 'fsync', failing_fsync)  # the write of last_checkpoint fails
    monkeypatch.setattr(runner, 'save_checkpoint', lambda *a, **k: None)
    with pytest.raises(OSError, match='disk full'):
        hook._save_checkpoint_with_step(runner, 3, meta={})
    assert last.read_text() == str(tmp_path / 'epoch_2.pth')  # the old content, complete
    assert os.listdir(tmp_path) == ['last_checkpoint']  # no temp file (epoch_2: max_keep_ckpts)


# ----------------------------------------------------------------------------- safetensors

def test_safetensors_checkpoints_load_directly(tmp_path):
    from mmengine.runner.checkpoint import _load_checkpoint
    from safetensors.torch import save_file
    state = {'conv.weight': torch.full((4, 3, 3, 3), 0.5), 'conv.bias': torch.full((4, ), 0.25),
             'fc.weight': torch.ones(2, 4), 'fc.bias': torch.zeros(2)}
    path = tmp_path / 'model.safetensors'
    save_file(state, str(path))
    loaded = load_checkpoint(path)
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], v) for k, v in state.items())
    assert set(_load_checkpoint(str(path))) == set(state)  # mmengine's loader: load_from
    net = _net(checkpoint=str(path))  # init_cfg=dict(type='Pretrained', checkpoint=...)
    net.init_weights()
    assert torch.all(net.conv.weight == 0.5) and torch.all(net.fc.weight == 1)

    truncated = tmp_path / 'truncated.safetensors'
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointLoadError, match=r"Could not read safetensors checkpoint "
                       r"'.*truncated.safetensors'"):
        load_checkpoint(truncated)


# ----------------------------------------------------------------------------- Pretrained

def _net(**init_cfg):
    from mmengine.model import BaseModule

    class Net(BaseModule):

        def __init__(self):
            super().__init__(init_cfg=dict(type='Pretrained', **init_cfg))
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

    return Net()


@pytest.fixture
def backbone_checkpoint(tmp_path):
    state = {
        'backbone.conv.weight': torch.full((4, 3, 3, 3), 0.5),
        'backbone.conv.bias': torch.full((4, ), 0.25),
        'backbone.extra.weight': torch.zeros(1),
        'head.fc.weight': torch.zeros(2, 4),
    }
    path = tmp_path / 'student.pth'
    save_checkpoint({'state_dict': state, 'meta': {}}, path)
    return str(path)


def test_pretrained_warns_with_missing_and_unexpected_keys(backbone_checkpoint):
    net = _net(checkpoint=backbone_checkpoint, prefix='backbone')
    with pytest.warns(PartialLoadWarning) as record:
        net.init_weights()
    message = str(record[0].message)
    assert 'missing (2): fc.bias, fc.weight' in message
    assert 'unexpected (1): extra.weight' in message
    assert torch.all(net.conv.weight == 0.5) and torch.all(net.conv.bias == 0.25)


def test_pretrained_reports_shape_mismatch(tmp_path):
    path = tmp_path / 'other.pth'
    save_checkpoint({'conv.weight': torch.zeros(8, 3, 3, 3), 'conv.bias': torch.ones(4)}, path)
    net = _net(checkpoint=str(path))
    with pytest.warns(PartialLoadWarning, match=r'mismatched \(1\): conv.weight'):
        net.init_weights()
    assert torch.all(net.conv.bias == 1)


def test_pretrained_fails_when_prefix_absent_or_nothing_matches(backbone_checkpoint):
    with pytest.raises(PretrainedLoadError, match="prefix 'neck.'"):
        _net(checkpoint=backbone_checkpoint, prefix='neck').init_weights()
    with pytest.raises(PretrainedLoadError, match='None of the'):
        _net(checkpoint=backbone_checkpoint).init_weights()  # keys keep their "backbone."


def test_pretrained_loads_through_the_safe_loader(tmp_path):
    marker = tmp_path / 'owned'
    evil = _evil_checkpoint(tmp_path / 'evil.pth', _ShellPayload(marker))
    with pytest.raises(UnsafeCheckpointError, match=r"Refused to load '.*evil.pth'"):
        _net(checkpoint=evil).init_weights()
    assert not marker.exists()
