"""A REINFORCE policy distillation killed with SIGKILL and resumed with ``--resume`` ends with the
same weights (student, connectors, policy net, task head, reward baseline) as a run that was
never interrupted: the policy is in the checkpoint and ``RNGStateHook`` restores the generators.

The runs are the digits demo's policy config shrunk (32 images of 16x16, batch 8, 4 epochs, a
tiny teacher from tests/helpers), through ``tools/train.py`` in subprocesses.
"""
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
import torch

from common.io import load_checkpoint, state_dict_from_checkpoint
from tests.helpers.tiny_models import save_ddpm_pipeline

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
POLICY_CFG = osp.join(REPO, 'classification_distill', 'configs', 'demo_digits',
                      'repfusion-policy_resnet18-w16_1xb64-20e_digits.py')
EPOCHS = 4

CONFIG = '''
_base_ = [{base!r}]
model = dict(teacher=dict(pretrained={teacher!r}))
train_dataloader = dict(
    batch_size=8,
    dataset=dict(indices=32, image_size=16,
                 pipeline=[dict(type='RandomCrop', crop_size=16, padding=2),
                           dict(type='PackInputs')]))
train_cfg = dict(max_epochs={epochs})
param_scheduler = dict(T_max={epochs})
# RNGStateHook comes from the shared runtime (common/configs/_base_/default_runtime.py)
custom_hooks = [dict(type='EntropyDecayHook', end_epoch=2)]
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=1, max_keep_ckpts=-1, save_last=True))
'''


@pytest.fixture(scope='module')
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp('policy_resume')
    teacher = save_ddpm_pipeline(str(root / 'teacher'))
    path = root / 'tiny-policy.py'
    path.write_text(CONFIG.format(base=POLICY_CFG, teacher=teacher, epochs=EPOCHS))
    return str(path)


def env():
    out = dict(os.environ)
    out.update(HF_HUB_OFFLINE='1', PYTHONUNBUFFERED='1', PYTHONWARNINGS='ignore',
               OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')  # same threads in every run
    out['PYTHONPATH'] = os.pathsep.join(p for p in (REPO, out.get('PYTHONPATH')) if p)
    return out


def train(config, work_dir, log, *extra):
    """Start tools/train.py; its output goes to the file ``log`` (no pipe to fill up)."""
    args = [sys.executable, osp.join(REPO, 'tools', 'train.py'), config, '--work-dir', work_dir,
            *extra]
    with open(log, 'w') as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(args, cwd=REPO, env=env(), stdout=out, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def output(proc):
    with open(proc.log) as f:
        return f.read()


def finish(proc, timeout=240):
    proc.wait(timeout=timeout)
    assert proc.returncode == 0, output(proc)[-4000:]
    return output(proc)


def kill_after_first_checkpoint(proc, work_dir, timeout=240):
    """SIGKILL ``proc`` once ``last_checkpoint`` names epoch_1.pth (polling the work dir)."""
    marker = osp.join(work_dir, 'last_checkpoint')
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if osp.exists(marker) and open(marker).read().strip().endswith('epoch_1.pth'):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            pytest.fail('the run ended before its first checkpoint:\n' + output(proc)[-4000:])
        time.sleep(0.02)
    proc.kill()
    pytest.fail('no first checkpoint within the timeout')


def final_state(work_dir):
    ckpt = load_checkpoint(osp.join(work_dir, f'epoch_{EPOCHS}.pth'))  # the safe loader
    assert 'rng_state' in ckpt
    return state_dict_from_checkpoint(ckpt)


def test_killed_and_resumed_policy_run_equals_the_uninterrupted_run(config, tmp_path):
    straight_dir, killed_dir = str(tmp_path / 'straight'), str(tmp_path / 'killed')
    straight = train(config, straight_dir, str(tmp_path / 'straight.log'))
    killed = train(config, killed_dir, str(tmp_path / 'killed.log'))
    kill_after_first_checkpoint(killed, killed_dir)
    assert killed.returncode == -signal.SIGKILL
    assert not osp.exists(osp.join(killed_dir, f'epoch_{EPOCHS}.pth'))  # stopped before the end
    resumed_out = finish(train(config, killed_dir, str(tmp_path / 'resumed.log'), '--resume'))
    assert 'resumed epoch: ' in resumed_out and 'restored the torch/numpy/random' in resumed_out
    finish(straight)

    expected, got = final_state(straight_dir), final_state(killed_dir)
    assert sorted(expected) == sorted(got)
    for part in ('student.backbone.', 'connectors.', 'timestep_sampler.policy_net.',
                 'timestep_sampler.task_head.', 'timestep_sampler.reward_baseline',
                 'timestep_sampler.baseline_initialised'):
        assert any(k.startswith(part) for k in expected), part
    different = [k for k in expected if not torch.allclose(
        expected[k].double(), got[k].double(), atol=1e-6, rtol=0)]
    assert not different, different[:10]
    # the resumed policy really trained on: its weights moved away from epoch 1's
    first = state_dict_from_checkpoint(load_checkpoint(osp.join(killed_dir, 'epoch_1.pth')))
    key = 'timestep_sampler.policy_net.classifier.5.weight'
    assert not torch.equal(first[key], got[key])
