"""Read NVlabs/edm network pickles (``network-snapshot-*.pkl``, ``edm-*.pkl``) without running them.

EDM saves ``pickle.dump(dict(ema=..., loss_fn=..., augment_pipe=..., dataset_kwargs=...))`` whose
networks are "persistent classes": each object is pickled as a call of
``torch_utils.persistence._reconstruct_persistent_obj(meta)``, where ``meta`` holds the Python
source of the module that defined the class, the class name and the object's ``__dict__``
(``_init_args``/``_init_kwargs``, and for torch modules ``_parameters``, ``_buffers``,
``_modules``). A normal unpickle ``exec``\\ s that source, and a pickle can name any other
function as well.

The one rule: this module never lets a pickle call anything but an explicit allow-list
(:data:`ALLOWED_GLOBALS`) of inert stand-ins. ``_reconstruct_persistent_obj`` becomes
:class:`PersistentRecord` (the meta, kept as data; the source is never compiled), torch's
storages are read by ``torch.load(..., weights_only=True)``, ``torch.nn`` containers become
:class:`TorchModuleRecord` (their state, as data). Any other global stops reading with
:class:`EDMPickleError` before the pickle can call it. Nothing here imports EDM's code or the
toolkit's EDM networks.
"""
import collections
import hashlib
import io
import os
import os.path as osp
import pickle
import warnings

__all__ = [
    'ALLOWED_GLOBALS', 'EDMPickleError', 'PersistentRecord', 'TorchModuleRecord',
    'read_edm_pickle', 'select_network', 'network_config', 'flat_state_dict',
    'convert_edm_pickle'
]

PERSISTENT_RECONSTRUCT = ('torch_utils.persistence', '_reconstruct_persistent_obj')
CONVERTER = 'tools/convert/edm_to_safetensors.py'
NETWORK_KEYS = ('ema', 'net', 'model')  # where EDM-style snapshots keep networks


class EDMPickleError(ValueError):
    """The file is not an EDM network pickle this converter can read (message: one paragraph)."""


class PersistentRecord:
    """What EDM's ``_reconstruct_persistent_obj(meta)`` was asked to build, kept as plain data.

    ``class_name``, ``version``, ``type``, ``module_src`` (never executed), ``state`` (the
    object's ``__dict__``) and, from the state, ``init_args``/``init_kwargs``.
    """

    def __init__(self, meta):
        if not isinstance(meta, dict) or not isinstance(meta.get('class_name'), str) \
                or not isinstance(meta.get('state'), dict):
            keys = sorted(meta) if isinstance(meta, dict) else type(meta).__name__
            raise EDMPickleError(
                f'a torch_utils.persistence record holds {keys!r} instead of EDM\'s meta dict '
                f'(type, version, module_src, class_name, state with a dict state); the file '
                f'is damaged or not an EDM pickle.')
        self.meta = meta
        self.class_name = meta['class_name']
        self.version = meta.get('version')
        self.type = meta.get('type', 'class')
        self.module_src = meta.get('module_src') or ''
        self.state = meta['state']

    @property
    def init_args(self):
        return list(self.state.get('_init_args') or ())

    @property
    def init_kwargs(self):
        return dict(self.state.get('_init_kwargs') or {})

    @property
    def module_src_sha256(self):
        return hashlib.sha256(str(self.module_src).encode('utf-8')).hexdigest()

    def __repr__(self):
        return f'PersistentRecord({self.class_name!r}, version={self.version!r})'


class TorchModuleRecord:
    """A ``torch.nn`` container (``ModuleDict``, ``Sequential``, ...) kept as its pickled state."""

    qualname = 'torch.nn.Module'

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {}

    def __repr__(self):
        return f'TorchModuleRecord({self.qualname!r})'

    @property
    def class_name(self):
        return self.qualname.rsplit('.', 1)[-1]


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict with attribute access): a plain dict here."""


def _module_record_class(module, name):
    return type(name, (TorchModuleRecord, ), {'qualname': f'{module}.{name}'})


# torch.nn classes whose instances may appear inside EDM-style networks (containers, common
# layers). They are never imported or constructed: each name becomes an inert
# TorchModuleRecord subclass that only stores the pickled state (parameters stay tensors).
_TORCH_NN = {
    'torch.nn.modules.container': ('ModuleDict', 'ModuleList', 'Sequential', 'ParameterDict',
                                   'ParameterList'),
    'torch.nn.modules.linear': ('Identity', 'Linear'),
    'torch.nn.modules.conv': ('Conv2d', ),
    'torch.nn.modules.normalization': ('GroupNorm', 'LayerNorm'),
    'torch.nn.modules.sparse': ('Embedding', ),
    'torch.nn.modules.activation': ('SiLU', 'ReLU', 'GELU', 'Sigmoid', 'Tanh'),
    'torch.nn.modules.dropout': ('Dropout', ),
}


def _load_storage_from_bytes(data):
    """``torch.storage._load_from_bytes`` with ``weights_only=True`` (torch's own is not)."""
    import torch
    if not isinstance(data, (bytes, bytearray)):
        raise EDMPickleError(f'a tensor storage is stored as {type(data).__name__}, not bytes.')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # TypedStorage deprecation notices
        storage = torch.load(io.BytesIO(bytes(data)), map_location='cpu', weights_only=True)
    if not isinstance(storage, torch.storage.TypedStorage):
        raise EDMPickleError(f'a tensor storage holds a {type(storage).__name__}, not a typed '
                             f'storage; the file is damaged or not an EDM pickle.')
    return storage


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False,
                    backward_hooks=None, metadata=None):
    """``torch._utils._rebuild_tensor_v2`` reduced to what weights need (no hooks, no metadata)."""
    import torch
    if not isinstance(storage, torch.storage.TypedStorage):
        raise EDMPickleError(f'a tensor is rebuilt from a {type(storage).__name__}, not from a '
                             f'storage; the file is damaged or not an EDM pickle.')
    if backward_hooks:
        raise EDMPickleError('a tensor carries backward hooks; EDM pickles have none.')
    size, stride = tuple(size), tuple(stride)
    if not all(isinstance(v, int) for v in (storage_offset, *size, *stride)):
        raise EDMPickleError(f'a tensor has a non-integer size/stride/offset ({size}, {stride}, '
                             f'{storage_offset}).')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return torch._utils._rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """``torch._utils._rebuild_parameter[_with_state]``: the parameter's data is all we keep."""
    import torch
    if not isinstance(data, torch.Tensor):
        raise EDMPickleError(f'a parameter holds a {type(data).__name__}, not a tensor.')
    return data


ALLOWED_GLOBALS = {
    PERSISTENT_RECONSTRUCT: PersistentRecord,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
    ('torch.storage', '_load_from_bytes'): _load_storage_from_bytes,
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('builtins', 'set'): set,
    ('builtins', 'frozenset'): frozenset,
    ('dnnlib.util', 'EasyDict'): _EasyDict,
}
ALLOWED_GLOBALS.update({(module, name): _module_record_class(module, name)
                        for module, names in _TORCH_NN.items() for name in names})


def _refusal(path, module, name):
    return (f'{path} asks to load the Python global {module}.{name}, which an EDM network '
            f'pickle never needs: only tensors and storages, containers, torch.nn modules (as '
            f'inert records) and EDM\'s persistent-class records '
            f'(torch_utils.persistence._reconstruct_persistent_obj, read here as data) are '
            f'allowed. The file is not an EDM network pickle, or it was '
            f'made to run code when unpickled (do not open it with pickle.load or torch.load '
            f'weights_only=False). Nothing from it was run and nothing was written. If it is a '
            f'trusted torch checkpoint of another kind, convert it with '
            f'tools/convert/legacy_checkpoint.py instead.')


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path):
        super().__init__(file)
        self._path = path

    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise EDMPickleError(_refusal(self._path, module, name)) from None

    def persistent_load(self, pid):
        raise EDMPickleError(
            f'{self._path} uses pickle persistent ids ({str(pid)[:60]!r}), as torch.save files '
            f'do; an EDM network pickle is a plain pickle.dump. For a torch checkpoint use '
            f'tools/convert/legacy_checkpoint.py.')


def read_edm_pickle(path):
    """Read ``path`` with the restricted unpickler; returns the top-level object (EDM: a dict).

    Persistent objects come back as :class:`PersistentRecord`, ``torch.nn`` containers as
    :class:`TorchModuleRecord`, tensors as CPU tensors. Raises :class:`EDMPickleError` for a
    missing, truncated or foreign file, and for any global outside :data:`ALLOWED_GLOBALS`.
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise EDMPickleError(f'{path} does not exist or is not a file (relative paths are '
                             f'resolved from {os.getcwd()}). Pass the .pkl file EDM wrote, e.g. '
                             f'edm-cifar10-32x32-cond-vp.pkl or network-snapshot-*.pkl.')
    with open(path, 'rb') as f:
        head = f.read(4)
        f.seek(0)
        if head.startswith(b'PK'):
            raise EDMPickleError(
                f'{path} is a zip archive (a torch.save checkpoint), not an EDM network pickle. '
                f'Load it with common.io.load_checkpoint, or convert it with '
                f'tools/convert/legacy_checkpoint.py.')
        try:
            return _RestrictedUnpickler(f, path).load()
        except EDMPickleError:
            raise
        except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError,
                AttributeError, RuntimeError, UnicodeDecodeError, MemoryError) as err:
            raise EDMPickleError(
                f'{path} could not be read as a pickle ({type(err).__name__}: '
                f'{str(err)[:200]}); it is truncated (an interrupted download or copy: fetch it '
                f'again and compare its size or hash with the release) or not an EDM pickle.'
            ) from None


def _is_module(record):
    return isinstance(record, (PersistentRecord, TorchModuleRecord)) and \
        isinstance(record.state.get('_modules'), dict) and \
        isinstance(record.state.get('_parameters'), dict)


def select_network(data, key='ema', path='the pickle'):
    """The network record stored under ``key`` of EDM's top-level dict."""
    if not isinstance(data, dict):
        raise EDMPickleError(f'{path} holds a {type(data).__name__}, not the dict EDM pickles '
                             f'(keys ema, loss_fn, augment_pipe, dataset_kwargs).')
    networks = [k for k, v in data.items() if _is_module(v)]
    if key not in data:
        raise EDMPickleError(
            f'{path} has no entry {key!r}; its keys are {sorted(map(str, data))} and the '
            f'networks among them {networks}. Choose one with --key (EDM\'s released and '
            f'snapshot pickles keep the EMA network under \'ema\').')
    record = data[key]
    if not _is_module(record):
        raise EDMPickleError(
            f'{path}: entry {key!r} is {record!r}, not a torch network (no _parameters/_modules '
            f'in its state); the networks in the file are {networks}. Choose one with --key.')
    return record


def network_config(record):
    """``{'class_name', 'init_kwargs'[, 'init_args'][, 'model']}`` of a network record.

    ``model`` is the same for the record's ``model`` submodule (EDM's preconditioners wrap the
    UNet there: EDMPrecond -> SongUNet/DhariwalUNet). Values are made JSON-compatible (tuples
    become lists).
    """
    cfg = {'class_name': record.class_name,
           'init_kwargs': _jsonable(getattr(record, 'init_kwargs', {}), 'init_kwargs')}
    args = getattr(record, 'init_args', [])
    if args:
        cfg['init_args'] = _jsonable(args, 'init_args')
    inner = record.state.get('_modules', {}).get('model')
    if isinstance(inner, PersistentRecord):
        cfg['model'] = network_config(inner)
    return cfg


def _jsonable(value, where):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f'{where}.{k}') for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f'{where}[{i}]') for i, v in enumerate(value)]
    raise EDMPickleError(
        f'the network\'s constructor argument {where} is a {type(value).__name__}, which '
        f'config.json cannot hold (EDM networks take numbers, strings, lists and dicts).')


def flat_state_dict(record, prefix=''):
    """The ``state_dict()`` the network would have: dotted keys, persistent buffers included.

    Walks ``_parameters``, ``_buffers`` (minus ``_non_persistent_buffers_set``) and
    ``_modules`` recursively; ``None`` entries are skipped as torch does.
    """
    import torch
    out = collections.OrderedDict()
    state = record.state
    skip = set(state.get('_non_persistent_buffers_set') or ())
    for group in ('_parameters', '_buffers'):
        for name, value in (state.get(group) or {}).items():
            if value is None or (group == '_buffers' and name in skip):
                continue
            if not isinstance(value, torch.Tensor):
                raise EDMPickleError(f'{prefix}{name} in {group} is a {type(value).__name__}, '
                                     f'not a tensor; the file is damaged or not an EDM pickle.')
            out[f'{prefix}{name}'] = value
    for name, child in (state.get('_modules') or {}).items():
        if child is None:
            continue
        if not _is_module(child):
            raise EDMPickleError(f'submodule {prefix}{name} is {child!r}, not a torch module '
                                 f'record; the file is damaged or not an EDM pickle.')
        out.update(flat_state_dict(child, f'{prefix}{name}.'))
    return out


def convert_edm_pickle(path, out_dir, key='ema', overwrite=False):
    """Write ``out_dir/config.json`` and ``out_dir/model.safetensors`` from an EDM pickle.

    Nothing from the file is executed (see the module docstring). The folder is written
    atomically (``common.io.atomic_folder``): on any error nothing appears at ``out_dir``.
    Returns ``(config, state_dict)``.
    """
    from safetensors.torch import load_file, save_file

    from common.io.atomic import atomic_write_text
    from common.io.atomic_folder import atomic_folder, check_destination

    from ..networks.loading import dumps_json
    check_destination(out_dir, overwrite)  # before reading a large file
    path = os.fspath(path)
    record = select_network(read_edm_pickle(path), key, path)
    state = flat_state_dict(record)
    if not state:
        raise EDMPickleError(f'{path}: network {key!r} ({record.class_name}) holds no tensors.')
    tensors = {k: v.detach().clone().contiguous() for k, v in state.items()}  # own storage each
    config = network_config(record)
    config['source'] = f'converted from {osp.basename(path)} by {CONVERTER}'
    config['pickle_key'] = key
    if isinstance(record, PersistentRecord):
        config['edm_module_src_sha256'] = record.module_src_sha256
    with atomic_folder(out_dir, overwrite=overwrite) as tmp:
        weights = osp.join(tmp, 'model.safetensors')
        save_file(tensors, weights, metadata={'format': 'pt', 'source': config['source']})
        loaded = load_file(weights)
        bad = [k for k in tensors if k not in loaded or not loaded[k].equal(tensors[k])]
        if bad or len(loaded) != len(tensors):
            raise EDMPickleError(f'the written model.safetensors does not read back equal '
                                 f'({bad[:5]}); nothing was written to {out_dir}.')
        atomic_write_text(osp.join(tmp, 'config.json'),
                          dumps_json(config, sort_keys=False) + '\n', fsync=False)
    return config, tensors
