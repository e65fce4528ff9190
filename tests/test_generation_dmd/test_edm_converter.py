"""EDM network pickles are converted without running anything from them.

The pickles are built here in EDM's format without EDM's code: a throw-away ``torch_utils``
package (on ``sys.path`` only while pickling) provides ``persistence._reconstruct_persistent_obj``,
and tiny torch modules pickle themselves as calls of it with EDM-shaped meta dicts (version,
module_src, class_name, state = the module's ``__dict__`` with ``_init_args``/``_init_kwargs``).
The embedded module source and the malicious payloads would create marker files if they ran.
"""
import importlib
import json
import os
import os.path as osp
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from generation_dmd.convert import edm_pickle
from generation_dmd.convert.edm_pickle import EDMPickleError, convert_edm_pickle

PERSISTENCE_SRC = '''
def _reconstruct_persistent_obj(meta):
    raise RuntimeError('EDM code must never run during conversion')
'''
ERROR_TAIL = 'Nothing from it was run and nothing was written'


class _Persistent:
    """Mixin: pickle like EDM's ``persistence.persistent_class`` (a call with a meta dict)."""
    module_src = ''

    def record_init(self, args, kwargs):
        self._init_args = tuple(args)
        self._init_kwargs = dict(kwargs)

    def __reduce__(self):
        from torch_utils.persistence import _reconstruct_persistent_obj
        meta = dict(type='class', version=6, module_src=self.module_src,
                    class_name=type(self).__name__, state=dict(self.__dict__))
        return _reconstruct_persistent_obj, (meta, )


class Conv2d(_Persistent, torch.nn.Module):
    def __init__(self, in_channels, out_channels, kernel, resample_filter=(1, 1)):
        super().__init__()
        self.record_init((), dict(in_channels=in_channels, out_channels=out_channels,
                                  kernel=kernel, resample_filter=list(resample_filter)))
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = torch.nn.Parameter(torch.randn(out_channels))
        self.register_buffer('resample_filter', torch.tensor([[1., 1.], [1., 1.]]) / 4)
        self.register_buffer('unused', None)
        self.register_buffer('scratch', torch.ones(2), persistent=False)


class SongUNet(_Persistent, torch.nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.record_init((), kwargs)
        self.map_label = torch.nn.Linear(kwargs['label_dim'], 4)  # a plain torch layer inside
        self.map_label.requires_grad_(False)
        self.enc = torch.nn.ModuleDict()
        self.enc['8x8_conv'] = Conv2d(3, 4, 3)
        self.enc['8x8_block0'] = torch.nn.Sequential(Conv2d(4, 4, 1), torch.nn.SiLU())
        self.register_buffer('steps', torch.arange(5, dtype=torch.int64)[1:4])  # a view
        self.register_buffer('emb_half', torch.linspace(0, 1, 3).to(torch.float16))


class EDMPrecond(_Persistent, torch.nn.Module):
    def __init__(self, img_resolution, img_channels, label_dim=0, **model_kwargs):
        super().__init__()
        self.record_init((), dict(img_resolution=img_resolution, img_channels=img_channels,
                                  label_dim=label_dim, **model_kwargs))
        self.sigma_data = 0.5
        self.model = SongUNet(img_resolution=img_resolution, in_channels=img_channels,
                              out_channels=img_channels, label_dim=label_dim,
                              **{k: v for k, v in model_kwargs.items() if k != 'model_type'})


class EDMLoss(_Persistent):
    def __init__(self, P_mean=-1.2, P_std=1.2, sigma_data=0.5):
        self.record_init((), dict(P_mean=P_mean, P_std=P_std, sigma_data=sigma_data))
        self.P_mean, self.P_std, self.sigma_data = P_mean, P_std, sigma_data


class _Payload:
    """Pickles as ``func(*args)``: what a malicious file asks the unpickler to call."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.fixture
def edm_pickler(tmp_path):
    """``dump(obj, name)``: pickle ``obj`` with a fake ``torch_utils`` importable, then hide it."""
    pkg = tmp_path / 'edm_code' / 'torch_utils'
    pkg.mkdir(parents=True)
    (pkg / '__init__.py').write_text('')
    (pkg / 'persistence.py').write_text(PERSISTENCE_SRC)

    def dump(obj, name='net.pkl'):
        sys.path.insert(0, str(pkg.parent))
        try:
            importlib.invalidate_caches()
            with open(tmp_path / name, 'wb') as f:
                pickle.dump(obj, f)
        finally:
            sys.path.remove(str(pkg.parent))
            for mod in ('torch_utils.persistence', 'torch_utils'):
                sys.modules.pop(mod, None)
        return str(tmp_path / name)

    return dump


MODEL_KWARGS = dict(model_type='SongUNet', model_channels=4, channel_mult=[1], dropout=0.13,
                    embedding_type='positional', resample_filter=(1, 1))


def _edm_snapshot(marker):
    torch.manual_seed(0)
    source = f'open({str(marker)!r}, "w").close()  # must never run\n'
    for cls in (Conv2d, SongUNet, EDMPrecond, EDMLoss):
        cls.module_src = source
    net = EDMPrecond(img_resolution=8, img_channels=3, label_dim=10, **MODEL_KWARGS)
    net = net.eval().requires_grad_(False)
    return net, dict(ema=net, loss_fn=EDMLoss(), augment_pipe=None,
                     dataset_kwargs=dict(class_name='training.dataset.ImageFolderDataset',
                                         path='cifar10-32x32.zip', use_labels=True))


def test_converts_weights_and_config_without_running_the_pickle(edm_pickler, tmp_path):
    marker = tmp_path / 'source_ran'
    net, snapshot = _edm_snapshot(marker)
    path = edm_pickler(snapshot)
    out = tmp_path / 'converted'

    config, _ = convert_edm_pickle(path, out)

    assert not marker.exists()  # the embedded module source was never executed
    assert 'torch_utils' not in sys.modules
    assert sorted(os.listdir(out)) == ['config.json', 'model.safetensors']
    expected = net.state_dict()  # torch's own naming, independent of the converter
    assert 'model.enc.8x8_conv.weight' in expected and 'model.enc.8x8_conv.scratch' not in expected
    weights = load_file(str(out / 'model.safetensors'))
    assert list(weights) and sorted(weights) == sorted(expected)
    for key, value in expected.items():
        assert weights[key].dtype == value.dtype and torch.equal(weights[key], value), key
    assert weights['model.steps'].tolist() == [1, 2, 3]  # the view's offset was honoured
    on_disk = json.loads((out / 'config.json').read_text())
    assert on_disk == config
    assert on_disk['class_name'] == 'EDMPrecond'
    assert on_disk['init_kwargs'] == dict(img_resolution=8, img_channels=3, label_dim=10,
                                          **{**MODEL_KWARGS, 'resample_filter': [1, 1]})
    assert on_disk['model'] == {'class_name': 'SongUNet', 'init_kwargs': dict(
        img_resolution=8, in_channels=3, out_channels=3, label_dim=10, model_channels=4,
        channel_mult=[1], dropout=0.13, embedding_type='positional', resample_filter=[1, 1])}
    assert on_disk['source'] == ('converted from net.pkl by '
                                 'tools/convert/edm_to_safetensors.py')
    assert on_disk['pickle_key'] == 'ema'


def test_records_keep_meta_as_data(edm_pickler, tmp_path):
    marker = tmp_path / 'source_ran'
    _, snapshot = _edm_snapshot(marker)
    data = edm_pickle.read_edm_pickle(edm_pickler(snapshot))
    assert sorted(data) == ['augment_pipe', 'dataset_kwargs', 'ema', 'loss_fn']
    loss = data['loss_fn']
    assert isinstance(loss, edm_pickle.PersistentRecord)
    assert (loss.class_name, loss.version) == ('EDMLoss', 6)
    assert loss.init_kwargs == dict(P_mean=-1.2, P_std=1.2, sigma_data=0.5)
    assert loss.module_src.startswith('open(') and not marker.exists()
    enc = data['ema'].state['_modules']['model'].state['_modules']['enc']
    assert isinstance(enc, edm_pickle.TorchModuleRecord)
    assert enc.qualname == 'torch.nn.modules.container.ModuleDict'
    assert data['dataset_kwargs']['path'] == 'cifar10-32x32.zip'


def test_key_selects_the_network_and_names_the_alternatives(edm_pickler, tmp_path):
    _, snapshot = _edm_snapshot(tmp_path / 'm')
    snapshot['net'] = snapshot['ema']
    path = edm_pickler(snapshot)
    config, state = convert_edm_pickle(path, tmp_path / 'net', key='net')
    assert config['pickle_key'] == 'net' and 'model.enc.8x8_block0.0.weight' in state
    with pytest.raises(EDMPickleError, match=r"has no entry 'emma'; its keys are \['augment_pipe', "
                       r"'dataset_kwargs', 'ema', 'loss_fn', 'net'\] and the networks among them "
                       r"\['ema', 'net'\]. Choose one with --key"):
        convert_edm_pickle(path, tmp_path / 'out', key='emma')
    with pytest.raises(EDMPickleError, match=r"entry 'loss_fn' is PersistentRecord\('EDMLoss'.*"
                       r"not a torch network"):
        convert_edm_pickle(path, tmp_path / 'out', key='loss_fn')
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('payload', ['os.system', 'raw os.system', 'builtins.exec',
                                     'subprocess.call', 'nested_in_state'])
def test_malicious_pickle_is_refused_and_its_payload_never_runs(edm_pickler, tmp_path, payload):
    marker = tmp_path / 'pwned'
    make = f'open({str(marker)!r}, "w").close()'
    if payload == 'os.system':
        evil, name = _Payload(os.system, f'touch {marker}'), f'{os.system.__module__}.system'
    elif payload == 'raw os.system':  # the classic hand-written protocol-0 payload
        evil, name = None, 'os.system'
    elif payload == 'builtins.exec':
        evil, name = _Payload(exec, make), 'builtins.exec'
    elif payload == 'subprocess.call':
        evil, name = _Payload(subprocess.call, ['touch', str(marker)]), 'subprocess.call'
    else:  # a genuine-looking network whose state hides the call
        net, _ = _edm_snapshot(tmp_path / 'source_ran')
        net.model.__dict__['hook'] = _Payload(exec, make)
        evil, name = net, 'builtins.exec'
    path = edm_pickler(dict(ema=evil, dataset_kwargs={}))
    if evil is None:
        with open(path, 'wb') as f:
            f.write(b'cos\nsystem\n(S' + repr(f'touch {marker}').encode() + b'\ntR.')
    out = tmp_path / 'out'
    with pytest.raises(EDMPickleError) as info:
        convert_edm_pickle(path, out)
    message = str(info.value)
    assert f'asks to load the Python global {name}, which an EDM network pickle never needs' \
        in message
    assert 'not an EDM network pickle, or it was made to run code' in message
    assert ERROR_TAIL in message and '\n' not in message
    assert not marker.exists() and not out.exists()
    with pytest.raises(EDMPickleError, match='asks to load the Python global'):
        edm_pickle.read_edm_pickle(path)
    assert not marker.exists()


def test_truncated_and_foreign_files_are_refused(edm_pickler, tmp_path):
    _, snapshot = _edm_snapshot(tmp_path / 'm')
    path = edm_pickler(snapshot)
    data = open(path, 'rb').read()
    truncated = tmp_path / 'truncated.pkl'
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(EDMPickleError, match=r'truncated.pkl could not be read as a pickle '
                       r'\(.*\); it is truncated \(an interrupted download'):
        convert_edm_pickle(truncated, tmp_path / 'out')
    zipped = tmp_path / 'ckpt.pth'
    torch.save({'w': torch.ones(1)}, zipped)
    with pytest.raises(EDMPickleError, match=r'is a zip archive \(a torch.save checkpoint\), not '
                       r'an EDM network pickle'):
        convert_edm_pickle(zipped, tmp_path / 'out')
    with pytest.raises(EDMPickleError, match=r'missing.pkl does not exist or is not a file'):
        convert_edm_pickle(tmp_path / 'missing.pkl', tmp_path / 'out')
    listed = tmp_path / 'list.pkl'
    listed.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(EDMPickleError, match=r'holds a list, not the dict EDM pickles'):
        convert_edm_pickle(listed, tmp_path / 'out')
    assert not (tmp_path / 'out').exists()


def test_tool_writes_the_folder_warns_and_refuses(tools_kit, edm_pickler, tmp_path, capsys):
    tool = tools_kit.load('convert/edm_to_safetensors')
    net, snapshot = _edm_snapshot(tmp_path / 'm')
    path = edm_pickler(snapshot)
    out = tmp_path / 'out'
    assert tool.main([path, str(out)]) == 0
    err = capsys.readouterr()
    assert 'WARNING: pickle files can run arbitrary code' in err.err
    assert 'runs nothing from the file' in err.err
    assert f'Wrote {out}: EDMPrecond (SongUNet), {len(net.state_dict())} tensors' in err.out
    assert sorted(load_file(str(out / 'model.safetensors'))) == sorted(net.state_dict())

    with pytest.raises(SystemExit) as exit_info:  # an existing folder: usage error, exit 2
        tool.main([path, str(out)])
    assert exit_info.value.code == 2
    assert 'already exists; pass --overwrite' in capsys.readouterr().err

    evil = edm_pickler(dict(ema=_Payload(os.system, 'true')), 'evil.pkl')
    assert tool.main([evil, str(out), '--overwrite']) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith('tools/convert/edm_to_safetensors.py: error: ')
    assert f'global {os.system.__module__}.system' in err[-1] and ERROR_TAIL in err[-1]
    assert osp.isfile(out / 'config.json')  # the earlier conversion is untouched
    assert tool.main([path, str(out), '--overwrite', '--key', 'loss_fn']) == 1
    assert 'not a torch network' in capsys.readouterr().err
