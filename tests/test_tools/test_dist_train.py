"""tools/dist_train.sh really starts two DDP processes (gloo on CPU); both scripts build the
torchrun command from their arguments and NNODES / NODE_RANK / MASTER_ADDR / PORT."""
import os.path as osp
import socket

import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DIST_TRAIN = osp.join(REPO_ROOT, 'tools', 'dist_train.sh')
DIST_TEST = osp.join(REPO_ROOT, 'tools', 'dist_test.sh')


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _launch_env(tools_kit):
    # PYTHON: the launcher must use this interpreter; PORT: never the busy default 29500.
    return tools_kit.env(PYTHON=tools_kit.python, PORT=_free_port(), OMP_NUM_THREADS=1)


def test_dist_train_runs_two_gloo_processes(tools_kit, tiny_data, tmp_path):
    work_dir = tmp_path / 'wd'
    proc = tools_kit.run(
        ['bash', DIST_TRAIN, tools_kit.tiny_cfg, '2', '--work-dir', str(work_dir),
         '--cfg-options', *tools_kit.data_options(tiny_data), 'train_cfg.max_epochs=1'],
        cwd=str(tmp_path), env=_launch_env(tools_kit))
    assert proc.returncode == 0, proc.output[-4000:]
    for rank in (0, 1):  # each process prints this line once its process group is up
        assert f'train.py: rank {rank} of 2 ready (launcher pytorch, backend gloo)' in proc.stdout
    assert 'Distributed training: True' in proc.output and 'GPU number: 2' in proc.output
    # 8 images over 2 ranks with batch 4: one iteration per epoch
    assert 'Epoch(train) [1][1/1]' in proc.output
    ckpt = work_dir / 'epoch_1.pth'
    assert ckpt.is_file()

    from common.io import load_checkpoint
    checkpoint = load_checkpoint(ckpt)
    assert checkpoint['meta']['epoch'] == 1
    # DDP's "module." prefix is stripped from the saved weights
    assert not any(k.startswith('module.') for k in checkpoint['state_dict'])



def _fake_python(tmp_path):
    """An interpreter stand-in that prints PYTHONPATH, then each argument on its own line."""
    fake = tmp_path / 'fake-python'
    fake.write_text('#!/usr/bin/env bash\necho "$PYTHONPATH"\nprintf \'%s\\n\' "$@"\n')
    fake.chmod(0o755)
    return str(fake)


@pytest.mark.parametrize('script,positional,tool', [
    (DIST_TRAIN, ['cfg.py', '4'], 'train.py'),
    (DIST_TEST, ['cfg.py', 'ckpt.pth', '4'], 'test.py'),
    (DIST_TEST, ['cfg.py', '4'], 'test.py'),  # zero-shot: no checkpoint
])
def test_dist_scripts_build_the_torchrun_command(tools_kit, tmp_path, script, positional, tool):
    env = tools_kit.env(PYTHON=_fake_python(tmp_path))
    for key in ('NNODES', 'NODE_RANK', 'MASTER_ADDR', 'PORT'):
        env.pop(key, None)
    extra = ['--work-dir', 'a b', '--cfg-options', 'x=1']
    proc = tools_kit.run(['bash', script, *positional, *extra], cwd=str(tmp_path), env=env,
                         timeout=30)
    assert proc.returncode == 0, proc.output
    pythonpath, *args = proc.stdout.splitlines()
    assert pythonpath.split(':')[0] == REPO_ROOT
    assert args[:2] == ['-m', 'torch.distributed.run']
    assert {'--nnodes=1', '--node_rank=0', '--master_addr=127.0.0.1', '--master_port=29500',
            '--nproc_per_node=4'} <= set(args)
    script_at = args.index(osp.join(REPO_ROOT, 'tools', tool))
    assert args[script_at + 1:] == positional[:-1] + ['--launcher', 'pytorch', *extra]

    env.update(NNODES='2', NODE_RANK='1', MASTER_ADDR='10.0.0.7', PORT='1234')
    proc = tools_kit.run(['bash', script, *positional], cwd=str(tmp_path), env=env, timeout=30)
    assert {'--nnodes=2', '--node_rank=1', '--master_addr=10.0.0.7',
            '--master_port=1234'} <= set(proc.stdout.splitlines())


@pytest.mark.parametrize('script,args', [(DIST_TRAIN, ['cfg.py']),
                                         (DIST_TRAIN, ['cfg.py', 'two']),
                                         (DIST_TEST, ['cfg.py']),
                                         (DIST_TEST, ['cfg.py', 'ckpt.pth']),
                                         (DIST_TEST, ['cfg.py', 'ckpt.pth', '0'])])
def test_dist_scripts_check_their_arguments(tools_kit, tmp_path, script, args):
    proc = tools_kit.run(['bash', script, *args], cwd=str(tmp_path), timeout=30)
    assert proc.returncode == 2
    assert 'usage' in proc.stderr or 'positive number' in proc.stderr
