"""tools/convert/legacy_checkpoint.py: the explicit, opt-in conversion of a pickled checkpoint.

The legacy checkpoint holds a harmless custom class (tests/test_tools/_legacy_classes.py, which
the tool's subprocess can import); the safe loader refuses it and names the conversion command.
"""
import json
import os
import os.path as osp
import shlex
import sys

import pytest
import torch

from common.io import UnsafeCheckpointError, load_checkpoint
from tests.test_tools._legacy_classes import TrainingNote

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(REPO_ROOT, 'tools', 'convert', 'legacy_checkpoint.py')
TOOL_REL = osp.join('tools', 'convert', 'legacy_checkpoint.py')


class _ShellPayload:
    """Pickles as ``os.system('touch MARKER')``: runs when unpickled without restrictions."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {shlex.quote(self.marker)}', ))


@pytest.fixture
def legacy(tmp_path):
    """A legacy checkpoint: weights plus a custom object in ``meta``."""
    weights = {'backbone.conv.weight': torch.randn(4, 3, 3, 3), 'head.fc.bias': torch.ones(2),
               'backbone.bn.num_batches_tracked': torch.tensor(7)}
    path = tmp_path / 'legacy.pth'
    torch.save({'state_dict': weights, 'meta': {'note': TrainingNote('lr 0.1', 3), 'epoch': 3},
                'optimizer': {'state': {}}}, path)
    return path, weights



def test_refusal_names_the_exact_command_and_it_converts(legacy, tools_kit, monkeypatch):
    path, weights = legacy
    monkeypatch.chdir(REPO_ROOT)
    with pytest.raises(UnsafeCheckpointError, match='Refused to load') as info:
        load_checkpoint(path)
    out = osp.splitext(str(path))[0] + '.safetensors'
    command = f'python {TOOL_REL} {path} {out} --trust-this-file'
    assert f'`{command}`' in str(info.value)

    # the command, as printed, does the conversion
    args = shlex.split(command)
    proc = tools_kit.run(args[1:], cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.output[-3000:]
    assert 'WARNING: unpickling' in proc.stderr and '--trust-this-file' in proc.stderr
    converted = load_checkpoint(out)
    assert set(converted) == set(weights)
    for key, value in weights.items():
        assert torch.equal(converted[key], value), key

    from safetensors import safe_open
    with safe_open(out, 'pt') as f:
        metadata = f.metadata()
    assert metadata['converted_from'] == 'legacy.pth'
    assert json.loads(metadata['meta']) == {'note': "TrainingNote('lr 0.1', epoch=3)", 'epoch': 3}


def test_command_uses_the_absolute_tool_path_outside_the_repository(legacy, tmp_path,
                                                                    monkeypatch):
    path, _ = legacy
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnsafeCheckpointError, match=f'`python {TOOL} {path} '):
        load_checkpoint(path)


def test_converts_to_a_weights_only_torch_checkpoint(legacy, tools_kit, tmp_path):
    path, weights = legacy
    out = tmp_path / 'converted.pth'
    proc = tools_kit.run([TOOL, str(path), str(out), '--trust-this-file'], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.output[-3000:]
    assert sorted(os.listdir(tmp_path)) == ['converted.pth', 'legacy.pth']  # no temp file left
    ckpt = torch.load(out, weights_only=True)  # plain torch can read it without pickle
    assert set(ckpt) == {'state_dict', 'meta'}  # the optimizer is not converted
    assert ckpt['meta'] == {'note': "TrainingNote('lr 0.1', epoch=3)", 'epoch': 3}
    for key, value in weights.items():
        assert torch.equal(load_checkpoint(out)['state_dict'][key], value), key


def test_refuses_without_the_flag_and_reads_nothing(tools_kit, tmp_path):
    marker = tmp_path / 'owned'
    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'meta': _ShellPayload(marker)}, evil)
    out = tmp_path / 'evil.safetensors'
    proc = tools_kit.run([TOOL, str(evil), str(out)], cwd=str(tmp_path))
    assert proc.returncode == 2, proc.output[-3000:]
    err = proc.stderr.strip()
    assert err.startswith('tools/convert/legacy_checkpoint.py: error: refusing to convert')
    assert 'arbitrary code' in err and '--trust-this-file' in err and '\n' not in err
    assert not marker.exists() and not out.exists()


def test_help_and_refusal_do_not_import_torch(tools_kit, tmp_path):
    code = ('import runpy, sys\n'
            'sys.argv = [sys.argv[1]] + sys.argv[2:]\n'
            'try:\n'
            '    runpy.run_path(sys.argv[0], run_name="__main__")\n'
            'except SystemExit as exit:\n'
            '    print("exit", exit.code)\n'
            'print("torch imported:", "torch" in sys.modules)\n')
    for args in (['--help'], ['x.pth', 'y.safetensors']):
        proc = tools_kit.run([sys.executable, '-c', code, TOOL] + args, cwd=str(tmp_path))
        assert 'torch imported: False' in proc.stdout, proc.output[-2000:]


def test_bad_output_names_are_usage_errors(legacy, tools_kit, tmp_path):
    path, _ = legacy
    proc = tools_kit.run([TOOL, str(path), str(tmp_path / 'out.bin'), '--trust-this-file'],
                         cwd=str(tmp_path))
    assert proc.returncode == 2 and 'must end in .safetensors, .pth or .pt' in proc.stderr
    proc = tools_kit.run([TOOL, str(path), str(path), '--trust-this-file'], cwd=str(tmp_path))
    assert proc.returncode == 2 and 'already exists' in proc.stderr


def test_extracts_the_aggregation_network_entry_of_hyperfeatures_releases():
    sys.path.insert(0, osp.join(REPO_ROOT, 'tools', 'convert'))
    try:
        from legacy_checkpoint import extract_weights
    finally:
        sys.path.pop(0)
    weights = {'mixing_weights': torch.arange(3.0)}
    tensors, skipped, meta = extract_weights(dict(aggregation_network=weights, epoch=3))
    assert list(tensors) == ['mixing_weights'] and torch.equal(tensors['mixing_weights'],
                                                               torch.arange(3.0))
    assert skipped == [] and not meta
