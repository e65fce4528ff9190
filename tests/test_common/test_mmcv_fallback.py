"""The stand-in for mmcv's compiled ops (common/mmcv_compat.py).

On mmcv-lite, ``import common`` must let mmseg, mmpose and mmpretrain build and run their models
on CPU, make a call to a missing op fail with a clear error, and stay out of the way when the
real compiled ops are installed.
"""
import importlib.util
import json
import os
import subprocess
import sys
import types

import pytest

from common.mmcv_compat import compiled_ops_available

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Runs in a fresh interpreter: nothing imported by other tests can hide a missing import.
FRESH_INTERPRETER_SCRIPT = r'''
import json
import common  # noqa: F401  (installs the mmcv._ext stand-in first)
import torch
from common.mmcv_compat import MissingMmcvOpError


def build(registry, scope, cfg):
    with registry.switch_scope_and_registry(scope) as reg:
        model = reg.build(cfg)
    return model.eval()


out = {}
bn = dict(type='BN', requires_grad=True)
image = torch.rand(1, 3, 64, 64)

from mmseg.registry import MODELS as SEG_MODELS  # noqa: E402
seg = build(SEG_MODELS, 'mmseg', dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.7, 116.3, 103.5],
                           std=[58.4, 57.1, 57.4], size=(64, 64)),
    backbone=dict(
        type='BiSeNetV1', in_channels=3, context_channels=(128, 256, 512),
        spatial_channels=(64, 64, 64, 128), out_indices=(0, 1, 2), out_channels=256,
        backbone_cfg=dict(type='ResNet', depth=18, num_stages=4, out_indices=(0, 1, 2, 3),
                          norm_cfg=bn, style='pytorch'),
        norm_cfg=bn),
    decode_head=dict(type='FCNHead', in_channels=256, in_index=0, channels=32, num_convs=1,
                     concat_input=False, num_classes=4, norm_cfg=bn)))
with torch.no_grad():
    out['BiSeNetV1'] = list(seg(image, mode='tensor').shape)

from mmpose.registry import MODELS as POSE_MODELS  # noqa: E402
pose = build(POSE_MODELS, 'mmpose', dict(
    type='TopdownPoseEstimator',
    backbone=dict(type='ResNet', depth=18),
    head=dict(type='HeatmapHead', in_channels=512, out_channels=17,
              deconv_out_channels=(32, 32), deconv_kernel_sizes=(4, 4),
              loss=dict(type='KeypointMSELoss', use_target_weight=True),
              decoder=dict(type='MSRAHeatmap', input_size=(64, 64), heatmap_size=(8, 8),
                           sigma=2))))
with torch.no_grad():
    out['TopdownPoseEstimator'] = list(pose(image, None, mode='tensor').shape)

from mmpretrain.registry import MODELS as CLS_MODELS  # noqa: E402
classifier = build(CLS_MODELS, 'mmpretrain', dict(
    type='ImageClassifier', backbone=dict(type='ResNet', depth=18),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=512)))
with torch.no_grad():
    out['ImageClassifier'] = list(classifier(image, mode='tensor').shape)

from mmcv.ops import RoIAlign, nms  # noqa: E402
calls = {
    'nms': lambda: nms(torch.rand(3, 4), torch.rand(3), 0.5),
    'roi_align': lambda: RoIAlign((2, 2), 1.0)(torch.rand(1, 4, 8, 8),
                                                torch.tensor([[0., 0., 0., 4., 4.]])),
}
for name, call in calls.items():
    try:
        call()
        out[name] = 'no error'
    except MissingMmcvOpError as err:
        out[name] = str(err)
print('RESULT ' + json.dumps(out))
'''


# after `make install-full-mmcv` the real ops run and there is no stand-in to test
needs_mmcv_lite = pytest.mark.skipif(compiled_ops_available(),
                                     reason='mmcv with compiled ops is installed')


@pytest.fixture(scope='module')
def fresh_interpreter_result():
    env = dict(os.environ, HF_HUB_OFFLINE='1', PYTHONWARNINGS='ignore')
    env['PYTHONPATH'] = os.pathsep.join(p for p in (REPO_ROOT, env.get('PYTHONPATH')) if p)
    proc = subprocess.run([sys.executable, '-c', FRESH_INTERPRETER_SCRIPT], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith('RESULT ')][-1]
    return json.loads(line[len('RESULT '):])


def test_openmmlab_models_build_and_run_on_mmcv_lite(fresh_interpreter_result):
    assert fresh_interpreter_result['BiSeNetV1'] == [1, 4, 8, 8]  # logits at 1/8 resolution
    assert fresh_interpreter_result['TopdownPoseEstimator'] == [1, 17, 8, 8]  # heatmaps
    assert fresh_interpreter_result['ImageClassifier'] == [1, 10]


@needs_mmcv_lite
@pytest.mark.parametrize('op', ['nms', 'roi_align'])
def test_missing_op_call_names_op_and_fix(fresh_interpreter_result, op):
    message = fresh_interpreter_result[op]
    assert f"'{op}" in message  # 'nms', 'roi_align_forward'
    assert 'make install-full-mmcv' in message


@needs_mmcv_lite
def test_stand_in_is_active_and_answers_mmengine_probe():
    from common.mmcv_compat import MissingMmcvOpError, install_mmcv_ext_fallback
    from mmengine.utils.dl_utils import mmcv_full_available
    ext = sys.modules['mmcv._ext']
    assert ext.is_diffteacher_fallback and not compiled_ops_available()
    # mmengine asks pkgutil for a loader before reverting SyncBN / building optimizers
    assert mmcv_full_available() is False
    assert install_mmcv_ext_fallback() is True and sys.modules['mmcv._ext'] is ext  # idempotent
    with pytest.raises(AttributeError):
        ext.__wrapped__  # introspection of dunders is not answered with fake ops
    with pytest.raises(MissingMmcvOpError, match="'deform_conv_forward'"):
        ext.deform_conv_forward()


def test_fallback_does_nothing_when_real_ops_are_loaded(monkeypatch):
    from common.mmcv_compat import install_mmcv_ext_fallback
    real = types.ModuleType('mmcv._ext')  # what a compiled mmcv puts in sys.modules
    monkeypatch.setitem(sys.modules, 'mmcv._ext', real)
    assert compiled_ops_available()
    assert install_mmcv_ext_fallback() is False
    assert sys.modules['mmcv._ext'] is real


def test_fallback_does_nothing_when_real_ops_are_installed(monkeypatch, tmp_path):
    import mmcv

    from common.mmcv_compat import install_mmcv_ext_fallback
    (tmp_path / '_ext.py').write_text('COMPILED = True\n')  # found, never imported
    monkeypatch.delitem(sys.modules, 'mmcv._ext')
    monkeypatch.setattr(mmcv, '__path__', list(mmcv.__path__) + [str(tmp_path)])
    assert importlib.util.find_spec('mmcv._ext') is not None
    assert install_mmcv_ext_fallback() is False
    assert 'mmcv._ext' not in sys.modules
