"""tools/analysis/distill_target_stats.py: the statistics equal values computed here directly.

A tiny DDPM pipeline stands in for the demo teacher (its mid_block.resnets.1.conv2 has 64
channels, like the demo teacher's), the demo's own distillation configs are used with
``--cfg-options``, and the images are the first test digits of the fine-tuning config. The
reference values are computed without the tool's code: images normalised by hand, the teacher
called through its ``forward`` (not ``extract_at``), the student through ``backbone(x)[-1]`` (not
a hook), statistics with numpy.
"""
import importlib.util
import json
import os
import os.path as osp

import numpy as np
import pytest
import torch

from tests.helpers.tiny_models import save_ddpm_pipeline

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'analysis', 'distill_target_stats.py')
CONFIGS = osp.join(ROOT, 'classification_distill', 'configs', 'demo_digits')
FIXED = osp.join(CONFIGS, 'repfusion-fixed-t100_resnet18-w16_1xb64-20e_digits.py')
POLICY = osp.join(CONFIGS, 'repfusion-policy_resnet18-w16_1xb64-20e_digits.py')
DATA = osp.join(CONFIGS, 'resnet18-w16_1xb32-100e_digits-10shot_scratch.py')
MID = 'mid_block.resnets.1.conv2'
N_IMAGES, DRAWS, TEACHER_SEED = 20, 3, 3


@pytest.fixture(scope='module')
def tool():
    """The tool imported in this process (its import must not leak PYTHONPATH to others)."""
    pythonpath = os.environ.get('PYTHONPATH')
    spec = importlib.util.spec_from_file_location('difftools_distill_target_stats', TOOL)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        if pythonpath is None:
            os.environ.pop('PYTHONPATH', None)
        else:
            os.environ['PYTHONPATH'] = pythonpath
    return module


def build_distiller(tool, config, options):
    from mmengine.registry import MODELS
    cfg = tool._cli.load_config(config, options)
    torch.manual_seed(0)
    with tool._cli.config_scope(cfg):
        return MODELS.build(cfg.model).eval()


@pytest.fixture(scope='module')
def setup(tool, tmp_path_factory):
    from common.io import save_checkpoint
    folder = tmp_path_factory.mktemp('target_stats')
    pipeline = save_ddpm_pipeline(str(folder / 'pipeline'))
    options = [f'model.teacher.pretrained={pipeline}', f'+model.teacher.seed={TEACHER_SEED}']
    model = build_distiller(tool, FIXED, options)
    with torch.no_grad():  # a student that is neither the init nor the target
        model.connectors['feat'].conv.bias.normal_(0, 0.1)
    ckpt = str(folder / 'distill.pth')
    save_checkpoint({'state_dict': model.state_dict()}, ckpt)

    # the first N test digits, normalised by hand (the demo's preprocessor: (x - 127.5) / 127.5)
    from mmengine.registry import DATASETS
    data_cfg = tool._cli.load_config(DATA)
    with tool._cli.config_scope(data_cfg):
        dataset = DATASETS.build(data_cfg.test_dataloader.dataset)
    images = torch.stack([dataset[i]['inputs'] for i in range(N_IMAGES)]).float()
    inputs = (images - 127.5) / 127.5
    return dict(folder=folder, pipeline=pipeline, options=options, model=model, ckpt=ckpt,
                inputs=inputs)


def reference_draws(setup, t=100, draws=DRAWS):
    """Pooled teacher features [N, K, C] for the teacher seeds TEACHER_SEED + k."""
    from common.teachers import DiffusionTeacher
    out = []
    for k in range(draws):
        teacher = DiffusionTeacher(pretrained=setup['pipeline'], layers=[MID], timesteps=[t],
                                   noise='forward', seed=TEACHER_SEED + k)
        with torch.no_grad():  # images in [-1, 1]: no input_norm needed
            out.append(teacher(setup['inputs'])[f'{MID}@{t}'].mean(dim=(2, 3)))
    return torch.stack(out, 1).double().numpy()


def reference_prediction(setup):
    model = setup['model']
    with torch.no_grad():
        feat = model.student.backbone(setup['inputs'])[-1]  # backbone.layer4's output
        return model.connectors['feat'](feat).mean(dim=(2, 3)).double().numpy()


def test_statistics_equal_direct_computation(setup, tools_kit, tmp_path):
    out = tmp_path / 'stats.json'
    proc = tools_kit.run(
        [TOOL, FIXED, setup['ckpt'], '--data-config', DATA, '--num-images', str(N_IMAGES),
         '--batch-size', '8', '--noise-draws', str(DRAWS), '--out', str(out),
         '--cfg-options', *setup['options']], cwd=ROOT, timeout=240)
    assert proc.returncode == 0, proc.output[-4000:]
    report = json.loads(out.read_text())
    assert report['num_images'] == N_IMAGES and report['split'] == 'test'
    assert report['timesteps']['reported'] == [100]
    assert report['teacher']['seed'] == TEACHER_SEED
    entry = report['pairs']['feat']
    assert (entry['student'], entry['teacher'], entry['target_norm']) == (
        'backbone.layer4', MID, 'batch')
    got = entry['timesteps']['100']

    D = reference_draws(setup)
    T = D[:, 0]
    mean_square = (T**2).mean()
    image_var = T.var(axis=0).mean()
    constant = (T.mean(axis=0)**2).mean()
    close = dict(rel=1e-4, abs=1e-9)
    assert got['channels'] == 64
    assert got['mean_square'] == pytest.approx(mean_square, **close)
    assert got['image_var'] == pytest.approx(image_var, **close)
    assert got['constant'] == pytest.approx(constant, **close)
    assert got['mean_square'] == pytest.approx(got['image_var'] + got['constant'], rel=1e-9)
    assert got['image_share'] == pytest.approx(image_var / mean_square, **close)
    noise_var = D.var(axis=1, ddof=1).mean()
    assert noise_var > 0
    assert got['noise_var'] == pytest.approx(noise_var, rel=1e-3)

    P = reference_prediction(setup)
    mse = ((P - T)**2).mean()
    student = got['student']
    assert student['mse'] == pytest.approx(mse, rel=1e-4)
    assert student['mse_mean'] == pytest.approx(image_var, **close)
    assert student['r2'] == pytest.approx(1 - mse / image_var, rel=1e-4, abs=1e-4)
    Ts = (T - T.mean(axis=0)) / np.sqrt(T.var(axis=0) + 1e-5)  # target_norm='batch', eps 1e-5
    std = student['standardised']
    assert std['mse'] == pytest.approx(((P - Ts)**2).mean(), rel=1e-4)
    assert std['mse_mean'] == pytest.approx(Ts.var(axis=0).mean(), rel=1e-4)
    assert std['r2'] == pytest.approx(1 - ((P - Ts)**2).mean() / Ts.var(axis=0).mean(),
                                      rel=1e-4, abs=1e-4)
    # the printed table carries the same numbers
    assert f'{got["mean_square"]:.4g}' in proc.stdout
    assert f'{student["r2"]:.3f}' in proc.stdout


def test_policy_reports_at_given_timesteps_and_its_most_likely_action(tool, setup, tmp_path,
                                                                      capsys):
    common = ['--data-config', DATA, '--num-images', '8', '--noise-draws', '0',
              '--cfg-options', *setup['options']]
    # no checkpoint with the policy and no --timestep: which timestep would be a guess
    assert tool.cli([POLICY] + common) == 2
    assert '--timestep' in capsys.readouterr().err

    report = tool.main([POLICY, '--timestep', '100', '250'] + common)
    assert report['timesteps']['reported'] == [100, 250]
    stats = report['pairs']['feat']['timesteps']
    T = reference_draws(dict(setup, inputs=setup['inputs'][:8]), t=250, draws=1)[:, 0]
    assert stats['250']['mean_square'] == pytest.approx((T**2).mean(), rel=1e-4)
    assert stats['100']['noise_var'] is None  # --noise-draws 0: not measured

    # RepFusion's clean-input teacher adds no noise: its noise part is exactly 0
    report = tool.main([FIXED] + common + ['model.teacher.noise=none'])
    assert report['pairs']['feat']['timesteps']['100']['noise_var'] == 0.0

    # a policy that puts (almost) all mass on action 3 of 10 bins: t = 3.5 * 100 = 350
    model = build_distiller(tool, POLICY, setup['options'])
    last = model.timestep_sampler.policy_net.classifier[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        last.bias[3] = 20.0
    ckpt = str(tmp_path / 'policy.pth')
    from common.io import save_checkpoint
    save_checkpoint({'state_dict': model.state_dict()}, ckpt)
    report = tool.main([POLICY, ckpt] + common)
    info = report['timesteps']
    assert info['reported'] == [350] and info['action'] == 3
    assert info['action_probability'] > 0.99
    assert 'student' in report['pairs']['feat']['timesteps']['350']


def test_user_errors_are_one_paragraph(tool, setup, capsys):
    # a config that is not a distillation: exit 2, before any model is built
    assert tool.cli([DATA]) == 2
    err = capsys.readouterr().err
    assert 'not a FeatureDistiller' in err and "'ImageClassifier'" in err
    assert len(err.strip().splitlines()) == 1
    assert tool.cli([FIXED, '--pair', 'nope', '--cfg-options', *setup['options']]) == 2
    err = capsys.readouterr().err
    assert "--pair nope" in err and 'feat' in err
    # the distillation config has no test dataloader: the message names the config to use
    assert tool.cli([FIXED, '--cfg-options', *setup['options']]) == 2
    assert 'resnet18-w16_1xb32-100e_digits-10shot_scratch.py' in capsys.readouterr().err
    missing = str(setup['folder'] / 'missing.pth')
    assert tool.cli([FIXED, missing, '--data-config', DATA, '--cfg-options',
                     *setup['options']]) == 1
    assert 'does not exist' in capsys.readouterr().err
