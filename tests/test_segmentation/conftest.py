"""Fixtures of the face-parsing tests: a fake CelebAMask-HQ release, its conversion, and a fake
distilled checkpoint."""
import contextlib
import importlib.util
import io
import os.path as osp
import sys
from types import SimpleNamespace

import pytest

from .fake_release import MASK_SIZE, write_fake_release

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_DIR = osp.join(REPO_ROOT, 'segmentation', 'configs', 'bisenetv1')
STUDENT_PREFIX = 'student.backbone.'


def load_converter():
    """``tools/dataset_converters/celebamask_hq.py`` imported as a module."""
    name = 'difftools_celebamask_hq_converter'
    if name not in sys.modules:
        path = osp.join(REPO_ROOT, 'tools', 'dataset_converters', 'celebamask_hq.py')
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def run_converter(argv):
    """Run the converter's ``main`` in this process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = load_converter().main(list(argv) + ['--no-progress'])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope='session')
def fake_release(tmp_path_factory):
    return write_fake_release(str(tmp_path_factory.mktemp('celebamask_release')))


@pytest.fixture(scope='session')
def converted(tmp_path_factory, fake_release):
    """The fake release converted with two worker processes."""
    out = str(tmp_path_factory.mktemp('celebamask_converted'))
    code, stdout, stderr = run_converter([fake_release, out, '--workers', '2',
                                          '--size', str(MASK_SIZE)])
    return SimpleNamespace(root=out, src=fake_release, code=code, stdout=stdout, stderr=stderr)


def save_fake_distilled_checkpoint(path, depth=18):
    """A distillation checkpoint as the distiller writes it: the student's mmpretrain ResNet under
    ``student.backbone.`` next to other distiller parts. Returns the backbone state dict."""
    import torch
    from mmpretrain.models import ResNet
    torch.manual_seed(depth)
    backbone = ResNet(depth=depth)
    with torch.no_grad():  # make every tensor distinguishable from a fresh initialisation
        for tensor in backbone.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor))
    state = {STUDENT_PREFIX + k: v for k, v in backbone.state_dict().items()}
    state['distill_layer.0.weight'] = torch.zeros(8, 512, 1, 1)
    state['teacher.mid_block.conv.weight'] = torch.zeros(4, 4, 3, 3)
    torch.save({'meta': dict(note='fake distillation checkpoint'), 'state_dict': state}, path)
    return backbone.state_dict()


@pytest.fixture(scope='session')
def distilled_r18(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('distilled') / 'distilled_r18.pth')
    return SimpleNamespace(path=path, backbone_state=save_fake_distilled_checkpoint(path, 18))
