"""Shared fixtures: the tiny synthetic dataset, one tiny training run, and a kit of helpers.

Test files reach the helpers through the ``tools_kit`` fixture rather than by importing this
module (``tests`` is not a package, and several folders may grow their own conftest.py).
"""
import importlib.util
import os
import os.path as osp
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
FIXTURES = osp.join(REPO_ROOT, 'tests', 'fixtures')
TINY_CFG = osp.join(FIXTURES, 'configs', 'tiny-resnet18_1xb4-2e_synthetic.py')
TINY_STEM = 'tiny-resnet18_1xb4-2e_synthetic'
CLASSES = ('dark', 'bright')


def write_synthetic_dataset(root, per_class=None, size=32, seed=0):
    """Write ``<root>/{train,val}/{dark,bright}/*.png``: noisy dark and bright 32x32 images."""
    from PIL import Image
    per_class = per_class or dict(train=4, val=2)
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for label, name in enumerate(CLASSES):
            folder = osp.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                base = 60 + 130 * label
                pixels = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(osp.join(folder, f'{i:03d}.png'))
    return root


def data_options(root):
    """``--cfg-options`` pairs pointing the tiny config's three dataloaders at ``root``."""
    return [f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')]


def tool_env(**extra):
    """Environment for a tool subprocess: offline, quiet, repo importable."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', PYTHONUNBUFFERED='1',
               PYTHONWARNINGS='ignore')
    env['PYTHONPATH'] = os.pathsep.join(p for p in (REPO_ROOT, env.get('PYTHONPATH')) if p)
    env.pop('DIFFTEACHER_TRACEBACK', None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_tool(args, cwd, timeout=300, env=None):
    """Run ``args`` (a list; a ``.py`` first item runs with this interpreter) and capture output."""
    if args[0].endswith('.py'):
        args = [sys.executable] + list(args)
    proc = subprocess.run(args, cwd=cwd, env=env or tool_env(), capture_output=True, text=True,
                          timeout=timeout)
    proc.output = proc.stdout + proc.stderr
    return proc


def load_tool(name):
    """Import ``tools/<name>.py`` in this process.

    The scripts are imported as ``difftools_<name>``; the helper module ``_cli`` under its own
    name, since the scripts import it as ``_cli`` (so monkeypatching it reaches them).
    """
    tools_dir = osp.join(REPO_ROOT, 'tools')
    if tools_dir not in sys.path:
        sys.path.append(tools_dir)  # appended: tools/test.py must not shadow anything
    if name == '_cli':
        return importlib.import_module('_cli')
    module_name = f'difftools_{name}'
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, osp.join(tools_dir, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    pythonpath = os.environ.get('PYTHONPATH')
    try:
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    finally:  # the scripts extend PYTHONPATH for their child processes; not for ours
        if pythonpath is None:
            os.environ.pop('PYTHONPATH', None)
        else:
            os.environ['PYTHONPATH'] = pythonpath
    return module


@pytest.fixture(scope='session')
def tools_kit():
    """Paths and helpers for tests that run the tools (see the functions above)."""
    return SimpleNamespace(
        repo_root=REPO_ROOT, tiny_cfg=TINY_CFG, tiny_stem=TINY_STEM, fixtures=FIXTURES,
        python=sys.executable, data_options=data_options, env=tool_env, run=run_tool,
        load=load_tool, write_dataset=write_synthetic_dataset)


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
    """Root folder of the synthetic dataset (written once per test session)."""
    return write_synthetic_dataset(str(tmp_path_factory.mktemp('tiny_data')))


@pytest.fixture(scope='session')
def trained_run(tmp_path_factory, tiny_data):
    """``tools/train.py`` on the tiny config for 2 epochs, from a fresh folder, no --work-dir.

    Shared by the tool tests (resume, test) and the checkpoint tests (a real mmengine
    checkpoint). Returns ``cwd``, ``work_dir`` (the default ``work_dirs/<config stem>``) and the
    process result.
    """
    cwd = str(tmp_path_factory.mktemp('train_run'))
    proc = run_tool([osp.join(REPO_ROOT, 'tools', 'train.py'), TINY_CFG,
                     '--cfg-options', *data_options(tiny_data)], cwd=cwd)
    assert proc.returncode == 0, proc.output[-4000:]
    return SimpleNamespace(cwd=cwd, work_dir=osp.join(cwd, 'work_dirs', TINY_STEM), proc=proc)
