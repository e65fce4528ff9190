"""Save and load EDM networks as a folder: ``config.json`` + ``model.safetensors``, never a pickle.

The one rule: the class to build is looked up by name in the closed table ``LOADABLE``
(EDMPrecond, VPPrecond, VEPrecond, SongUNet, DhariwalUNet); nothing in the folder can name a module
path or run code. ``config.json`` is ``{"class_name": "EDMPrecond", "init_kwargs": {...}}`` with the
constructor keywords of NVlabs/edm's network (``img_resolution``, ``img_channels``, ``label_dim``,
``model_type``, the network's own options, ...), as the EDM pickle converter writes it (an optional
``init_args`` list is passed positionally; other entries such as ``source`` are ignored); the
weights are loaded with ``strict=True`` (every key and shape must match), and the network is
returned in eval mode.

``config.json`` is standard JSON (``allow_nan=False``): a non-finite float such as EDMPrecond's
default ``sigma_max=inf`` is written as ``{"__float__": "inf"}`` (``"-inf"``, ``"nan"``) and
decoded back by :func:`read_config`; older files holding the non-standard tokens ``Infinity`` /
``NaN`` are still read. :func:`dumps_json` / :func:`loads_json` are that encoding for any other
JSON file of the package.
"""
import json
import math
import os
import os.path as osp

from mmengine.registry import MODELS

from common.io.atomic_folder import atomic_folder
from .precond import NETWORKS, PRECONDITIONERS

CONFIG_NAME = 'config.json'
WEIGHTS_NAME = 'model.safetensors'
LOADABLE = {**PRECONDITIONERS, **NETWORKS}
SHOWN_KEYS = 5
FLOAT_TAG = '__float__'
_NONFINITE = {'inf': float('inf'), '-inf': float('-inf'), 'nan': float('nan')}


class EDMLoadError(RuntimeError):
    """An EDM folder that cannot be turned into a network (bad config, mismatching weights)."""


def _few(keys):
    keys = sorted(keys)
    shown = ', '.join(keys[:SHOWN_KEYS])
    return shown + (f' (and {len(keys) - SHOWN_KEYS} more)' if len(keys) > SHOWN_KEYS else '')


def encode_nonfinite(value):
    """``value`` with every non-finite float replaced by ``{"__float__": "inf" | "-inf" | "nan"}``
    (dicts, lists and tuples are walked; tuples become lists), so strict JSON can hold it."""
    if isinstance(value, float) and not math.isfinite(value):
        return {FLOAT_TAG: 'nan' if math.isnan(value) else ('inf' if value > 0 else '-inf')}
    if isinstance(value, dict):
        return {key: encode_nonfinite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_nonfinite(item) for item in value]
    return value


def _decode_object(obj):
    """``json`` object hook: ``{"__float__": "inf"}`` (that one key alone) -> ``float("inf")``."""
    if len(obj) == 1 and FLOAT_TAG in obj:
        tag = obj[FLOAT_TAG]
        if tag not in _NONFINITE:
            raise ValueError(
                f'{{"{FLOAT_TAG}": {tag!r}}} is not an encoded float: expected "inf", "-inf" or '
                f'"nan"')
        return _NONFINITE[tag]
    return obj


def dumps_json(value, indent=2, sort_keys=True):
    """Standard JSON text of ``value`` (non-finite floats encoded, ``allow_nan=False``)."""
    return json.dumps(encode_nonfinite(value), indent=indent, sort_keys=sort_keys,
                      allow_nan=False)


def loads_json(text):
    """The value of JSON ``text`` written by :func:`dumps_json` (encoded floats decoded); the
    non-standard tokens ``Infinity``, ``-Infinity`` and ``NaN`` of older files are accepted."""
    return json.loads(text, object_hook=_decode_object)


def read_config(folder):
    """``(class_name, init_args, init_kwargs)`` of ``folder/config.json``, class checked."""
    path = osp.join(folder, CONFIG_NAME)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{path} does not exist: an EDM network folder needs {CONFIG_NAME} (the class name '
            f'and constructor arguments) next to {WEIGHTS_NAME}. Point load_edm at a folder '
            'written by save_edm or by the EDM checkpoint converter.')
    try:
        with open(path, encoding='utf-8') as f:
            cfg = loads_json(f.read())
    except (OSError, ValueError) as err:
        raise EDMLoadError(
            f'{path} could not be read as JSON ({err}). Expected '
            '{"class_name": "EDMPrecond", "init_kwargs": {...}}; rewrite the file with save_edm '
            'or the converter.') from err
    if (not isinstance(cfg, dict) or not isinstance(cfg.get('class_name'), str)
            or not isinstance(cfg.get('init_kwargs'), dict)
            or not isinstance(cfg.get('init_args', []), list)):
        raise EDMLoadError(
            f'{path} does not describe a network: expected a JSON object with a string '
            '"class_name", an object "init_kwargs" and optionally a list "init_args", got '
            f'{type(cfg).__name__} with keys {sorted(cfg) if isinstance(cfg, dict) else "none"}. '
            'Rewrite the file with save_edm or the converter.')
    name = cfg['class_name']
    if name not in LOADABLE:
        raise EDMLoadError(
            f'{path} names class_name={name!r}, which is not a known EDM network: expected one '
            f'of {", ".join(sorted(LOADABLE))}. Fix "class_name" (classes are taken only from '
            'this list, never from a module path in the file).')
    return name, cfg.get('init_args', []), cfg['init_kwargs']


def build_from_config(name, init_args, init_kwargs, source='the configuration'):
    """``LOADABLE[name](*init_args, **init_kwargs)`` with constructor errors in one paragraph."""
    try:
        return LOADABLE[name](*init_args, **init_kwargs)
    except (TypeError, ValueError) as err:
        raise EDMLoadError(
            f'{source} could not build {name}: {err} Fix "init_kwargs" (they are the keyword '
            f'arguments of {name} and of its model_type network).') from err


def _read_weights(path, map_location):
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{path} does not exist: an EDM network folder needs its weights in {WEIGHTS_NAME} '
            f'next to {CONFIG_NAME}. Point load_edm at a complete folder, or convert the EDM '
            'release again.')
    from safetensors.torch import load_file
    try:
        return load_file(path, device=str(map_location))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise EDMLoadError(
            f'{path} could not be read as a safetensors file ({type(err).__name__}: {err}). '
            'The file is damaged or not a safetensors file; write it again with save_edm or the '
            'converter.') from err


def check_weights(net, state_dict, source):
    """Raise a one-paragraph EDMLoadError unless keys and shapes of ``state_dict`` fit ``net``."""
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    missing = set(expected) - set(state_dict)
    unexpected = set(state_dict) - set(expected)
    reshaped = {k for k in set(expected) & set(state_dict)
                if tuple(state_dict[k].shape) != expected[k]}
    if not (missing or unexpected or reshaped):
        return
    parts = []
    if missing:
        parts.append(f'{len(missing)} weights the network needs are missing ({_few(missing)})')
    if unexpected:
        parts.append(f'{len(unexpected)} weights are not in the network ({_few(unexpected)})')
    if reshaped:
        shown = sorted(reshaped)[:SHOWN_KEYS]
        parts.append(f'{len(reshaped)} weights have another shape ('
                     + ', '.join(f'{k}: file {tuple(state_dict[k].shape)} vs network '
                                 f'{expected[k]}' for k in shown) + ')')
    raise EDMLoadError(
        f'The weights in {source} do not fit the network of its {CONFIG_NAME}: '
        + '; '.join(parts) + '. The configuration (channels, channel_mult, num_blocks, '
        'attn_resolutions, encoder/decoder types, label_dim) must be the one the weights were '
        'trained with; fix init_kwargs or convert the checkpoint again.')


@MODELS.register_module()
def load_edm(folder, map_location='cpu'):
    """Build the network described by ``folder/config.json`` and load ``folder/model.safetensors``.

    Returns the network (a preconditioner such as EDMPrecond, or a bare SongUNet/DhariwalUNet) in
    eval mode, on ``map_location``. Raises FileNotFoundError for a missing folder or file and
    EDMLoadError for a bad config, an unknown class or weights that do not fit (strict loading).
    """
    folder = osp.expanduser(os.fspath(folder))
    if not osp.isdir(folder):
        raise FileNotFoundError(
            f'EDM network folder {folder} does not exist (or is not a folder): expected a folder '
            f'holding {CONFIG_NAME} and {WEIGHTS_NAME}. Check the path, or create the folder with '
            'save_edm or the EDM checkpoint converter.')
    name, init_args, init_kwargs = read_config(folder)
    net = build_from_config(name, init_args, init_kwargs, source=osp.join(folder, CONFIG_NAME))
    weights_path = osp.join(folder, WEIGHTS_NAME)
    state_dict = _read_weights(weights_path, map_location)
    check_weights(net, state_dict, weights_path)
    net.load_state_dict(state_dict, strict=True)
    return net.to(map_location).eval()


def save_edm(net, folder, overwrite=True, metadata=None):
    """Write ``net`` (a preconditioner) as ``folder/config.json`` + ``folder/model.safetensors``.

    The folder is written atomically (all or nothing). ``metadata``: optional str->str pairs stored
    in the safetensors header (e.g. the source file and its hash). Returns the folder's path.
    """
    name = type(net).__name__
    if name not in PRECONDITIONERS or not isinstance(getattr(net, 'init_kwargs', None), dict):
        raise TypeError(
            f'save_edm got a {name}: expected one of {", ".join(sorted(PRECONDITIONERS))} '
            '(they record the init_kwargs needed to rebuild them). Wrap a bare network in a '
            'preconditioner (e.g. EDMPrecond(..., model_type="SongUNet")) before saving.')
    from safetensors.torch import save_file
    tensors = {k: v.detach().to('cpu').contiguous() for k, v in net.state_dict().items()}
    config = {'class_name': name, 'init_kwargs': net.init_kwargs}
    with atomic_folder(folder, overwrite=overwrite) as tmp:
        with open(osp.join(tmp, CONFIG_NAME), 'w', encoding='utf-8') as f:
            f.write(dumps_json(config) + '\n')
        save_file(tensors, osp.join(tmp, WEIGHTS_NAME),
                  metadata={str(k): str(v) for k, v in (metadata or {}).items()})
    return osp.abspath(osp.expanduser(os.fspath(folder)))



__all__ = ['CONFIG_NAME', 'WEIGHTS_NAME', 'LOADABLE', 'EDMLoadError', 'load_edm', 'save_edm',
           'read_config', 'build_from_config', 'check_weights', 'encode_nonfinite', 'dumps_json',
           'loads_json']
