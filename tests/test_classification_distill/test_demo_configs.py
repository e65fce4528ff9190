"""The digits demo's distillation config through tools/train.py and tools/dist_train.sh (CPU)."""
import os.path as osp
import socket

import pytest

from tests.helpers.tiny_models import save_ddpm_pipeline

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = osp.join(REPO, 'classification_distill', 'configs', 'demo_digits')
POLICY = osp.join(CONFIGS, 'repfusion-policy_resnet18-w16_1xb64-20e_digits.py')
FIXED = osp.join(CONFIGS, 'repfusion-fixed-t100_resnet18-w16_1xb64-20e_digits.py')


@pytest.fixture(scope='module')
def tiny_teacher(tmp_path_factory):
    # The tiny pipeline's mid_block.resnets.1.conv2 has 64 channels, like the demo teacher's.
    return save_ddpm_pipeline(str(tmp_path_factory.mktemp('teacher') / 'pipeline'))


def options(teacher, images):
    return ['--cfg-options', f'model.teacher.pretrained={teacher}', 'train_cfg.max_epochs=1',
            'train_dataloader.batch_size=8', f'+train_dataloader.dataset.indices={images}']


def test_policy_demo_config_trains_and_saves_student_and_policy(tools_kit, tiny_teacher, tmp_path):
    work = tmp_path / 'policy'
    proc = tools_kit.run(['tools/train.py', POLICY, '--work-dir', str(work)]
                         + options(tiny_teacher, 16), cwd=REPO)
    assert proc.returncode == 0, proc.output[-4000:]
    assert 'Epoch(train) [1][2/2]' in proc.output
    assert 'timesteps chosen in epoch 1' in proc.output  # TimestepHistogramHook's log line
    assert (work / 'timestep_histogram.png').is_file()
    from common.io import load_checkpoint
    state = load_checkpoint(work / 'epoch_1.pth')['state_dict']
    assert any(k.startswith('student.backbone.') for k in state)
    assert all(k.startswith(('student.', 'connectors.', 'timestep_sampler.')) for k in state)
    assert any(k.startswith('timestep_sampler.policy_net.') for k in state)  # resumable


def test_fixed_t_demo_config_runs_two_ddp_processes(tools_kit, tiny_teacher, tmp_path):
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    env = tools_kit.env(PYTHON=tools_kit.python, PORT=port, OMP_NUM_THREADS=1)
    work = tmp_path / 'ddp'
    proc = tools_kit.run(['bash', 'tools/dist_train.sh', FIXED, '2', '--work-dir', str(work)]
                         + options(tiny_teacher, 16), cwd=REPO, env=env)
    assert proc.returncode == 0, proc.output[-4000:]
    for rank in (0, 1):
        assert f'rank {rank} of 2 ready' in proc.stdout
    assert 'Epoch(train) [1][1/1]' in proc.output  # 16 images, 2 ranks x batch 8
    assert (work / 'epoch_1.pth').is_file()
