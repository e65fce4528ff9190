"""The Runner's load_from / resume refuse a checkpoint that does not fit the model.

(common/io/runner_load.py; tools/test.py runs the same path end to end in
tests/test_tools/test_train_test_tools.py.) A stub stands in for the Runner, as in
test_safe_checkpoint.py, so that no Runner's global state leaks into other tests.
"""
import functools
import logging
import types

import pytest
import torch
import torch.nn as nn

import common  # noqa: F401  (installs the checks)
from common.io import (CheckpointMismatchError, PartialLoadWarning, check_checkpoint_fits,
                       save_checkpoint)


class Net(nn.Module):
    """25 layers with a weight and a bias each (50 weights), plus one BatchNorm."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(2, 2) for _ in range(25))
        self.bn = nn.BatchNorm1d(2)


def _state(net, drop=(), rename=None):
    state = {k: v.clone() + 1 for k, v in net.state_dict().items() if k not in drop}
    if rename:
        state = {rename(k): v for k, v in state.items()}
    return state


def _runner(model):
    from mmengine.runner import Runner
    runner = types.SimpleNamespace(model=model, logger=logging.getLogger('test_runner_load'),
                                   call_hook=lambda *a, **k: None)
    runner.load_checkpoint = functools.partial(Runner.load_checkpoint, runner)
    return runner


def _weights(net):
    return [k for k in net.state_dict() if not k.endswith('num_batches_tracked')]


def test_load_from_matching_nothing_fails_with_the_missing_keys(tmp_path):
    net = Net()
    path = tmp_path / 'other.pth'
    save_checkpoint({'state_dict': _state(net, rename=lambda k: 'student.' + k)}, path)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match=r"fits none of the 54 weights of Net \(e.g. "
                       r"checkpoint key 'student.bn.bias'.*missing \(54\): bn.bias, bn.running_mean"
                       r".*\(\+34 more\)"):
        _runner(net).load_checkpoint(str(path))
    for key, value in net.state_dict().items():  # nothing was loaded
        assert torch.equal(value, before[key]), key


def test_load_from_missing_more_than_half_fails_and_lists_keys(tmp_path):
    net = Net()
    keys = _weights(net)
    dropped = keys[:28]  # 28 of 54 weights missing
    path = tmp_path / 'half.pth'
    save_checkpoint({'state_dict': _state(net, drop=dropped)}, path)
    with pytest.raises(CheckpointMismatchError,
                       match=r'leaves 28 of the 54 weights of Net at their random '
                       r'initialisation \(missing \(28\): ' + r'.*\(\+8 more\)'):
        _runner(net).load_checkpoint(str(path))


def test_load_from_counts_shape_mismatches_as_not_loaded(tmp_path):
    net = Net()
    state = _state(net)
    for key in _weights(net)[:30]:
        state[key] = torch.zeros(7)
    path = tmp_path / 'shapes.pth'
    save_checkpoint(state, path)
    with pytest.raises(CheckpointMismatchError, match=r'shape mismatch \(30\): layers.0.bias '
                       r'\(checkpoint \(7,\), model \(2,\)\)'):
        _runner(net).load_checkpoint(str(path))


def test_load_from_with_a_small_gap_warns_and_loads(tmp_path):
    net = Net()
    path = tmp_path / 'most.pth'
    state = _state(net, drop=['layers.3.bias', 'bn.num_batches_tracked'])  # counters are ignored
    save_checkpoint({'state_dict': {'module.' + k: v for k, v in state.items()}}, path)
    with pytest.warns(PartialLoadWarning, match=r'loaded 53/54 weights of Net; not loaded: '
                      r'missing \(1\): layers.3.bias$'):
        _runner(net).load_checkpoint(str(path))
    assert torch.equal(net.layers[0].weight, state['layers.0.weight'])


def test_resume_needs_every_weight(tmp_path):
    from mmengine.runner import Runner
    net = Net()
    path = tmp_path / 'epoch_1.pth'
    save_checkpoint({'state_dict': _state(net, drop=['layers.24.weight']),
                     'meta': {'epoch': 1, 'iter': 2}}, path)
    runner = _runner(net)
    with pytest.raises(CheckpointMismatchError, match=r"Cannot resume from '.*epoch_1.pth': 1 of "
                       r"the 54 weights of Net .*missing \(1\): layers.24.weight\)"):
        Runner.resume(runner, str(path), map_location='cpu')
    # the same file is fine as load_from (one weight missing: a warning)
    with pytest.warns(PartialLoadWarning):
        runner.load_checkpoint(str(path))


def test_check_ignores_counters_and_reports(tmp_path):
    net = Net()
    report = check_checkpoint_fits(net, _state(net, drop=['bn.num_batches_tracked']), 'x.pth',
                                   resume=True)
    assert len(report['matched']) == 54 and not report['missing'] and not report['unexpected']


class NetWithPolicy(Net):
    """A model whose ``policy`` sub-module older checkpoints lack (declared optional)."""

    optional_checkpoint_keys = ('policy.', )

    def __init__(self):
        super().__init__()
        self.policy = nn.Linear(2, 2)


def test_declared_optional_keys_only_warn_on_resume(tmp_path):
    from mmengine.runner import Runner
    net = NetWithPolicy()
    path = tmp_path / 'epoch_1.pth'
    saved = _state(net, drop=['policy.weight', 'policy.bias'])
    save_checkpoint({'state_dict': saved, 'meta': {'epoch': 1, 'iter': 2}}, path)
    runner = _runner(net)
    with pytest.warns(PartialLoadWarning, match=r'missing, optional \(2\): policy.bias, '
                      r'policy.weight'):
        with pytest.raises(AttributeError, match='train_loop'):  # past the check: the stub ends
            Runner.resume(runner, str(path), map_location='cpu')
    assert torch.equal(net.layers[0].weight, saved['layers.0.weight'])  # the weights loaded
