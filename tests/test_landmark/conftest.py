import os.path as osp
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_DIR = osp.join(REPO, 'landmark', 'configs', 'wflw')


def load_converter():
    """tools/dataset_converters/wflw.py as a module (tools/ is not a package)."""
    import importlib.util
    path = osp.join(REPO, 'tools', 'dataset_converters', 'wflw.py')
    spec = importlib.util.spec_from_file_location('wflw_converter', path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault('wflw_converter', module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='session')
def converter():
    return load_converter()


@pytest.fixture(scope='session')
def fake_wflw(tmp_path_factory, converter):
    """A converted fake release: ``dict(root, ann_dir, kept, result)``.

    ``root`` holds WFLW_images/ and WFLW_annotations/ as released, ``ann_dir`` the json files.
    """
    from .fake_wflw import make_fake_release
    root = tmp_path_factory.mktemp('wflw')
    kept = make_fake_release(str(root))
    ann_dir = root / 'annotations'
    messages = []
    result = converter.convert(str(root), str(ann_dir), progress=False, log=messages.append)
    return dict(root=root, ann_dir=ann_dir, kept=kept, result=result, messages=messages)


@pytest.fixture(scope='session')
def distilled_checkpoint(tmp_path_factory):
    """A fake RepFusion distillation checkpoint: the student ResNet-50 under ``student.backbone.``.

    Returns ``(path, backbone_state_dict)``.
    """
    import torch
    from mmpretrain.models import ResNet
    torch.manual_seed(0)
    state = ResNet(depth=50).state_dict()
    path = tmp_path_factory.mktemp('distilled') / 'repfusion_resnet50.pth'
    torch.save({'state_dict': {'student.backbone.' + k: v for k, v in state.items()}}, path)
    return path, state
