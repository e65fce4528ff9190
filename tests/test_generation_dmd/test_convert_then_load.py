"""The EDM pickle converter and the toolkit's EDM networks fit together: convert, load, same outputs.

A tiny network is built with OUR classes (EDMPrecond/VEPrecond around SongUNet) and pickled the
way NVlabs/edm pickles its networks, without EDM's code: while the network is built, every
constructor of our ``generation_dmd.networks`` modules records its arguments in ``_init_args`` /
``_init_kwargs`` (what EDM's ``persistence.persistent_class`` decorator does), and a pickler writes
every module of our classes as a call of ``torch_utils.persistence._reconstruct_persistent_obj(meta)``
(meta = type, version, module_src, class_name, state = the module's ``__dict__``, children nested
as records), while torch containers (``ModuleDict``) are pickled as plain torch classes. The rule
checked: ``convert_edm_pickle`` + ``load_edm`` give back a network whose outputs equal the
original's bit for bit, from a config.json holding exactly the recorded constructor arguments.
"""
import copy
import functools
import inspect
import io
import json
import pickle
import sys
import types

import pytest
import torch

from generation_dmd.convert.edm_pickle import (PersistentRecord, TorchModuleRecord,
                                               convert_edm_pickle, read_edm_pickle)
from generation_dmd.networks import dhariwal_unet, layers, load_edm, precond, song_unet

NETWORK_MODULES = (layers, song_unet, dhariwal_unet, precond)
PERSISTENCE = 'torch_utils.persistence'


def _our_module_classes():
    """Every torch.nn.Module subclass defined in generation_dmd.networks (with its own __init__)."""
    found = []
    for mod in NETWORK_MODULES:
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if (issubclass(cls, torch.nn.Module) and cls.__module__ == mod.__name__
                    and '__init__' in vars(cls)):
                found.append(cls)
    return found


@pytest.fixture
def record_init(monkeypatch):
    """While active, each of our modules keeps its constructor call as EDM's decorator does."""
    classes = _our_module_classes()
    names = {cls.__name__ for cls in classes}
    assert {'EDMPrecond', 'VEPrecond', 'SongUNet', 'UNetBlock', 'Conv2d', 'Linear', 'GroupNorm',
            'PositionalEmbedding', 'FourierEmbedding'} <= names  # the walk finds the layers

    def wrap(cls, original):
        @functools.wraps(original)  # keeps the signature build_network inspects
        def __init__(self, *args, **kwargs):
            original(self, *args, **kwargs)
            if type(self) is cls:  # the outermost constructor call only (not super().__init__)
                self._init_args = copy.deepcopy(args)
                self._init_kwargs = copy.deepcopy(kwargs)
        return __init__

    for cls in classes:
        monkeypatch.setattr(cls, '__init__', wrap(cls, vars(cls)['__init__']))


def _edm_pickle_bytes(obj, module_src):
    """``pickle.dump(obj)`` as EDM writes it: our modules become persistent-class records."""
    module = types.ModuleType(PERSISTENCE)

    def _reconstruct_persistent_obj(meta):
        raise RuntimeError('EDM code must never run during conversion')

    _reconstruct_persistent_obj.__module__ = PERSISTENCE
    _reconstruct_persistent_obj.__qualname__ = '_reconstruct_persistent_obj'
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class EDMStylePickler(pickle.Pickler):
        def reducer_override(self, value):
            if isinstance(value, torch.nn.Module) and \
                    type(value).__module__.startswith('generation_dmd.networks'):
                meta = dict(type='class', version=6, module_src=module_src,
                            class_name=type(value).__name__, state=dict(value.__dict__))
                return _reconstruct_persistent_obj, (meta, )
            return NotImplemented

    saved = {name: sys.modules.get(name) for name in ('torch_utils', PERSISTENCE)}
    sys.modules['torch_utils'] = types.ModuleType('torch_utils')
    sys.modules[PERSISTENCE] = module
    try:
        buf = io.BytesIO()
        EDMStylePickler(buf).dump(obj)
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
    return buf.getvalue()


def _scramble(net, seed=0):
    """Random O(1) values for all float tensors (EDM zero-initialises the output conv)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(net.parameters()) + list(net.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.3)
    return net


def _jsonable(value):
    """What JSON makes of a constructor argument (tuples become lists)."""
    return json.loads(json.dumps(value))


# DDPM++ (positional embedding, standard encoder, 1 level) under EDMPrecond, as the brief's tiny
# CIFAR-like network; NCSN++ (Fourier embedding: a buffer, residual encoder with fused
# resampling: resample_filter buffers, 2 levels) under VEPrecond. Tuples check the JSON round trip.
CASES = {
    'edm_ddpmpp': ('EDMPrecond', dict(
        img_resolution=8, img_channels=3, label_dim=2, use_fp16=False, sigma_data=0.5,
        model_type='SongUNet', model_channels=16, channel_mult=[1], num_blocks=1,
        attn_resolutions=(8, ), dropout=0.0, embedding_type='positional',
        channel_mult_noise=1, encoder_type='standard', decoder_type='standard',
        resample_filter=(1, 1))),
    've_ncsnpp': ('VEPrecond', dict(
        img_resolution=8, img_channels=3, label_dim=2, model_type='SongUNet',
        model_channels=8, channel_mult=(1, 1), num_blocks=1, attn_resolutions=[4],
        dropout=0.0, embedding_type='fourier', channel_mult_noise=2,
        encoder_type='residual', decoder_type='standard', resample_filter=[1, 3, 3, 1])),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_converted_edm_pickle_loads_strictly_and_reproduces_outputs(case, record_init,
                                                                   tmp_path):
    class_name, kwargs = CASES[case]
    marker = tmp_path / 'module_src_ran'
    torch.manual_seed(0)
    net = _scramble(precond.PRECONDITIONERS[class_name](**kwargs)).eval().requires_grad_(False)
    assert net._init_kwargs == kwargs and net.model._init_kwargs['label_dim'] == 2
    # our own record (defaults added) holds JSON types already: lists, not tuples
    assert {k: net.init_kwargs[k] for k in kwargs} == _jsonable(kwargs)
    source = f'open({str(marker)!r}, "w").close()  # must never run\n'
    snapshot = dict(ema=net, loss_fn=None, augment_pipe=None, dataset_kwargs=dict(resolution=8))
    pkl = tmp_path / 'network-snapshot-000000.pkl'
    pkl.write_bytes(_edm_pickle_bytes(snapshot, source))

    # The file is EDM-shaped: our modules are persistent records, ModuleDicts plain torch classes.
    record = read_edm_pickle(pkl)['ema']
    unet = record.state['_modules']['model']
    enc = unet.state['_modules']['enc']
    conv = enc.state['_modules']['8x8_conv']
    assert isinstance(record, PersistentRecord) and record.class_name == class_name
    assert isinstance(unet, PersistentRecord) and unet.class_name == 'SongUNet'
    assert isinstance(enc, TorchModuleRecord)
    assert enc.qualname == 'torch.nn.modules.container.ModuleDict'
    assert isinstance(conv, PersistentRecord) and conv.class_name == 'Conv2d'
    assert conv.init_args == [3, kwargs['model_channels']]  # Conv2d(in, out, kernel=3, **init)
    assert conv.init_kwargs == dict(kernel=3, init_mode='xavier_uniform')
    assert unet.state['_modules']['map_noise'].class_name == (
        'FourierEmbedding' if case == 've_ncsnpp' else 'PositionalEmbedding')

    out = tmp_path / 'converted'
    config, tensors = convert_edm_pickle(pkl, out)
    assert not marker.exists()  # the embedded module source never ran
    assert 'torch_utils' not in sys.modules

    # config.json: the recorded constructor kwargs of the preconditioner and of its network.
    on_disk = json.loads((out / 'config.json').read_text())
    assert on_disk == config
    assert on_disk['class_name'] == class_name
    assert on_disk['init_kwargs'] == _jsonable(kwargs)
    assert 'init_args' not in on_disk  # everything was passed by keyword
    model_kwargs = {k: v for k, v in kwargs.items()
                    if k not in ('img_channels', 'use_fp16', 'sigma_data', 'model_type')}
    model_kwargs.update(in_channels=3, out_channels=3)
    assert on_disk['model'] == {'class_name': 'SongUNet',
                                'init_kwargs': _jsonable(model_kwargs)}
    expected = net.state_dict()
    assert sorted(tensors) == sorted(expected)
    if case == 've_ncsnpp':  # buffers travel too
        assert 'model.map_noise.freqs' in tensors
        assert 'model.enc.4x4_aux_residual.resample_filter' in tensors

    loaded = load_edm(out)  # strict: every key and shape must match
    assert type(loaded) is type(net) and not loaded.training
    assert loaded.init_kwargs == net.init_kwargs
    got = loaded.state_dict()
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 8, 8, generator=gen)
    sigma = torch.tensor([0.05, 0.5, 2.0, 40.0])
    labels = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 0]), 2).float()
    with torch.no_grad():
        want = net(x, sigma, labels)
        have = loaded(x, sigma, labels)
        unconditional = net(x, sigma, None)
    assert torch.equal(have, want)
    assert not torch.allclose(want, unconditional)  # the labels (map_label) matter
    assert (want - x).abs().mean() > 1e-3  # the raw network contributes (scrambled weights)
