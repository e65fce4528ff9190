"""Every tool answers ``--help`` and argument errors without importing the heavy stack.

``import common`` alone takes seconds (torch, then mmengine's runner and optimizers, which import
transformers and peft), so the tools parse their arguments first and import torch, mmengine,
diffusers and ``common`` only to do the work. Each tool runs here in a fresh interpreter under
``-X importtime``, whose report lists every module the run imported; the error must be exit code 2
and one line on stderr. The ``--cfg-options`` values, collected as text while parsing, are
converted afterwards exactly as mmengine's ``DictAction`` converts them.
"""
import argparse
import glob
import os.path as osp
import re
import sys

import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY_CFG = osp.join(REPO_ROOT, 'tests', 'fixtures', 'configs', 'tiny-resnet18_1xb4-2e_synthetic.py')
# modules that must not be imported before the arguments are understood
HEAVY = ('torch', 'mmengine', 'diffusers', 'transformers', 'peft', 'common', 'mmcv', 'mmpretrain',
         'mmseg', 'mmpose', 'segmentation', 'landmark', 'classification_distill', 'correspondence',
         'generation_dmd', 'image_text_matching')
IMPORT_LINE = re.compile(r'^import time:\s+\d+ \|\s+\d+ \| +(\S+)$')

# tool (relative to tools/) -> arguments with one usage mistake, and what the error says
ARGUMENT_ERRORS = {
    'train.py': ([TINY_CFG, '--cfg-options', 'train_cfg.max_epochs'], 'expected KEY=VALUE'),
    'test.py': ([TINY_CFG, '--show-interval', 'x'], "invalid int value: 'x'"),
    'extract_features.py': ([TINY_CFG], '--images and --out are required'),
    'linear_probe.py': ([TINY_CFG, '--features', 'pixels', '--batch-size', 'ten'],
                        "invalid int value: 'ten'"),
    'demo_repfusion.py': (['--fresh', '--work-dri', 'wd'], 'unrecognized arguments: --work-dri'),
    'demo_correspondence.py': (['--num-pairs', '0'], '--num-pairs 0: use 1..600'),
    'convert/guided_diffusion_to_diffusers.py': (['model.pt', 'out', '--learn_sigma', 'maybe'],
                                                 "boolean value expected (True/False), got "
                                                 "'maybe'"),
    'dataset_converters/wflw.py': (['data/wflw', 'out', '--splits', 'val'],
                                   "invalid choice: 'val'"),
    'dataset_converters/celebamask_hq.py': (['data/CelebAMask-HQ'], 'required: out'),
    'dataset_converters/tinyimagenet.py': (['data/tiny-imagenet-200', '--class-names', 'names'],
                                           "invalid choice: 'names'"),
    'analysis/distill_target_stats.py': ([], 'required: config'),
    'analysis/correspondence_boxplot.py': (['a.json', 'b.json', '--labels', 'A', '--out', 'd'],
                                           '--labels has 1 names for 2 dumps'),
    'analysis/correspondence_layer_timestep_sweep.py': (
        [TINY_CFG, '--layers', 'up_blocks.0', '--out', 'd'],
        'the following arguments are required: --timesteps'),
    'analysis/correspondence_pca_figure.py': (
        [TINY_CFG, '--images', 'x.png', '--layers', '1', '--out', 'f.jpg'],
        '--out f.jpg: write a .png file'),
    'analysis/correspondence_resolution_sweep.py': (
        [TINY_CFG, '--sizes', '224', '0', '--out', 'd'], '--sizes 0: sizes are positive pixel counts'),
    'train_sae.py': ([TINY_CFG, '--features', 'f', '--work-dir', 'w', '--steps', '0'],
                     '--steps must be at least 1, got 0'),
    'demo_segmentation.py': (['--num-test', '0'], '--num-test 0: use 1..600'),
    'analysis/sae_splice_fidelity.py': (['cfg.py', 'sae.safetensors', '--images', 'd',
                                         '--num-images', '0'],
                                        '--num-images must be at least 1, got 0'),
    'collect_sae_features.py': ([TINY_CFG, '--out', 'x', '--shard-size', '0'],
                                '--shard-size must be at least 1, got 0'),
    'analysis/sae_timestep_sweep.py': (['cfg.py', '--train', 'a', '--test', 'b'],
                                       'the following arguments are required: --num-classes'),
    'analysis/sae_mask_alignment.py': (
        ['cfg.py', 'sae.safetensors', '--data', 'd', '--num-classes', '2', '--dense-fraction',
         '1.5'], '--dense-fraction must be in (0, 1], got 1.5'),
    'build_dmd_pairs.py': (['cfg.py'], 'the following arguments are required: --out'),
    'demo_dmd.py': (['--iters', 'x'], "argument --iters: invalid int value: 'x'"),
    'demo_itm.py': (['--bogus'], 'unrecognized arguments: --bogus'),
    'export_itm_lora.py': ([TINY_CFG, 'missing.pth', 'out'],
                           "CHECKPOINT 'missing.pth' does not exist or is not a file"),
    'itm_playground.py': (['checkpoints/sd21-base', '--timesteps', '0'],
                          '--timesteps 0: use at least 1'),
    'dataset_converters/refcocog_refs_to_json.py': (['refs.p', 'refs.txt'],
                                                    "OUT 'refs.txt' must end in .json"),
    'compute_fid_reference.py': (['data/cifar-10-batches-py', 'ref.npz', '--max-images', '1'],
                                 '--max-images must be at least 2, got 1'),
    'export_generator.py': (['cfg.py', 'iter_10.pth', 'out', '--weights', 'last'],
                            "invalid choice: 'last'"),
    'generate_samples.py': (['gen', '--out', 'grid.png', '--seeds', '5-3'],
                            "the range '5-3' runs backwards"),
    'convert/edm_to_safetensors.py': (['network.pkl'],
                                      'the following arguments are required: OUT_DIR'),
    'convert/hyperfeatures_aggregation.py': (['a.pt', 'b.pt'], 'must end in .safetensors'),
    'precompute_teacher_features.py': ([TINY_CFG, '--out', 'x', '--shard-size', '0'],
                                       '--shard-size must be at least 1, got 0'),
    'dataset_converters/pascal_part_disentangled.py': (
        ['data/pascal-part', 'data/JPEGImages', 'out', '--max-pairs', '0'],
        '--max-pairs 0: use a positive number of pairs per class and kind'),
}
# every tool answers --help without heavy imports; the ones above also give one-line errors
# (tools/convert/legacy_checkpoint.py still prints argparse's usage before its error)
TOOLS = sorted(ARGUMENT_ERRORS) + ['convert/legacy_checkpoint.py']


def _run(tools_kit, tool, args):
    """Run ``tools/<tool> args`` under ``-X importtime``: (process, stderr lines, imported)."""
    proc = tools_kit.run([sys.executable, '-X', 'importtime', osp.join(REPO_ROOT, 'tools', tool),
                          *args], cwd=REPO_ROOT, timeout=120)
    imported, lines = set(), []
    for line in proc.stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if match:
            imported.add(match.group(1).split('.')[0])
        elif not line.startswith('import time:'):
            lines.append(line)
    return proc, lines, imported


def test_every_tool_is_covered():
    tools_dir = osp.join(REPO_ROOT, 'tools')
    found = {osp.relpath(p, tools_dir) for p in glob.glob(osp.join(tools_dir, '**', '*.py'),
                                                         recursive=True)}
    helpers = {p for p in found if osp.basename(p).startswith('_')}  # imported by tools
    assert helpers == {'_cli.py', 'analysis/_sweep_args.py'}
    assert found - helpers == set(TOOLS)


@pytest.mark.parametrize('tool', TOOLS)
def test_help_imports_nothing_heavy(tools_kit, tool):
    proc, lines, imported = _run(tools_kit, tool, ['--help'])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith('usage:')
    assert not imported & set(HEAVY), f'{tool} --help imported {sorted(imported & set(HEAVY))}'


@pytest.mark.parametrize('tool', sorted(ARGUMENT_ERRORS))
def test_argument_error_is_one_line_exit_2_without_heavy_imports(tools_kit, tool):
    args, message = ARGUMENT_ERRORS[tool]
    proc, lines, imported = _run(tools_kit, tool, args)
    assert proc.returncode == 2, proc.stdout + '\n'.join(lines)
    assert len(lines) == 1, lines
    assert re.match(r'^\S+: error: ', lines[0]) and message in lines[0], lines[0]
    assert lines[0].endswith('--help')  # points at the usage instead of printing it
    assert not imported & set(HEAVY), f'{tool} imported {sorted(imported & set(HEAVY))}'


def test_missing_config_is_answered_before_the_heavy_imports(tools_kit):
    missing = TINY_CFG.replace('_synthetic.py', '_synthetik.py')
    proc, lines, imported = _run(tools_kit, 'train.py', [missing])
    assert proc.returncode == 2 and len(lines) == 1
    assert 'does not exist' in lines[0] and osp.basename(TINY_CFG) in lines[0]  # nearest file
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


# ---------------------------------------------------------------------------- --cfg-options

CFG_OPTIONS = ['lr=0.1', 'epochs=3', 'flag=true', 'off=False', 'nothing=None', 'name=ResNet',
               'path=a=b', 'scales=1,2', 'ids=[1,2,3]', 'pair=(1,x)', 'empty=[]',
               'nested="[(1,2),(3,4)]"', 'mixed=[(a,b),[c],d]', 'epochs=5']


def _mmengine_dict_action(pairs):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(['--cfg-options', *pairs]).cfg_options


def test_cfg_options_convert_exactly_as_mmengine_dict_action(tools_kit):
    cli = tools_kit.load('_cli')
    parser = cli.ArgumentParser(prog='tool')
    cli.add_cfg_options_arg(parser)
    # repeated flags add up, as with DictAction
    args = parser.parse_args(['--cfg-options', *CFG_OPTIONS[:5], '--cfg-options',
                              *CFG_OPTIONS[5:]])
    assert args.cfg_options == CFG_OPTIONS  # kept as typed until the heavy imports
    parsed = cli.parse_cfg_options(args.cfg_options)
    assert parsed == _mmengine_dict_action(CFG_OPTIONS)
    assert parsed['epochs'] == 5 and parsed['nested'] == [(1, 2), (3, 4)]
    assert parsed['path'] == 'a=b' and parsed['flag'] is True and parsed['nothing'] is None


def test_cfg_options_unbalanced_brackets_are_a_usage_error(tools_kit):
    cli = tools_kit.load('_cli')
    with pytest.raises(cli.UsageError, match=r"'ids=\[1,2' cannot be read.*balanced"):
        cli.parse_cfg_options(['ids=[1,2'])


def test_import_common_does_not_import_mmcv(tools_kit):
    """The mmcv-lite fallback is decided without importing mmcv (whose __init__ imports torch)."""
    code = ('import sys, common; from common.mmcv_compat import compiled_ops_available; '
            'ext = sys.modules.get("mmcv._ext"); '
            'print("mmcv" in sys.modules, compiled_ops_available(), '
            'getattr(ext, "is_diffteacher_fallback", False))')
    proc = tools_kit.run([sys.executable, '-c', code], cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.output[-2000:]
    mmcv_imported, compiled, fallback = proc.stdout.split()
    assert mmcv_imported == 'False'
    assert fallback == ('False' if compiled == 'True' else 'True')  # stand-in only on mmcv-lite


def test_guided_diffusion_flag_defaults_match_the_converter():
    """The converter's --help shows the defaults without importing common; they must agree."""
    import dataclasses
    import importlib.util

    from common.teachers.convert import GuidedDiffusionFlags
    path = osp.join(REPO_ROOT, 'tools', 'convert', 'guided_diffusion_to_diffusers.py')
    spec = importlib.util.spec_from_file_location('difftools_guided_diffusion_startup', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    defaults = dataclasses.asdict(GuidedDiffusionFlags())
    assert tool.MODEL_FLAG_DEFAULTS == defaults
    args = vars(tool.parse_args(['model.pt', 'out']))
    assert {name: args[name] for name in defaults} == defaults
