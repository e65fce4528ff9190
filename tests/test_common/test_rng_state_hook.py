"""RNGStateHook: generator states survive a checkpoint written and read by the safe IO."""
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.registry import HOOKS, DefaultScope

import common  # noqa: F401
import common.engine  # noqa: F401  registers RNGStateHook
from common.engine import RNGStateHook
from common.engine.rng_state_hook import capture_rng_state, restore_rng_state
from common.io import load_checkpoint, save_checkpoint


def draws():
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.normal(size=1).tolist(),
            [random.random() for _ in range(3)], random.gauss(0, 1))


def runner(resume, world_size=1, diff_rank_seed=False):
    return SimpleNamespace(_resume=resume, world_size=world_size,
                           _randomness_cfg=dict(seed=0, diff_rank_seed=diff_rank_seed))


def test_states_round_trip_through_the_safe_loader(tmp_path):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    np.random.normal(), random.gauss(0, 1)  # leave cached Gaussians in numpy and random
    checkpoint = {}
    RNGStateHook().before_save_checkpoint(runner(False), checkpoint)
    expected = draws()
    path = str(tmp_path / 'ckpt.pth')
    save_checkpoint(checkpoint, path)
    loaded = load_checkpoint(path)  # weights_only=True with the allow-list: no pickled classes
    torch.manual_seed(2), np.random.seed(2), random.seed(2)
    assert draws() != expected
    hook = RNGStateHook()
    hook.after_load_checkpoint(runner(True), loaded)
    draws()  # whatever the runner does between loading and training is overridden...
    hook.before_train(runner(True))  # ...when the states are applied before the first epoch
    assert draws() == expected


def test_load_from_without_resume_keeps_the_run_seeding():
    checkpoint = dict(rng_state=capture_rng_state())
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)
    hook = RNGStateHook()
    hook.after_load_checkpoint(runner(False), checkpoint)
    hook.before_train(runner(False))
    assert torch.equal(torch.rand(2), expected)


def test_ranks_with_different_seeds_are_left_alone():
    hook = RNGStateHook()
    hook.after_load_checkpoint(runner(True, world_size=2, diff_rank_seed=True),
                               dict(rng_state=capture_rng_state()))
    assert hook._pending is None
    hook.after_load_checkpoint(runner(True, world_size=2), dict(rng_state=capture_rng_state()))
    assert hook._pending is not None


def test_restore_is_the_inverse_of_capture():
    state = capture_rng_state()
    expected = draws()
    restore_rng_state(state)
    assert draws() == expected


@pytest.mark.parametrize('scope', [None, 'mmpretrain', 'mmseg', 'mmpose'])
def test_registered_in_the_root_registry_for_every_scope(scope):
    with DefaultScope.overwrite_default_scope(scope):
        hook = HOOKS.build(dict(type='RNGStateHook'))
    assert isinstance(hook, RNGStateHook) and hook.priority == 'VERY_LOW'
